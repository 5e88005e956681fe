"""Preprocess a whole cohort store into the ROI store the Cox-CNN reads (one patient per chunk).

Plan every patient on the driver from metadata (bad input -> one line, the patient is left out),
write the output's metadata and the clinical table once, then let workers compute one patient
each (synchronously inside the worker, so the result does not depend on where it runs) and write
it into its own chunks with ``to_zarr(region=...)``. Memory per worker is one patient's graph;
the driver holds only the plans, so peak memory does not grow with the cohort.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ceusflow.conventions import DURATION, EVENT, FRAME_OK, INTENSITY, PATIENT, PHASE, PHASE_WINDOWS_S, TIME
from ceusflow.errors import InputError
from ceusflow.parallel import map_patients
from ceusflow.preprocess.patient import PatientPlan, patient_rois, plan_patient
from ceusflow.preprocess.phases import check_phases, phase_grid
from ceusflow.preprocess.resample import grid_times
from ceusflow.preprocess.roi import CORNERS, mask_rois
from ceusflow.preprocess.tic import PARAMETERS, PARTS, tic_parameters
from ceusflow.store import DEFAULT_CODEC, compressor, open_store

LAYOUT = "ceusflow-roi/2"
#: ROI intensities are stored as 8-bit grey levels (the source's resolution): ``round(x * 255)``,
#: decoded to float32 ``grey / 255`` by :func:`open_rois` (CF ``scale_factor``). Resampling makes
#: fractional greys; rounding them costs at most 0.5 grey (0.2 % of the range, far below speckle)
#: and makes the store, and every training read, 4x smaller than float32.
INTENSITY_SCALE = np.float32(1 / 255)
#: Encoding key naming the ROI store an ``intensity`` variable was opened from (``open_rois``).
STORE_SOURCE = "ceusflow_roi_store"
#: Blosc-lz4 (the cohort store's default codec): a training read of one paper-scale patient (1.8 MB of
#: levels) decodes in 0.25 ms against 1.5 ms with zarr's default zstd, for 18 % more bytes (ratio 1.92
#: vs 2.26 on the simulated 419-patient cohort; ``docs/model.md``, session 7).
ENCODING = {INTENSITY: {"dtype": "uint8", "scale_factor": INTENSITY_SCALE, "_FillValue": None,
                        "compressors": (compressor(DEFAULT_CODEC),)}}
Problem = tuple[str, str]


@dataclass(frozen=True)
class Options:
    """Preprocessing options shared by every patient (picklable)."""

    fps: float = 2.0
    margin_mm: float = 10.0
    size: int = 64
    phases: tuple[tuple[str, float, float], ...] = tuple((k, *v) for k, v in PHASE_WINDOWS_S.items())
    track: bool = True

    @property
    def windows(self) -> dict[str, tuple[float, float]]:
        """Phase windows as a mapping."""
        return {name: (start, end) for name, start, end in self.phases}


@dataclass
class PreprocessReport:
    """What ``preprocess_cohort`` did: the store, the patients written, one line per problem."""

    out: Path
    written: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """``"<patient>: <reason>"`` per problem."""
        return [f"{source}: {reason}" for source, reason in self.problems]


def preprocess_cohort(store: str | os.PathLike[str], *, out: str | os.PathLike[str],
                      rois: str | os.PathLike[str] | pd.DataFrame | None = None,
                      masks: str | os.PathLike[str] | None = None, fps: float = 2.0, margin_mm: float = 10.0,
                      size: int = 64, phases: Mapping[str, tuple[float, float]] = PHASE_WINDOWS_S,
                      track: bool = True, workers: int = 0, scheduler: Any = None,
                      progress: bool = True) -> PreprocessReport:
    """Turn a cohort store into the ROI store (see the module docstring and docs/preprocess.md).

    Parameters
    ----------
    store : path-like
        Cohort store written by ``ceusflow convert``.
    out : path-like
        ROI store to write (replaced), e.g. ``stores/NAME-roi.zarr``.
    rois : path-like or DataFrame, optional
        rois.csv (patient_id as in the export, or pseudonyms); default: the store's ``rois`` table.
    masks : path-like, optional
        Folder of ITK-SNAP masks ``<patient_id or pseudonym>.nii.gz`` instead of boxes.
    fps : float
        Resampled frame rate (frames/s; Liu et al. 2020: 2).
    margin_mm : float
        ROI margin around the tumour box (mm; Liu et al. 2020: 10).
    size : int
        ROI side after resizing (pixels).
    phases : mapping name -> (start_s, end_s)
    track : bool
        Follow the ROI by phase correlation (False: manual boxes only).
    workers : int
        0: in-process; N: N local processes.
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address (or Client) to run the patients on.
    progress : bool
        Print the problem lines and a summary on stderr.

    Returns
    -------
    PreprocessReport
    """
    start, store, out = time.perf_counter(), Path(store), Path(out)
    opts = Options(float(fps), float(margin_mm), int(size), tuple((k, *v) for k, v in check_phases(phases).items()),
                   bool(track))
    tree = open_store(store)
    report = PreprocessReport(out)
    plans = _plans(store, tree, rois, masks, opts, report)
    if not plans:
        raise InputError(str(store), "no patient could be preprocessed", "see the lines above")
    outcomes = _outcomes(tree, [p.key for p in plans])
    with _no_fill_warning():
        _template(plans, outcomes, opts, out).to_zarr(out, mode="w", compute=False, zarr_format=3,
                                                      consolidated=False, encoding=ENCODING)
    tasks = [Task(str(store), str(out), i, plan, opts) for i, plan in enumerate(plans)]
    for key, problems in map_patients(run_patient, tasks, workers=workers, scheduler=scheduler,
                                   name=lambda t: f"preprocess-{t.plan.key}"):
        (report.failed if problems else report.written).append(key)
        report.problems += problems
    _finalize(out, report, opts)
    report.seconds = time.perf_counter() - start
    _print(report, progress)
    return report


def _plans(store: Path, tree: xr.DataTree, rois: Any, masks: Any, opts: Options, report: PreprocessReport
           ) -> list[PatientPlan]:
    keys = sorted(tree["patients"].children)
    clinical = set(map(str, tree["clinical"][PATIENT].values)) if "clinical" in tree else set()
    table = None if masks is not None else _roi_table(store, tree, rois)
    plans = []
    for key in keys:
        try:
            if key not in clinical:
                raise InputError(key, "no clinical row (no outcome)", "add it to clinical.csv and convert again")
            cine = tree["patients"][key].to_dataset()[INTENSITY]
            rows = _mask_rows(store, Path(masks), key, cine) if masks is not None else table.get(key)
            plans.append(plan_patient(cine, rows, key=key, fps=opts.fps, margin_mm=opts.margin_mm,
                                      phases=opts.windows))
        except InputError as err:
            report.problems.append((key, f"{err.reason}; {err.hint}" if err.hint else err.reason))
            report.failed.append(key)
    return plans


def _roi_table(store: Path, tree: xr.DataTree, rois: Any) -> dict[str, pd.DataFrame]:
    if rois is None:
        if "rois" not in tree:
            raise InputError(str(store), "has no rois table", "give --rois rois.csv or --masks DIR")
        table = tree["rois"].to_dataset().compute().to_dataframe().reset_index(drop=True)
    elif isinstance(rois, pd.DataFrame):
        table = rois.copy()
    else:
        table = _read_roi_csv(store, Path(rois))
    table[PATIENT] = table[PATIENT].astype(str)
    return {str(k): g.drop(columns=[PATIENT]) for k, g in table.groupby(PATIENT)}


def _read_roi_csv(store: Path, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(str(path), "no such file", "give the rois.csv of the export")
    table = pd.read_csv(path, dtype={"patient_id": str})
    missing = [c for c in ("patient_id", *CORNERS, "t_s") if c not in table]
    if missing:
        raise InputError(str(path), f"has no column(s) {missing}", "columns: patient_id, t_s, x0, y0, x1, y1")
    keys = _key_of(store)
    table[PATIENT] = [keys.get(str(p).strip(), str(p).strip()) for p in table.pop("patient_id")]
    return table


def _key_of(store: Path) -> dict[str, str]:
    """PatientID -> pseudonym, from the mapping file beside the store (empty when absent)."""
    mapping = store.parent / f"{store.name}.pseudonyms.csv"
    if not mapping.is_file():
        return {}
    table = pd.read_csv(mapping, dtype=str)
    return dict(zip(table["patient_id"], table["pseudonym"], strict=True))


def _mask_rows(store: Path, folder: Path, key: str, cine: xr.DataArray) -> pd.DataFrame | None:
    ids = {v: k for k, v in _key_of(store).items()}
    for name in (key, ids.get(key)):
        if name and (folder / f"{name}.nii.gz").is_file():
            return mask_rois(folder / f"{name}.nii.gz", cine[TIME].values, patient=key)
    return None


def _outcomes(tree: xr.DataTree, keys: list[str]) -> xr.Dataset:
    clinical = tree["clinical"].to_dataset().compute().sel({PATIENT: keys})
    out = clinical.assign({DURATION: clinical["pfs_months"].assign_attrs(units="month"),
                           EVENT: clinical["progression"].fillna(0).astype(bool)})
    out = out.drop_vars(["pfs_months", "progression"])
    for name in out.data_vars:
        if out[name].dtype.kind in "OUT":
            out[name] = (PATIENT, np.array([str(v) for v in out[name].values], dtype=object))
    return out.assign_coords({PATIENT: np.asarray(keys, dtype=object)})


def _template(plans: list[PatientPlan], outcomes: xr.Dataset, opts: Options, out: Path) -> xr.Dataset:
    """The output's layout: per-patient variables as lazy zeros chunked one patient per chunk."""
    n, p, s = len(plans), len(opts.phases), opts.size
    t, e = phase_grid(opts.windows, opts.fps).size, grid_times(plans[0].end_s, opts.fps).size

    def lazy(shape: tuple[int, ...], dtype: Any) -> da.Array:
        return da.zeros((n, *shape), dtype=dtype, chunks=(1, *shape))

    dims5 = (PATIENT, PHASE, TIME)
    data = {INTENSITY: (dims5 + ("y", "x"), lazy((p, t, s, s), np.float32)),
            FRAME_OK: (dims5, lazy((p, t), bool)), "roi_box": (dims5 + ("box",), lazy((p, t, 4), np.float32)),
            "displacement": (dims5 + ("axis",), lazy((p, t, 2), np.float32)),
            "track_score": (dims5, lazy((p, t), np.float32)), "tracked": (dims5, lazy((p, t), bool)),
            "t_exam": (dims5, lazy((p, t), np.float64)), "t_source": (dims5, lazy((p, t), np.float64)),
            "tic": ((PATIENT, "part", "exam_time"), lazy((len(PARTS), e), np.float32)),
            "tic_ok": ((PATIENT, "exam_time"), lazy((e,), bool)),
            **{f"tic_{k}": ((PATIENT, "part"), lazy((len(PARTS),), np.float64)) for k in PARAMETERS}}
    text = lambda v: np.array(list(v), dtype=object)  # noqa: E731 - zarr v3's stable string type
    coords = {PATIENT: outcomes[PATIENT].values, PHASE: text(opts.windows), TIME: phase_grid(opts.windows, opts.fps),
              "y": np.arange(s), "x": np.arange(s), "box": text(CORNERS), "axis": text("yx"), "part": text(PARTS),
              "exam_time": grid_times(plans[0].end_s, opts.fps)}
    ds = xr.Dataset(data, coords=coords).set_coords(["t_exam", "t_source"])
    spacing = np.array([p.spacing_mm for p in plans], dtype=np.float64)
    return ds.merge(outcomes).assign(spacing_mm=((PATIENT, "axis"), spacing, {"units": "mm"}))


