"""Figures for survival curves: Kaplan–Meier with a numbers-at-risk table, time-dependent ROC.

Functions return a matplotlib ``Figure`` and never save or show it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ceusflow.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ceusflow.survival.kaplan_meier import LogRank
    from ceusflow.survival.td_auc import TimeAUC


def _axes(ax: Axes | None, bottom: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=(6.4, 4.8 + 2 * bottom))
    ax_new = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(bottom=0.1 + bottom)
    return fig, ax_new


def _format_p(p: float) -> str:
    return "log-rank p < 0.001" if p < 0.001 else f"log-rank p = {p:.3f}"


def _draw_curve(ax: Axes, curve: xr.Dataset, label: str) -> None:
    ok = np.isfinite(curve.survival.values)
    t = curve.time.values[ok]
    (line,) = ax.step(t, curve.survival.values[ok], where="post", label=label)
    ax.fill_between(
        t,
        curve.low.values[ok],
        curve.high.values[ok],
        step="post",
        alpha=0.2,
        color=line.get_color(),
        linewidth=0,
    )
    cens = (curve.censored.values[ok] > 0) & (t > 0)
    ax.plot(t[cens], curve.survival.values[ok][cens], "|", color=line.get_color(), markersize=8)


def _at_risk_table(ax: Axes, km: xr.Dataset) -> None:
    """Numbers at risk at the x tick times, one text row per group under the axes."""
    from matplotlib.transforms import blended_transform_factory

    ticks = [t for t in ax.get_xticks() if km.time.values[0] <= t <= km.time.values[-1]]
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.text(
        0.0,
        -0.16,
        "At risk",
        transform=ax.transAxes,
        ha="right",
        fontsize="small",
        fontweight="bold",
    )
    for row, group in enumerate(km.group.values):
        y = -0.23 - 0.07 * row
        ax.text(-0.02, y, str(group), transform=ax.transAxes, ha="right", fontsize="small")
        counts = _at_risk_at(km.sel(group=group), np.asarray(ticks))
        for t, n in zip(ticks, counts, strict=True):
            ax.text(t, y, f"{int(n)}", transform=trans, ha="center", fontsize="small")


def _at_risk_at(curve: xr.Dataset, ticks: np.ndarray) -> np.ndarray:
    """Patients still at risk at each tick (time >= tick): the next grid row's count."""
    times = curve.time.values
    idx = np.searchsorted(times, ticks, side="left")
    at = np.r_[curve.at_risk.values, 0.0]
    return at[idx]


def plot_kaplan_meier(
    km: xr.Dataset,
    *,
    ax: Axes | None = None,
    at_risk_table: bool = True,
    title: str | None = None,
    logrank: LogRank | None = None,
) -> Figure:
    """Kaplan–Meier curves with CI bands, censoring ticks and a numbers-at-risk table.

    Parameters
    ----------
    km : xarray.Dataset (group, time)
        Output of :func:`ceusflow.survival.kaplan_meier.kaplan_meier`; time in months.
    ax : matplotlib Axes, optional
        Axes to draw into (its figure is returned); a new Figure otherwise.
    at_risk_table : bool
        Write the numbers at risk at the x ticks under the axes.
    title : str, optional
        Axes title.
    logrank : LogRank, optional
        Adds "log-rank p = ..." to the legend.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not saved, not shown).
    """
    if not {"survival", "low", "high", "at_risk", "censored"} <= set(km.data_vars):
        raise InputError("km", "is not a kaplan_meier() Dataset", "pass kaplan_meier(...) output")
    n_groups = km.sizes["group"]
    fig, axes = _axes(ax, 0.07 * (n_groups + 1) if at_risk_table else 0.0)
    for group in km.group.values:
        _draw_curve(axes, km.sel(group=group), str(group))
    if logrank is not None:
        axes.plot([], [], " ", label=_format_p(logrank.p_value))
    axes.set(
        ylim=(0, 1.02),
        xlim=(0, float(km.time.max())),
        ylabel="Survival probability",
        xlabel=f"Time ({km.time.attrs.get('units', 'month')})",
    )
    axes.legend(loc="lower left", frameon=False)
    if title:
        axes.set_title(title)
    if at_risk_table:
        _at_risk_table(axes, km)
    return fig


def plot_td_roc(
    roc: xr.Dataset,
    *,
    auc: TimeAUC | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    label: Any = "model",
) -> Figure:
    """Time-dependent ROC curve at a horizon, with the diagonal and the AUC in the legend.

    Parameters
    ----------
    roc : xarray.Dataset (threshold)
        Output of :func:`ceusflow.survival.td_auc.td_roc` (``tpr``, ``fpr``).
    auc : TimeAUC, optional
        Its AUC and CI are written in the legend.
    ax : matplotlib Axes, optional
        Axes to draw into; a new Figure otherwise.
    title : str, optional
        Axes title; default "Time-dependent ROC at <horizon> months".
    label : str
        Legend label of the curve.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not saved, not shown).
    """
    if not {"tpr", "fpr"} <= set(roc.data_vars):
        raise InputError("roc", "is not a td_roc() Dataset", "pass td_roc(...) output")
    fig, axes = _axes(ax, 0.0)
    text = str(label)
    if auc is not None:
        text += f" (AUC {auc.estimate:.3f}"
        text += f", 95% CI {auc.low:.3f}-{auc.high:.3f})" if np.isfinite(auc.low) else ")"
    axes.plot(roc.fpr.values, roc.tpr.values, label=text)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="1 - specificity (dynamic controls)",
        ylabel="Sensitivity (cumulative cases, IPCW)",
        aspect="equal",
    )
    axes.legend(loc="lower right", frameon=False)
    horizon = roc.attrs.get("horizon")
    axes.set_title(title or (f"Time-dependent ROC at {horizon:g} months" if horizon else "ROC"))
    return fig
