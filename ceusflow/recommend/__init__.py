"""Treatment recommendation: cross-stratification (Liu et al. 2020) and CI-gated per-patient advice.

Pure functions over numpy/pandas/xarray; methods and caveats in ``docs/recommend.md``.
"""

from ceusflow.recommend.cross import (
    SUBGROUPS,
    CrossStratification,
    MannWhitney,
    SwapBenefit,
    cross_stratify,
    mann_whitney,
    swap_benefit,
)
from ceusflow.recommend.plots import plot_cross_stratification
from ceusflow.recommend.policy import (
    PolicyValue,
    bootstrap_nomogram_predictions,
    nomogram_predictions,
    policy_value,
    recommend,
)

__all__ = [
    "SUBGROUPS",
    "CrossStratification",
    "MannWhitney",
    "PolicyValue",
    "SwapBenefit",
    "bootstrap_nomogram_predictions",
    "cross_stratify",
    "mann_whitney",
    "nomogram_predictions",
    "plot_cross_stratification",
    "policy_value",
    "recommend",
    "swap_benefit",
]
