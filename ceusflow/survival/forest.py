"""Forest plot of the hazard ratios of a Cox model."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ceusflow.errors import InputError
from ceusflow.survival.cox import CoxFit


def plot_forest(cox_fit: CoxFit) -> Figure:
    """Hazard ratio with 95 % CI per covariate on a log axis.

    Parameters
    ----------
    cox_fit : CoxFit
        A fitted model with at least one covariate.

    Returns
    -------
    Figure
        One axes: covariates top to bottom in model order, HR (per covariate unit) on a
        log-scaled x axis, a dotted line at HR = 1, and "HR (low–high), p" annotated.
    """
    tab = cox_fit.params
    if tab.empty:
        raise InputError("cox_fit", "has no covariates", "fit a model with predictors")
    y = np.arange(len(tab))[::-1]
    fig = Figure(figsize=(6.5, 0.45 * len(tab) + 1.2))
    ax = fig.subplots()
    hr, low, high = (tab[c].to_numpy(float) for c in ("hr", "hr_low", "hr_high"))
    ax.errorbar(hr, y, xerr=[hr - low, high - hr], fmt="s", color="black", capsize=3)
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xscale("log")
    ax.set_yticks(y, list(tab.index))
    ax.set_xlabel("Hazard ratio (95% CI)")
    for yi, (_, r) in zip(y, tab.iterrows(), strict=True):
        ax.annotate(f"{r.hr:.2f} ({r.hr_low:.2f}–{r.hr_high:.2f}), p={r.p:.3g}",
                    (1.02, yi), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    fig.subplots_adjust(right=0.62, left=0.25)
    return fig
