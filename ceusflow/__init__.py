"""ceusflow: CEUS cines to validated survival models and treatment recommendations.

Reproduces, as a reusable toolkit, the method of Liu et al. 2020 (Liver Cancer,
doi 10.1159/000505694). ``import ceusflow`` is light: the names below are imported on first
use (PEP 562), and torch only by ``ceusflow.model``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ceusflow.errors import CeusflowError, InputError

__version__ = "0.1.0"

_LAZY = {
    "SimulationConfig": "ceusflow.simulate",
    "write_synthetic_export": "ceusflow.simulate",
    "read_cine": "ceusflow.io",
    "open_store": "ceusflow.store",
    "convert_cohort": "ceusflow.convert",
    "preprocess_cohort": "ceusflow.preprocess.cohort",
    "concordance": "ceusflow.survival",
    "cutpoint": "ceusflow.survival",
    "kaplan_meier": "ceusflow.survival",
    "logrank": "ceusflow.survival",
    "hazard_ratio": "ceusflow.survival",
    "fit_cox": "ceusflow.survival",
    "cross_stratify": "ceusflow.recommend",
    "recommend": "ceusflow.recommend",
    "StudyConfig": "ceusflow.pipeline.config",
    "load_config": "ceusflow.pipeline.config",
    "run_study": "ceusflow.pipeline.run",
    "load_model": "ceusflow.model",
}

__all__ = ["CeusflowError", "InputError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ceusflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
