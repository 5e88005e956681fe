"""Cox nomogram scaled as R ``rms::nomogram``: points per predictor, total points, survival.

Scaling: predictor ``k`` contributes ``beta_k * x_k``; its effect range over the data is
``|beta_k| * (max_k - min_k)``. The predictor with the widest range spans 0–100 points and
every other predictor is drawn on the same scale, so ``points_k(x) = scale * (beta_k x -
min(beta_k x))`` with ``scale = 100 / widest range``. Total points ``P`` map back to the
centred linear predictor by ``lp = P / scale + offset`` and to survival at the horizon by
``S(h | x) = S0(h) ** exp(lp)``. The axis limits are the observed minimum and maximum
(``rms`` uses ``datadist`` limits, by default about the 10th smallest and largest values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from ceusflow.errors import InputError
from ceusflow.survival.cox import CoxFit, baseline_cumhaz_at


@dataclass(frozen=True)
class Nomogram:
    """A nomogram for a Cox model.

    Attributes
    ----------
    table : DataFrame
        Points table with columns ``variable``, ``value``, ``points``: for every predictor a
        few tick values (in covariate units) across its observed range and their points.
    coef : Series
        Coefficients per predictor (log-HR per unit).
    low, high : Series
        Observed minimum and maximum per predictor (covariate units).
    scale : float
        Points per unit of linear predictor.
    offset : float
        Centred linear predictor at zero total points.
    baseline_survival : float
        ``S0(horizon)`` at the covariate means.
    horizon : float
        Time at which survival is read (units of the fitted time, e.g. months).
    max_points : float
        Total points when every predictor is at its highest-points end.
    """

    table: pd.DataFrame
    coef: pd.Series
    low: pd.Series
    high: pd.Series
    scale: float
    offset: float
    baseline_survival: float
    horizon: float
    max_points: float

    def survival_at_points(self, points: Any) -> NDArray[np.float64]:
        """Survival at ``horizon`` for total points (array-like)."""
        lp = np.asarray(points, dtype=float) / self.scale + self.offset
        return np.power(self.baseline_survival, np.exp(lp))

    def points_at_survival(self, survival: Any) -> NDArray[np.float64]:
        """Total points giving a survival probability in (0, 1) at ``horizon``."""
        lp = np.log(np.log(np.asarray(survival, dtype=float)) / np.log(self.baseline_survival))
        return (lp - self.offset) * self.scale


def _ticks(low: float, high: float, n: int = 5, ends: bool = True) -> NDArray[np.float64]:
    """Round tick values covering [low, high] (integers for small integer ranges)."""
    if high == low:
        return np.array([low])
    if float(low).is_integer() and float(high).is_integer() and high - low <= n:
        return np.arange(low, high + 1.0)
    step = 10 ** np.floor(np.log10((high - low) / n))
    step *= min((m for m in (1, 2, 5, 10) if (high - low) / (step * m) <= n), default=10)
    ticks = np.arange(np.ceil(low / step) * step, high + step * 1e-9, step)
    return np.unique(np.r_[low, ticks, high].round(10)) if ends else ticks.round(10)


def nomogram(fit: CoxFit, data: pd.DataFrame, *, horizon: float = 24.0) -> Nomogram:
    """Build the points table of a Cox nomogram (``rms::nomogram`` scaling).

    Parameters
    ----------
    fit : CoxFit
        A fitted model with at least one covariate.
    data : DataFrame
        Data giving each predictor's range (usually the training data).
    horizon : float
        Time for the survival axis, in fitted time units (24 months = 2-year PFS).

    Returns
    -------
    Nomogram
        Points table and the maps points -> linear predictor -> survival.
    """
    if not fit.names:
        raise InputError("fit", "has no covariates", "fit a model with at least one predictor")
    missing = [n for n in fit.names if n not in data.columns]
    if missing:
        raise InputError("data", f"missing columns {missing}", "pass the training data")
    if not np.isfinite(horizon) or horizon <= 0:
        raise InputError("horizon", f"must be > 0, got {horizon}", "e.g. 24 months")
    coef = pd.Series(fit.coef, index=list(fit.names))
    low, high = data[list(fit.names)].min().astype(float), data[list(fit.names)].max().astype(float)
    effect_min = np.minimum(coef * low, coef * high)
    widest = float((coef.abs() * (high - low)).max())
    if widest <= 0:
        raise InputError("fit", "no predictor has a non-zero effect range", "check the data")
    scale = 100.0 / widest
    rows = [{"variable": n, "value": v, "points": scale * (coef[n] * v - effect_min[n])}
            for n in fit.names for v in _ticks(low[n], high[n])]
    s0 = float(np.exp(-baseline_cumhaz_at(fit, horizon)))
    offset = float(effect_min.sum() - coef @ pd.Series(fit.means, index=coef.index))
    max_points = float(scale * (coef.abs() * (high - low)).sum())
    return Nomogram(pd.DataFrame(rows), coef, low, high, scale, offset, s0, float(horizon),
                    max_points)


def nomogram_points(nomo: Nomogram, row: pd.Series | dict[str, float]) -> tuple[float, float]:
    """Total points and survival at the horizon for one patient, as read off the nomogram.

    Parameters
    ----------
    nomo : Nomogram
        From :func:`nomogram`.
    row : Series or dict
        Covariate values of one patient (covariate units).

    Returns
    -------
    tuple of float
        ``(total_points, survival)``, survival being ``S(horizon | x)`` in [0, 1].
    """
    values = pd.Series(row, dtype=float)
    missing = [n for n in nomo.coef.index if n not in values.index]
    if missing:
        raise InputError("row", f"missing values for {missing}", "give every predictor")
    x = values[nomo.coef.index]
    points = nomo.scale * (nomo.coef * x - np.minimum(nomo.coef * nomo.low, nomo.coef * nomo.high))
    total = float(points.sum())
    return total, float(nomo.survival_at_points(total))


def _scale_axis(ax: Any, label: str, positions: Any, labels: Any, width: float) -> None:
    pos = np.asarray(positions, dtype=float)
    ax.set_xlim(-0.02 * width, 1.02 * width)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_position(("axes", 0.5))
    if pos.size:
        ax.spines["bottom"].set_bounds(pos.min(), pos.max())
    ax.set_xticks(pos, [f"{v:g}" for v in labels], fontsize=7)
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def plot_nomogram(nomo: Nomogram) -> Figure:
    """Draw the nomogram: Points, one scale per predictor, Total points, LP and survival.

    Parameters
    ----------
    nomo : Nomogram
        From :func:`nomogram`.

    Returns
    -------
    Figure
        One axes per row, top to bottom: ``Points``, each predictor, ``Total points``,
        ``Linear predictor``, ``<horizon>-month survival``.
    """
    names = list(nomo.coef.index)
    fig = Figure(figsize=(8, 0.6 * (len(names) + 4) + 0.5))
    axes = fig.subplots(len(names) + 4, 1)
    _scale_axis(axes[0], "Points", np.arange(0, 101, 10), np.arange(0, 101, 10), 100)
    for ax, name in zip(axes[1:], names, strict=False):
        rows = nomo.table[nomo.table["variable"] == name]
        _scale_axis(ax, name, rows["points"], rows["value"], 100)
    total_ticks = _nice_range(nomo.max_points)
    _scale_axis(axes[-3], "Total points", total_ticks, total_ticks, nomo.max_points)
    axes[-3].spines["bottom"].set_bounds(0.0, nomo.max_points)
    lp_ticks = _ticks(nomo.offset, nomo.offset + nomo.max_points / nomo.scale, ends=False)
    _scale_axis(axes[-2], "Linear predictor", (lp_ticks - nomo.offset) * nomo.scale, lp_ticks,
                nomo.max_points)
    surv = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    pos = nomo.points_at_survival(surv)
    inside = (pos >= 0) & (pos <= nomo.max_points)
    _scale_axis(axes[-1], f"{nomo.horizon:g}-month survival", pos[inside], surv[inside],
                nomo.max_points)
    fig.subplots_adjust(left=0.25, hspace=0.9)
    return fig


def _nice_range(high: float) -> NDArray[np.float64]:
    return _ticks(0.0, float(high), n=8, ends=False) if high > 0 else np.array([0.0])