@dataclass(frozen=True)
class Task:
    """One patient to compute and write (picklable)."""

    store: str
    out: str
    index: int
    plan: PatientPlan
    opts: Options


def run_patient(task: Task) -> tuple[str, list[Problem]]:
    """Compute one patient synchronously and write it into its region of the ROI store."""
    key = task.plan.key
    try:
        cine = xr.open_zarr(task.store, group=f"patients/{key}", zarr_format=3, consolidated=False,
                            chunks=None)[INTENSITY]  # one orthogonal zarr read per task, not one per frame
        with dask.config.set(scheduler="synchronous"):
            ds = patient_rois(cine, task.plan, size=task.opts.size, phases=task.opts.windows,
                              track=task.opts.track).compute()
    except (InputError, OSError, ValueError) as err:
        return key, [(key, f"could not be preprocessed: {err}")]
    params = tic_parameters(ds["tic"].rename({"exam_time": TIME}))
    ds = ds.assign({f"tic_{k}": params[k] for k in PARAMETERS})
    ds = ds.reset_coords(["t_exam", "t_source"])
    ds = ds.drop_vars(list(ds.coords)).expand_dims(PATIENT)
    with _no_fill_warning():
        ds.to_zarr(task.out, region={PATIENT: slice(task.index, task.index + 1)}, mode="r+", zarr_format=3,
                   consolidated=False)
    return key, []


