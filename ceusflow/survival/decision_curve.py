"""Decision curve analysis for a survival outcome at a horizon (Vickers et al. 2008).

For a threshold probability ``p_t`` a patient is test-positive when the predicted risk of the
event by the horizon is ``>= p_t``. With ``rho`` the fraction test-positive and ``S+`` the
Kaplan–Meier survival at the horizon among the test-positives,

    net_benefit = (1 - S+) rho - (p_t / (1 - p_t)) S+ rho

"treat all" uses every patient as test-positive and "treat none" has net benefit 0. This is
the convention of R ``stdca`` and Python ``dcurves``; the net benefit is NaN where the
test-positives' follow-up ends before the horizon (KM undefined there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays
from ceusflow.survival.calibration import km_at

_DEFAULT_THRESHOLDS = np.arange(0.01, 0.99, 0.01)


def _net_benefit(t: NDArray[np.float64], e: NDArray[np.bool_], risk: NDArray[np.float64],
                 thresholds: NDArray[np.float64], horizon: float) -> NDArray[np.float64]:
    out = np.empty(thresholds.size)
    for i, pt in enumerate(thresholds):
        pos = risk >= pt
        if not pos.any():
            out[i] = 0.0
            continue
        s_pos = km_at(t[pos], e[pos], horizon)[0]
        rho = pos.mean()
        out[i] = (1.0 - s_pos) * rho - pt / (1.0 - pt) * s_pos * rho
    return out


def _risk_dict(risks: dict[str, Any] | Any) -> dict[str, Any]:
    named = dict(risks) if isinstance(risks, dict) else {"model": risks}
    clash = {"all", "none"} & set(named)
    if clash:
        raise InputError("risks", f"model names {sorted(clash)} are reserved", "rename them")
    return named


def decision_curve(time: Any, event: Any, risks: dict[str, Any] | Any, *,
                   horizon: float = 24.0,
                   thresholds: Any = _DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Net benefit of risk models, treat-all and treat-none for a survival outcome.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time and event indicator.
    risks : dict of str to array-like (n,), or array-like (n,)
        Predicted probability of the event by ``horizon`` (``1 - S(horizon | x)``), in
        [0, 1]; higher = earlier event. A bare array is named ``"model"``.
    horizon : float
        Time horizon (input time units, e.g. 24 months).
    thresholds : array-like
        Threshold probabilities, each in [0, 1).

    Returns
    -------
    DataFrame
        Long table with columns ``threshold``, ``model`` (each model, then ``"all"`` and
        ``"none"``) and ``net_benefit`` (NaN where undefined).
    """
    named = _risk_dict(risks)
    thr = np.asarray(thresholds, dtype=float).ravel()
    if thr.size == 0 or np.any((thr < 0) | (thr >= 1)):
        raise InputError("thresholds", "must be non-empty and within [0, 1)", "e.g. 0.01–0.98")
    if not np.isfinite(horizon) or horizon <= 0:
        raise InputError("horizon", f"must be > 0, got {horizon}", "e.g. 24 months")
    arrays = survival_arrays(time, event, *named.values(), names=tuple(named))
    t, e, cols = arrays[0], arrays[1], arrays[2:]
    for name, r in zip(named, cols, strict=True):
        if np.any((r < 0) | (r > 1)):
            raise InputError(name, "risks must be probabilities in [0, 1]",
                             "convert with 1 - predict_survival(fit, x, horizon)")
    curves = {name: _net_benefit(t, e, r, thr, horizon) for name, r in zip(named, cols,
                                                                            strict=True)}
    curves["all"] = _net_benefit(t, e, np.ones_like(t), thr, horizon)
    curves["none"] = np.zeros(thr.size)
    return pd.concat([pd.DataFrame({"threshold": thr, "model": m, "net_benefit": nb})
                      for m, nb in curves.items()], ignore_index=True)


def plot_decision_curve(df: pd.DataFrame) -> Figure:
    """Plot net benefit against threshold probability, one line per model.

    Parameters
    ----------
    df : DataFrame
        Output of :func:`decision_curve`.

    Returns
    -------
    Figure
        One axes; y limited to [-0.05, max net benefit + 0.05].
    """
    missing = {"threshold", "model", "net_benefit"} - set(df.columns)
    if missing:
        raise InputError("df", f"missing columns {sorted(missing)}", "pass decision_curve output")
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for model, part in df.groupby("model", sort=False):
        style = {"all": ":", "none": "-"}.get(str(model), "-")
        ax.plot(part["threshold"], part["net_benefit"], linestyle=style, label=str(model))
    top = float(np.nanmax(df["net_benefit"])) if df["net_benefit"].notna().any() else 0.0
    ax.set(xlabel="Threshold probability", ylabel="Net benefit", ylim=(-0.05, top + 0.05))
    ax.legend(fontsize=8)
    return fig
