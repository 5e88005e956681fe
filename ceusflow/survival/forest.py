"""Forest plot of the hazard ratios of a Cox model."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

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
    ticks = _hr_ticks(float(np.min(low)), float(np.max(high)))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())  # no overlapping "2x10^-1"-style minor labels
    ax.set_yticks(y, list(tab.index))
    ax.set_xlabel("Hazard ratio (95% CI)")
    for yi, (_, r) in zip(y, tab.iterrows(), strict=True):
        ax.annotate(f"{r.hr:.2f} ({r.hr_low:.2f}–{r.hr_high:.2f}), p={r.p:.3g}",
                    (1.02, yi), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    fig.subplots_adjust(right=0.62, left=0.25)
    return fig


def _hr_ticks(low: float, high: float) -> list[float]:
    """Readable hazard-ratio ticks spanning ``[low, high]`` (always including 1)."""
    grid = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    inside = [t for t in grid if low / 1.5 <= t <= high * 1.5]
    return sorted(set(inside) | {1.0})