@contextlib.contextmanager
def _no_fill_warning() -> Iterator[None]:
    """Intensities hold no NaN (padding is 0), so their 8-bit encoding needs no fill value."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*floating point data as an integer dtype")
        yield


def _finalize(out: Path, report: PreprocessReport, opts: Options) -> None:
    root = zarr.open_group(out, mode="a", zarr_format=3)
    root.attrs.update({"layout": LAYOUT, "fps": opts.fps, "margin_mm": opts.margin_mm, "size": opts.size,
                       "phases_s": {k: list(v) for k, v in opts.windows.items()}, "tracking": opts.track,
                       "normalisation": "grey / 255 (8-bit log-compressed display values)",
                       "failed": sorted(set(report.failed)),
                       "problems": [{"source": s, "reason": r} for s, r in report.problems]})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(out))


def _print(report: PreprocessReport, progress: bool) -> None:
    if not progress:
        return
    import sys

    for line in report.lines():
        print(line, file=sys.stderr)
    print(f"{len(report.written)} patients preprocessed, {len(set(report.failed))} left out, "
          f"{report.seconds:.1f} s -> {report.out}", file=sys.stderr)


def open_rois(path: str | os.PathLike[str], **kwargs: Any) -> xr.Dataset:
    """Open an ROI store lazily (dask, one patient per chunk), intensities as float32 in [0, 1].

    The 8-bit stored intensities are decoded to float32 ``grey / 255`` (a plain ``xr.open_zarr``
    decodes them to float64, the CF default for a scale factor read back from JSON). Stores of
    layout 1 (float32 on disk) open unchanged. ``kwargs`` go to :func:`xarray.open_zarr`.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # consolidated-metadata chatter
        ds = xr.open_zarr(path, **{"consolidated": None, "mask_and_scale": {INTENSITY: False}, **kwargs})
    ds = decode_intensity(ds)
    # Marks the variable as the store's own: indexing keeps a variable's encoding, arithmetic and
    # replacement drop it, so the training reader may then read its chunks with zarr directly.
    ds[INTENSITY].encoding[STORE_SOURCE] = os.fspath(path)
    return ds


