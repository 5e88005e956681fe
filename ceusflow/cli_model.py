"""Model commands of the ``ceusflow`` CLI: ``train``, ``predict``, ``featuremaps``.

``register(app)`` adds them to a Typer app. Torch is imported inside the commands only, so
``ceusflow --help`` stays fast. Bad input: one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ceusflow.errors import InputError

__all__ = ["register"]


def _fail(err: InputError) -> None:
    typer.echo(f"ceusflow: {err}", err=True)
    raise typer.Exit(code=2)


def train_command(
    roi_store: Annotated[Path, typer.Argument(help="ROI store written by the preprocessing (Zarr).")],
    treatment: Annotated[str, typer.Option(help="Arm whose model is trained: RFA or SR.")],
    out: Annotated[Path, typer.Option(help="Model folder to write, e.g. models/R-RFA.")],
    profile: Annotated[str, typer.Option(help="Network: cpu, paper, or auto (paper on CUDA).")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed: same seed, same CPU weights.")] = 0,
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping on an inner split).")] = 60,
    warmup_epochs: Annotated[int, typer.Option(
        help="Epochs before early stopping watches the inner split (with fewer epochs: the last).")] = 5,
    n_models: Annotated[int, typer.Option(
        help="Ensemble of this many networks (seeds seed..seed+n-1, each on its own inner split), "
             "mean log-hazard: n times the training time. 3 beat single networks in cross-validation "
             "inside the training patients (docs/model.md, session 7); 1 for a single network.")] = 3,
    compile: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the network (inductor): faster epochs on a GPU after "
                          "~20 s of compilation; on a CPU compiling costs more than it saves.")] = False,
    kinetic: Annotated[bool, typer.Option(
        "--kinetic", help="Add the kinetic term: a ridge Cox on the contrast curves (the store's TICs), "
                          "fitted first and frozen; the network learns on top of it "
                          "(docs/model.md, session 9).")] = False,
    train_patients: Annotated[Path | None, typer.Option(
        help="Training patients: one key per line, or a CSV with patient[,split]. "
             "Default: the store's 'split' variable.")] = None,
) -> None:
    """Train a Cox-CNN (R-RFA or R-SR) on the training patients of one arm; write safetensors + JSON."""
    from rich.console import Console

    from ceusflow.model import TrainConfig, save_model, train
    from ceusflow.model.cohort import open_roi, read_patient_list, training_cohort

    console = Console(stderr=True)
    try:
        roi = open_roi(roi_store)
        keys = read_patient_list(train_patients) if train_patients is not None else None
        cohort, text = training_cohort(roi, treatment, train_patients=keys)
        console.print(f"Training R-{treatment}: {text}")
        config = TrainConfig(profile=profile, device=device, seed=seed, epochs=epochs,  # type: ignore[arg-type]
                             warmup_epochs=warmup_epochs, n_models=n_models, kinetic=kinetic,
                             compile="inductor" if compile else None)
        trained = train(cohort, config, progress=True)
    except InputError as err:
        _fail(err)
    trained.info.update({"treatment": treatment, "n_train": int(cohort.sizes["patient"]),
                         "roi_store": str(roi_store), "selection": text})
    folder = save_model(trained, out)
    best = trained.history.sel(epoch=trained.best_epoch).inner_cindex.mean()
    console.print(f"Best epoch {trained.best_epoch}: inner-validation C {float(best):.3f}; "
                  f"{float(trained.history.seconds.sum()):.0f} s; model written to {folder}")


def predict_command(
    model: Annotated[Path, typer.Argument(help="Model folder written by `ceusflow train`.")],
    roi_store: Annotated[Path, typer.Argument(help="ROI store (Zarr); outcomes not needed.")],
    out: Annotated[Path, typer.Option(help="Signatures store (Zarr); a CSV is written beside it.")] = Path(
        "signatures.zarr"),
    name: Annotated[str | None, typer.Option(
        help="Variable name; default signature_<treatment> from the model.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Write the Radiomics signature (log-hazard) of every patient of the ROI store."""
    from ceusflow.model import load_model, predict_risk
    from ceusflow.model.cohort import open_roi, signature_name, write_signatures

    try:
        trained = load_model(model)
        roi = open_roi(roi_store, outcomes=False)
        risk = predict_risk(trained.model, roi, device=device)  # type: ignore[arg-type]
    except InputError as err:
        _fail(err)
    var = name or signature_name(trained.info.get("treatment"))
    risk.attrs.update({"model": str(model), "cohort_hash": trained.cohort_hash})
    zarr_path, csv = write_signatures(risk, out, name=var)
    typer.echo(f"{var} of {risk.sizes['patient']} patients written to {zarr_path} and {csv}")


def featuremaps_command(
    model: Annotated[Path, typer.Argument(help="Model folder written by `ceusflow train`.")],
    roi_store: Annotated[Path, typer.Argument(help="ROI store (Zarr).")],
    patient: Annotated[str, typer.Argument(help="Pseudonymous patient key.")],
    out: Annotated[Path, typer.Option(help="PNG of the overlays; the maps go to OUT with .zarr.")] = Path(
        "maps.png"),
    method: Annotated[str, typer.Option(help="gradcam or integrated_gradients.")] = "gradcam",
    stage: Annotated[int, typer.Option(help="Grad-CAM stage (1-4; 4 = last, coarsest).")] = 4,
    frames: Annotated[int, typer.Option(help="Frames shown per phase.")] = 4,
) -> None:
    """Per-phase attribution maps of one patient (Fig. S2): pseudo-colour PNG + arrays."""
    import warnings

    from ceusflow.model import load_model
    from ceusflow.model.attribution import attribution, plot_attribution
    from ceusflow.model.cohort import open_roi

    try:
        trained = load_model(model)
        roi = open_roi(roi_store, outcomes=False)
        maps = attribution(trained.model, roi, patient, method=method, stage=stage)  # type: ignore[arg-type]
    except InputError as err:
        _fail(err)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_attribution(maps, roi, n_frames=frames).savefig(out, dpi=120)
    arrays = out.with_suffix(".zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps.to_dataset().to_zarr(arrays, mode="w")
    typer.echo(f"feature maps of {patient} written to {out} and {arrays}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``predict`` and ``featuremaps`` to ``app``."""
    app.command("train")(train_command)
    app.command("predict")(predict_command)
    app.command("featuremaps")(featuremaps_command)
