"""CLI commands ``ceusflow preprocess`` and ``ceusflow tic`` (wired by ``register(app)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ceusflow.errors import InputError


def _fail(err: InputError) -> None:
    typer.echo(f"ceusflow: {err}", err=True)
    raise typer.Exit(code=2)


def parse_phases(text: str) -> dict[str, tuple[float, float]]:
    """``"AP=0:45,PP=45:120,VP=120:180"`` -> {"AP": (0, 45), ...} (seconds after injection)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        try:
            name, span = item.split("=")
            start, end = (float(v) for v in span.split(":"))
        except ValueError as err:
            raise InputError("--phases", f"cannot read {item!r}", "write NAME=START:END,... in seconds") from err
        out[name.strip()] = (start, end)
    return out


def register(app: typer.Typer) -> None:
    """Add ``preprocess`` and ``tic`` to ``app``."""

    @app.command()
    def preprocess(
        store: Annotated[Path, typer.Argument(help="Cohort store written by `ceusflow convert`.")],
        out: Annotated[Path, typer.Option(help="ROI store to write, e.g. stores/NAME-roi.zarr.")],
        rois: Annotated[Path | None, typer.Option(help="rois.csv (default: the store's rois table).")] = None,
        masks: Annotated[Path | None, typer.Option(help="Folder of ITK-SNAP masks <patient>.nii.gz.")] = None,
        fps: Annotated[float, typer.Option(help="Resampled frame rate (frames/s).")] = 2.0,
        margin_mm: Annotated[float, typer.Option("--margin-mm", help="ROI margin around the box (mm).")] = 10.0,
        size: Annotated[int, typer.Option(help="ROI side after resizing (pixels).")] = 64,
        phases: Annotated[str, typer.Option(help="Phase windows, s after injection.")] = "AP=0:45,PP=45:120,VP=120:180",
        no_track: Annotated[bool, typer.Option("--no-track", help="Keep the manual boxes (no tracking).")] = False,
        workers: Annotated[int, typer.Option(min=0, help="0 = in-process; N = N local processes.")] = 0,
        scheduler: Annotated[str | None, typer.Option(help="dask.distributed scheduler address.")] = None,
    ) -> None:
        """Crop, track, resample and split the cines into the ROI store the Cox-CNN trains on."""
        from ceusflow.errors import StoreError
        from ceusflow.preprocess.cohort import preprocess_cohort

        if rois is not None and masks is not None:
            _fail(InputError("--rois/--masks", "both given", "give one of them"))
        try:
            preprocess_cohort(store, out=out, rois=rois, masks=masks, fps=fps, margin_mm=margin_mm, size=size,
                              phases=parse_phases(phases), track=not no_track, workers=workers,
                              scheduler=scheduler, progress=True)
        except InputError as err:
            _fail(err)
        except StoreError as err:
            _fail(InputError(str(store), str(err)))

    @app.command()
    def tic(
        store: Annotated[Path, typer.Argument(help="ROI store written by `ceusflow preprocess`.")],
        patient: Annotated[str, typer.Argument(help="Patient pseudonym (or PatientID when the mapping is beside).")],
        out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("tic.png"),
    ) -> None:
        """Plot one patient's time-intensity curves and perfusion parameters (QA)."""
        from ceusflow.preprocess.cohort import open_rois
        from ceusflow.preprocess.tic import plot_tic

        try:
            ds = open_rois(store)
            key = _key(store, ds, patient)
            phases = {k: tuple(v) for k, v in ds.attrs.get("phases_s", {}).items()}
            fig = plot_tic(ds["tic"].sel(patient=key).load(), phases=phases, title=f"{key}")
        except (InputError, KeyError, FileNotFoundError) as err:
            _fail(err if isinstance(err, InputError) else InputError(str(store), f"cannot read it ({err})",
                                                                      "give an ROI store and a patient in it"))
        fig.savefig(out, dpi=120)
        typer.echo(f"wrote {out}")


def _key(store: Path, ds: object, patient: str) -> str:
    import pandas as pd

    keys = [str(k) for k in ds["patient"].values]  # type: ignore[index]
    if patient in keys:
        return patient
    for mapping in store.parent.glob("*.pseudonyms.csv"):
        table = pd.read_csv(mapping, dtype=str)
        hit = table.loc[table["patient_id"] == patient, "pseudonym"]
        if len(hit) and hit.iloc[0] in keys:
            return str(hit.iloc[0])
    raise InputError(patient, "not in this ROI store", "give a pseudonym listed in its patient coordinate")