def grey_levels(scale_factor: float) -> int | None:
    """``n`` when the scale factor is ``1 / n`` (255 for 8-bit grey), else None.

    Decoding then divides by ``n``, so grey ``g`` gives ``g / 255`` bit for bit as
    :func:`ceusflow.preprocess.crop.normalise` computes it.
    """
    levels = 1 / scale_factor
    return round(levels) if abs(levels - round(levels)) < 1e-3 else None


def decode_intensity(ds: xr.Dataset) -> xr.Dataset:
    """Intensities opened undecoded (``mask_and_scale`` off) to float32, lazily; others unchanged.

    8-bit stores carry a ``scale_factor`` (1/255): grey ``g`` decodes to ``g / 255`` exactly as
    :func:`ceusflow.preprocess.crop.normalise` computes it. Float stores (layout 1) keep their
    values; a non-NaN ``_FillValue`` is masked as CF decoding would.
    """
    raw = ds[INTENSITY]
    cf = ("scale_factor", "add_offset", "_FillValue", "missing_value")
    attrs = {k: v for k, v in raw.attrs.items() if k not in cf}
    if "scale_factor" in raw.attrs:
        levels = grey_levels(float(raw.attrs["scale_factor"]))
        decoded = (raw.astype(np.float32) / np.float32(levels) if levels is not None
                   else raw.astype(np.float32) * np.float32(raw.attrs["scale_factor"]))
        attrs = {"units": "1", "normalisation": "grey / 255", **attrs}
    else:
        fill = raw.attrs.get("_FillValue")
        decoded = raw if fill is None or np.isnan(fill) else raw.where(raw != fill)
    decoded = decoded.copy(deep=False)
    decoded.attrs = attrs
    return ds.assign({INTENSITY: decoded})
