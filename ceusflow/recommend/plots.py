"""The paper's Fig. 5 as a plot: both stratifications of each group and the swap candidates.

Functions return a matplotlib ``Figure`` and never save or show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ceusflow.conventions import TREATMENTS
from ceusflow.errors import InputError
from ceusflow.recommend.cross import CrossStratification, SwapBenefit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_SWAP, _LR, _HR = "#d62728", "#9ecae1", "#6b6b6b"


def _other(group: str) -> str:
    return next((t for t in TREATMENTS if t != group), "other")


def _format_p(p: float) -> str:
    if not np.isfinite(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _scatter(ax: Axes, cross: CrossStratification, group: str) -> None:
    """Own vs other signature, both cut-points, swap candidates in red."""
    swap = cross.swap
    ax.scatter(cross.signature_own[~swap], cross.signature_other[~swap], s=10, c=_HR, alpha=0.6, label="not swap")
    ax.scatter(cross.signature_own[swap], cross.signature_other[swap], s=14, c=_SWAP,
               label=f"oriHR-reLR (n = {cross.n_swap})")
    ax.axvline(cross.cut_own, color="k", lw=0.8, ls="--")
    ax.axhline(cross.cut_other, color="k", lw=0.8, ls="--")
    ax.set(xlabel=f"R-{group} signature (ori)", ylabel=f"R-{_other(group)} signature (re)",
           title=f"{group} group: two stratifications")
    ax.legend(fontsize=7, loc="best")


def _bars(ax: Axes, cross: CrossStratification, group: str) -> None:
    """Stacked bars: each ori stratum split into reLR / reHR, with n and share of the ori stratum."""
    t = cross.table
    for x, ori in enumerate(("LR", "HR")):
        bottom = 0.0
        for re in ("LR", "HR"):
            row = t.loc[f"ori{ori}-re{re}"]
            swap = (ori, re) == ("HR", "LR")
            color = _SWAP if swap else (_LR if re == "LR" else _HR)
            label = "reLR (swap candidates)" if swap else (f"re{re}" if x == 0 else None)
            ax.bar(x, row["n"], bottom=bottom, color=color, width=0.6, label=label)
            if row["n"]:
                ax.text(x, bottom + row["n"] / 2, f"{int(row['n'])}\n({100 * row['share_of_ori']:.1f}%)",
                        ha="center", va="center", fontsize=7)
            bottom += float(row["n"])
    ax.set_xticks([0, 1], [f"{group}-oriLR", f"{group}-oriHR"])
    ax.set(ylabel="patients", title=f"re-stratified by R-{_other(group)} ({_format_p(cross.mwu_re.p_value)})")
    ax.legend(fontsize=7)


def _paired(ax: Axes, benefit: SwapBenefit | None, group: str) -> None:
    """Candidates' 2-year PFS under the own and the other nomogram, one line per patient."""
    ax.set_xticks([0, 1], [f"{group} nomogram", f"{_other(group)} nomogram"])
    ax.set(ylabel="predicted 2-year PFS", xlim=(-0.4, 1.4))
    if benefit is None or benefit.n == 0:
        ax.set_title("swap candidates: none")
        return
    for own, other in zip(benefit.pfs2y_own, benefit.pfs2y_other, strict=True):
        ax.plot([0, 1], [own, other], color=_SWAP, alpha=0.3, lw=0.8)
    ax.scatter(np.zeros(benefit.n), benefit.pfs2y_own, c=_HR, s=12, zorder=3)
    ax.scatter(np.ones(benefit.n), benefit.pfs2y_other, c=_SWAP, s=12, zorder=3)
    ax.errorbar([0, 1], [benefit.mean_own, benefit.mean_other], yerr=[benefit.sd_own, benefit.sd_other],
                fmt="o-", color="k", capsize=4, zorder=4)
    ax.set_title(f"swap candidates (n = {benefit.n}): {benefit.mean_own:.2f} → {benefit.mean_other:.2f}, "
                 f"paired t {_format_p(benefit.t_p_value)}", fontsize=9)


def plot_cross_stratification(cross: Mapping[str, CrossStratification],
                              benefit: Mapping[str, SwapBenefit] | None = None) -> Figure:
    """The paper's Fig. 5: per group, both stratifications, the swap candidates and their 2-year PFS.

    Parameters
    ----------
    cross : mapping {"RFA": CrossStratification, "SR": CrossStratification}
        Cross-stratification of each treatment group (one or both).
    benefit : mapping {"RFA": SwapBenefit, "SR": SwapBenefit}, optional
        Swap candidates' 2-year PFS under both nomograms (:func:`swap_benefit`); the right
        column shows them as paired dots joined by lines, with mean ± SD.

    Returns
    -------
    matplotlib.figure.Figure
        One row per group: signature scatter with both cut-points, stratum bars (candidates
        in red), paired 2-year PFS.
    """
    from matplotlib.figure import Figure

    if not cross:
        raise InputError("cross", "is empty", "pass {'RFA': ..., 'SR': ...}")
    fig = Figure(figsize=(14, 4.2 * len(cross)), layout="constrained")
    axes = fig.subplots(len(cross), 3, squeeze=False)
    for row, (group, result) in zip(axes, cross.items(), strict=True):
        _scatter(row[0], result, group)
        _bars(row[1], result, group)
        _paired(row[2], (benefit or {}).get(group), group)
    return fig
