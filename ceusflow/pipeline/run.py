"""``ceusflow run``: convert → preprocess → split → train R-RFA and R-SR → signatures → statistics → report.

Each stage is skipped when its content key (its configuration plus the keys of its inputs; see
:mod:`ceusflow.pipeline.cache`) matches the last finished run, so rerunning an unchanged study
takes seconds and a changed setting reruns only what depends on it. Stores go to ``stores/``
(the pseudonym mapping stays beside them, never in the results folder).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ceusflow.conventions import CLINICAL_COLUMNS, PATIENT, TREATMENTS
from ceusflow.errors import InputError
from ceusflow.pipeline.cache import StageCache, digest, tree_fingerprint
from ceusflow.pipeline.config import StudyConfig, TrainSection
from ceusflow.preprocess.cohort import open_rois
from ceusflow.preprocess.tic import CONTRAST_BIN_S, contrast_table

Log = Callable[[str], None]
#: Bumped when the statistics stage's outputs change (so older results folders are re-reported).
REPORT_VERSION = 6
#: Bumped when preprocessing's outputs change for the same configuration (2: the session-10 tracker,
#: breathing model and template channel; 3: the refinement passes against motion-compensated
#: neighbours), so older results folders are preprocessed again.
PREPROCESS_VERSION = 3
#: TIC parameters of the handcrafted baseline (``fit_r2`` is a fit diagnostic, not a perfusion feature).
BASELINE_TIC = ("peak_enhancement", "time_to_peak", "rise_time", "wash_in_slope", "auc", "mtt", "washout_60",
                "washout_120", "washout_180")


@dataclass
class RunSummary:
    """What ``run_study`` did: per stage, ``"ran"`` or ``"cached"`` and seconds."""

    results: Path
    stages: dict[str, tuple[str, float]] = field(default_factory=dict)
    report: Path | None = None


@dataclass
class _Context:
    cohort: Path
    results: Path
    config: StudyConfig
    store: Path
    roi_store: Path
    workers: int
    scheduler: Any
    progress: bool
    log: Log
    cache: StageCache
    keys: dict[str, str] = field(default_factory=dict)


def _stage(ctx: _Context, summary: RunSummary, name: str, key: str, body: Callable[[], dict[str, Any]],
           index: int, total: int) -> None:
    ctx.keys[name] = key
    start = time.perf_counter()
    if ctx.cache.done(name, key):
        summary.stages[name] = ("cached", 0.0)
        ctx.log(f"[{index}/{total}] {name}: unchanged, skipped")
        return
    ctx.log(f"[{index}/{total}] {name} …")
    info = body()
    seconds = time.perf_counter() - start
    ctx.cache.record(name, key, seconds=seconds, **info)
    summary.stages[name] = ("ran", seconds)
    ctx.log(f"[{index}/{total}] {name}: done in {seconds:.1f} s")


def _convert(ctx: _Context) -> dict[str, Any]:
    from ceusflow.convert import convert_cohort

    max_fps = ctx.config.convert.max_fps or None
    report = convert_cohort(ctx.cohort, ctx.store, workers=ctx.workers, scheduler=ctx.scheduler,
                            max_fps=max_fps, codec=ctx.config.convert.codec, progress=ctx.progress)
    return {"converted": len(report.converted) + len(report.resumed), "problems": len(report.problems)}


def _preprocess(ctx: _Context) -> dict[str, Any]:
    from ceusflow.preprocess.cohort import preprocess_cohort

    p = ctx.config.preprocess
    report = preprocess_cohort(ctx.store, out=ctx.roi_store, fps=p.fps, margin_mm=p.margin_mm, size=p.size,
                               phases=p.phases, track=p.track, workers=ctx.workers, scheduler=ctx.scheduler,
                               progress=ctx.progress)
    return {"written": len(report.written), "failed": len(report.failed)}


def patient_table(roi: xr.Dataset) -> pd.DataFrame:
    """Outcome, treatment and clinical covariates of the ROI store, indexed by pseudonymous key."""
    wanted = ["treatment", "duration", "event", *CLINICAL_COLUMNS[4:]]
    df = roi[[v for v in wanted if v in roi.data_vars]].to_dataframe()
    df["event"] = df["event"].astype(bool)
    return df


def tic_features(roi: xr.Dataset, parameters: tuple[str, ...] = BASELINE_TIC) -> pd.DataFrame:
    """Perfusion parameters of every ROI part as one feature table, indexed by pseudonymous key.

    Parameters
    ----------
    roi : Dataset
        ROI store with ``tic_<parameter>`` (patient, part) variables (``ceusflow.preprocess.tic``).
        Open it with ``chunks=None``: these variables are stored one patient per chunk, and dask
        would make a task of each (about 4x slower for 400 patients).
    parameters : tuple of str
        Which parameters; those the store lacks are skipped.

    Returns
    -------
    DataFrame (patient, "<parameter>_<part>")
        Float values; NaN where the preprocessing could not read a parameter. No column when the
        store holds no TIC parameter (the baseline then reports that it was not estimable).
    """
    found = [p for p in parameters if f"tic_{p}" in roi.data_vars]
    index = pd.Index([str(k) for k in roi[PATIENT].values], name=PATIENT)
    if not found:
        return pd.DataFrame(index=index)
    table = roi[[f"tic_{p}" for p in found]].compute()
    cols = {f"{p}_{part}": table[f"tic_{p}"].sel(part=part).values for p in found for part in table["part"].values}
    return pd.DataFrame(cols, index=index).astype(float)


def contrast_features(roi: xr.Dataset, *, bin_s: float = CONTRAST_BIN_S) -> pd.DataFrame:
    """Contrast curves of every ROI part as one feature table, indexed by pseudonymous key.

    Parameters
    ----------
    roi : Dataset
        ROI store with the ``tic`` (patient, part, exam_time) variable, opened with ``chunks=None``.
    bin_s : float
        Width of the time bins (s), :func:`ceusflow.preprocess.tic.contrast_curves`.

    Returns
    -------
    DataFrame (patient, "contrast_<part>_<start>s")
        dB relative to the parenchyma ring; NaN where a bin held no valid frame. No column when
        the store holds no ``tic``.
    """
    if "tic" not in roi.data_vars:
        return pd.DataFrame(index=pd.Index([str(k) for k in roi[PATIENT].values], name=PATIENT))
    return contrast_table(roi["tic"].load(), bin_s=bin_s)


def _split(ctx: _Context) -> dict[str, Any]:
    from ceusflow.survival import balanced_split

    df = patient_table(open_rois(ctx.roi_store))
    s = ctx.config.split
    split = pd.Series("val", index=df.index, name="split")
    draws = {}
    covariates = ["age", "tumor_size_cm", "alt", "alb", "plt", "tbil", "pt", "wbc", "cirrhosis", "ecog",
                  "perivascular", "periphery"]
    for arm in TREATMENTS:
        g = df[df["treatment"] == arm]
        result = balanced_split(g[[c for c in covariates if c in g]], frac_train=s.train_fraction, alpha=s.alpha,
                                max_draws=s.max_draws, rng=ctx.config.seed, time=g["duration"].to_numpy(),
                                event=g["event"].to_numpy())
        split[g.index[result.train]] = "train"
        draws[arm] = result.n_draws
    split.rename_axis(PATIENT).to_frame().to_csv(ctx.results / "split.csv")
    return {"draws": draws}


def train_config(section: TrainSection, seed: int, arm: str | None = None) -> Any:
    """Return the :class:`~ceusflow.model.TrainConfig` of a study's ``[train]`` section for one arm.

    TOML has no null: ``compile = ""`` means eager training. ``kinetic`` is on when ``arm`` is
    one of the section's ``kinetic`` arms.
    """
    from ceusflow.model import TrainConfig

    fields = dataclasses.asdict(section)
    return TrainConfig(**{**fields, "compile": fields["compile"] or None, "kinetic": arm in section.kinetic},
                       seed=seed)


def profile_architectures() -> dict[str, Any]:
    """The architectures the ``[train]`` profiles stand for, as part of the training stages' keys.

    A ceusflow whose profile (every name in ``network.Profile``) changed must retrain rather
    than reuse the models of a run made with the old architecture under the same ``[train]``
    section.
    """
    from typing import get_args

    from ceusflow.model import network

    return {name: network.profile(name).to_dict() for name in get_args(network.Profile)}


def _train(ctx: _Context, arm: str) -> dict[str, Any]:
    from ceusflow.model import save_model, train

    roi = open_rois(ctx.roi_store)
    split = pd.read_csv(ctx.results / "split.csv", index_col=PATIENT)["split"]
    table = patient_table(roi)
    keys = table.index[(table["treatment"] == arm) & (split.reindex(table.index) == "train")]
    config = train_config(ctx.config.train, ctx.config.seed, arm)
    trained = train(roi.sel({PATIENT: list(keys)}), config, progress=ctx.progress)
    save_model(trained, ctx.results / "models" / f"R-{arm}")
    return {"n_train": len(keys), "best_epoch": int(trained.best_epoch)}


def _signatures(ctx: _Context) -> dict[str, Any]:
    from ceusflow.model import load_model, predict_risk

    roi = open_rois(ctx.roi_store)
    out = pd.DataFrame(index=pd.Index(roi[PATIENT].values, name=PATIENT))
    for arm in TREATMENTS:
        model = load_model(ctx.results / "models" / f"R-{arm}")
        out[f"signature_{arm.lower()}"] = predict_risk(model.model, roi, device=ctx.config.train.device).to_series()  # type: ignore[arg-type]
    out.to_csv(ctx.results / "signatures.csv")
    return {}


def _analysis(ctx: _Context) -> dict[str, Any]:
    from ceusflow.model import load_model
    from ceusflow.pipeline.analysis import analyse_and_report
    from ceusflow.report.featuremaps import feature_maps

    roi = open_rois(ctx.roi_store)
    split = pd.read_csv(ctx.results / "split.csv", index_col=PATIENT)["split"]
    sig = pd.read_csv(ctx.results / "signatures.csv", index_col=PATIENT)
    patients = patient_table(roi).join(split).join(sig)
    models = {arm: load_model(ctx.results / "models" / f"R-{arm}").model for arm in TREATMENTS}
    maps = feature_maps(models, roi, patients)
    eager = open_rois(ctx.roi_store, chunks=None)
    kinetic = [arm for arm, m in models.items() if m.config.kinetic_features]
    report = analyse_and_report(patients, ctx.config, ctx.results, features=tic_features(eager),
                                contrast=contrast_features(eager), featuremaps=maps, kinetic=kinetic)
    return {"report": str(report), "featuremaps": len(maps.figures)}


def run_study(cohort: str | Path, results: str | Path, config: StudyConfig | None = None, *,
              store: str | Path | None = None, workers: int = 0, scheduler: Any = None,
              progress: bool = True, log: Log = print) -> RunSummary:
    """Run the whole study on an export and write the results folder (see ``docs/user-guide.md``).

    Parameters
    ----------
    cohort : path-like
        Hospital export (``dicom/**``, ``clinical.csv``, ``rois.csv``).
    results : path-like
        Output folder: ``predictions.csv``, ``metrics.json``, ``report.html``, ``figures/``, models.
    config : StudyConfig, optional
        Defaults from the paper.
    store : path-like, optional
        Cohort store; default ``stores/<results name>.zarr`` (ROI store: ``...-roi.zarr``).
    workers, scheduler
        Dask execution for convert and preprocess (0 = in-process).
    progress : bool
        Progress bars inside stages.
    log : callable
        Receives one line per stage.

    Returns
    -------
    RunSummary
    """
    cohort, results = Path(cohort), Path(results)
    if not (cohort / "dicom").is_dir():
        raise InputError(str(cohort), "no dicom/ folder", "point to the export (dicom/**, clinical.csv, rois.csv)")
    config = config or StudyConfig()
    store = Path(store) if store else Path("stores") / f"{results.name}.zarr"
    roi_store = store.with_name(store.name.removesuffix(".zarr") + "-roi.zarr")
    results.mkdir(parents=True, exist_ok=True)
    ctx = _Context(cohort, results, config, store, roi_store, workers, scheduler, progress, log, StageCache(results))
    summary = RunSummary(results)
    k = ctx.keys
    plan: list[tuple[str, Callable[[], str], Callable[[], dict[str, Any]]]] = [
        ("convert", lambda: digest(tree_fingerprint(cohort), config.convert), lambda: _convert(ctx)),
        ("preprocess", lambda: digest(k["convert"], config.preprocess, PREPROCESS_VERSION),
         lambda: _preprocess(ctx)),
        ("split", lambda: digest(k["preprocess"], config.split, config.seed), lambda: _split(ctx)),
        ("train R-RFA", lambda: digest(k["split"], config.train, config.seed, "RFA", profile_architectures()),
         lambda: _train(ctx, "RFA")),
        ("train R-SR", lambda: digest(k["split"], config.train, config.seed, "SR", profile_architectures()),
         lambda: _train(ctx, "SR")),
        ("signatures", lambda: digest(k["train R-RFA"], k["train R-SR"]), lambda: _signatures(ctx)),
        ("statistics and report", lambda: digest(k["signatures"], config.statistics, config.seed, REPORT_VERSION),
         lambda: _analysis(ctx)),
    ]
    for i, (name, key, body) in enumerate(plan, start=1):
        _stage(ctx, summary, name, key(), body, i, len(plan))
    summary.report = results / "report.html"
    return summary


__all__ = ["RunSummary", "contrast_features", "patient_table", "run_study", "tic_features"]
