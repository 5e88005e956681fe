"""Study configuration: every parameter of ``ceusflow run`` with the paper's defaults.

``ceusflow config`` prints :data:`DEFAULT_TOML` (the full, commented default); a user copies it,
edits what they need and passes it with ``--config study.toml``. Unknown keys are an error (a
typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ceusflow.conventions import TREATMENTS
from ceusflow.errors import InputError

DEFAULT_TOML = """\
# ceusflow study configuration. Every value shown is the default (Liu et al. 2020 where the
# paper says; otherwise the choice documented in docs/).

seed = 0                     # one seed for the split, training and bootstraps

[convert]
max_fps = 0                  # 0 = keep every frame; else store at most this many frames/s
codec = "lz4"                # lossless codec of the cines: lz4 (faster) | zstd (15-33 % smaller) | none (docs/store.md)

[preprocess]
fps = 2.0                    # resampled frame rate (paper: 2 frames/s)
margin_mm = 10.0             # ROI = rough box expanded by 1 cm on every side (paper)
size = 64                    # ROI side after resizing, pixels
track = true                 # follow breathing/drift automatically (beyond the paper)
phases = { AP = [0.0, 45.0], PP = [45.0, 120.0], VP = [120.0, 180.0] }  # s after injection

[split]
train_fraction = 0.666667    # 2:1 training/validation split per treatment (paper)
alpha = 0.05                 # re-draw until no characteristic differs at p < alpha (paper)
max_draws = 1000

[train]
profile = "auto"             # "paper" (GPU scale), "cpu" (<= 15 min on 2 cores) or "auto" (by device)
device = "auto"              # auto | cpu | cuda
epochs = 60                  # maximum; early stopping on an inner split of the training cohort
warmup_epochs = 5            # epochs trained before early stopping starts watching
inner_fraction = 0.2
n_models = 3                 # ensemble: members on different seeds and inner splits, mean log-hazard
                             # (+0.02 RFA, +0.04 SR C in CV inside the training patients; 3x the time)
monitor = "inner_cindex"     # early stopping on the inner Harrell's C | "inner_loss" (partial likelihood)
compile = ""                 # torch.compile backend: "" = eager, "inductor" (+33-45 % on a GPU, ~20 s to compile)
kinetic = ["RFA"]            # arms whose Cox-CNN gets the kinetic term (ridge Cox on the contrast curves, frozen,
                             # the CNN trained on top): +0.042 C for R-RFA, -0.015 for R-SR in CV inside the
                             # training patients (docs/model.md, session 9); [] = the paper's CNN for both

[statistics]
horizon_months = 24.0        # 2-year PFS (paper)
cut_min_prop = 0.1           # maximally selected log-rank cut-point search range
cut_max_prop = 0.9
stepwise_p_filter = 0.05     # paper: keep p < 0.05 after backward AIC; 0 = AIC only
n_boot = 200                 # bootstrap replicates for CIs and calibration
"""


@dataclass(frozen=True)
class PreprocessConfig:
    """ROI preprocessing parameters."""

    fps: float = 2.0
    margin_mm: float = 10.0
    size: int = 64
    track: bool = True
    phases: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"AP": (0.0, 45.0), "PP": (45.0, 120.0), "VP": (120.0, 180.0)})


@dataclass(frozen=True)
class SplitConfig:
    """Balanced training/validation split."""

    train_fraction: float = 2 / 3
    alpha: float = 0.05
    max_draws: int = 1000


@dataclass(frozen=True)
class TrainSection:
    """Cox-CNN training."""

    profile: str = "auto"
    device: str = "auto"
    epochs: int = 60
    warmup_epochs: int = 5
    inner_fraction: float = 0.2
    n_models: int = 3
    monitor: str = "inner_cindex"
    compile: str = ""
    kinetic: tuple[str, ...] = ("RFA",)


@dataclass(frozen=True)
class StatisticsConfig:
    """Statistics and nomograms."""

    horizon_months: float = 24.0
    cut_min_prop: float = 0.1
    cut_max_prop: float = 0.9
    stepwise_p_filter: float = 0.05
    n_boot: int = 200


@dataclass(frozen=True)
class ConvertSection:
    """DICOM -> Zarr conversion."""

    max_fps: float = 0.0
    codec: str = "lz4"


@dataclass(frozen=True)
class StudyConfig:
    """The whole study: one frozen object, hashed per stage for caching."""

    seed: int = 0
    convert: ConvertSection = ConvertSection()
    preprocess: PreprocessConfig = PreprocessConfig()
    split: SplitConfig = SplitConfig()
    train: TrainSection = TrainSection()
    statistics: StatisticsConfig = StatisticsConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


_CLASSES = {"convert": ConvertSection, "preprocess": PreprocessConfig, "split": SplitConfig,
            "train": TrainSection, "statistics": StatisticsConfig}


def _section(name: str, values: dict[str, Any], source: str) -> Any:
    cls = _CLASSES[name]
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise InputError(source, f"unknown key(s) {sorted(unknown)} in [{name}]",
                         f"known keys: {sorted(known)} (ceusflow config prints them all)")
    if name == "train" and "kinetic" in values:
        values = {**values, "kinetic": _arms(values["kinetic"], source)}
    if name == "preprocess" and "phases" in values:
        values = {**values, "phases": {k: (float(a), float(b)) for k, (a, b) in values["phases"].items()}}
    return replace(cls(), **values)


def _arms(value: Any, source: str) -> tuple[str, ...]:
    """``[train] kinetic``: a list of arms (``true`` = both, ``false`` = none)."""
    if isinstance(value, bool):
        return tuple(TREATMENTS) if value else ()
    if not isinstance(value, list) or any(v not in TREATMENTS for v in value):
        raise InputError(source, f"[train] kinetic = {value!r} is not a list of arms",
                         'write e.g. kinetic = ["RFA"], ["RFA", "SR"] or []')
    return tuple(a for a in TREATMENTS if a in value)


def load_config(path: str | Path | None = None, *, seed: int | None = None) -> StudyConfig:
    """Read a study TOML (missing sections and keys take the defaults).

    Parameters
    ----------
    path : path-like, optional
        TOML file; None gives the defaults.
    seed : int, optional
        Overrides the file's seed (the CLI's ``--seed``).

    Returns
    -------
    StudyConfig

    Raises
    ------
    InputError
        Unreadable TOML or unknown keys.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise InputError(str(path), f"cannot read the configuration ({err})", "check the TOML syntax") from err
    unknown = set(data) - set(_CLASSES) - {"seed"}
    if unknown:
        raise InputError(str(path), f"unknown section(s) {sorted(unknown)}", f"known: {sorted(_CLASSES)}")
    config = StudyConfig(seed=int(data.get("seed", 0)),
                         **{k: _section(k, v, str(path)) for k, v in data.items() if k in _CLASSES})
    return replace(config, seed=seed) if seed is not None else config
