"""Harrell's and Uno's concordance index in O(n log n), with a CI and a paired comparison.

Conventions
-----------
``risk`` is higher for an earlier event. A pair ``(i, j)`` is *comparable* when ``i`` had the event
and ``t_i < t_j``, or ``t_i == t_j`` with ``i`` an event and ``j`` censored (the rule of R's
``survival::concordance`` and of scikit-survival's ``concordance_index_censored``). A comparable
pair is concordant when ``risk_i > risk_j``, tied when ``risk_i == risk_j`` (exact equality; counts
1/2), discordant otherwise. lifelines' ``concordance_index`` wants a *survival-like* score, so
``lifelines.utils.concordance_index(time, -risk, event)`` equals ``concordance(time, event, risk)``.

Algorithm
---------
Per-patient pair counts come from a dominance count over (time order, risk rank) done bit by bit
on the risk ranks (a wavelet-matrix pass: ``ceil(log2 n)`` vectorised O(n) sweeps), so the whole
estimate costs one sort plus O(n log n) array work, without numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays

Method = Literal["harrell", "uno"]
CIMethod = Literal["ij", "bootstrap", "none"]
_PAIRWISE_MAX_N = 2000  # bootstrap through an n x n pair matrix up to this size


@dataclass(frozen=True)
class Concordance:
    """A concordance index with its confidence interval.

    Attributes
    ----------
    estimate : float
        The C-index in [0, 1]; 0.5 = no discrimination.
    low, high : float
        Bounds of the ``1 - alpha`` confidence interval (NaN when ``ci="none"``).
    se : float
        Standard error (infinitesimal jackknife or bootstrap SD; NaN when ``ci="none"``).
    n_comparable, n_concordant, n_tied_risk : int
        Pair counts (unweighted; for Uno's C only pairs whose event precedes ``tau``).
    method : str
        ``"harrell"`` or ``"uno"``.
    ci_method : str
        ``"ij"``, ``"bootstrap"`` or ``"none"``.
    """

    estimate: float
    low: float
    high: float
    se: float
    n_comparable: int
    n_concordant: int
    n_tied_risk: int
    method: str
    ci_method: str


@dataclass(frozen=True)
class ConcordanceComparison:
    """Paired comparison of two C-indices on the same patients (``a - b``).

    Attributes
    ----------
    estimate_a, estimate_b : float
        The two C-indices.
    difference : float
        ``estimate_a - estimate_b``.
    se : float
        Standard error of the difference.
    z : float
        ``difference / se``.
    p_value : float
        Two-sided p-value of H0: equal concordance (normal approximation for ``"ij"``;
        for ``"bootstrap"`` the same Wald form with the bootstrap SE).
    low, high : float
        ``1 - alpha`` confidence interval of the difference.
    ci_method : str
        ``"ij"`` or ``"bootstrap"``.
    """

    estimate_a: float
    estimate_b: float
    difference: float
    se: float
    z: float
    p_value: float
    low: float
    high: float
    ci_method: str


@dataclass(frozen=True)
class _Setup:
    """Sorted keys shared by every evaluation on one data set (weights vary)."""

    time_rank: NDArray[np.int64]
    event: NDArray[np.bool_]
    rank: NDArray[np.int64]
    n_ranks: int
    g: NDArray[np.float64]  # per-patient weight as first (event) member: 1 or IPCW^2


# --------------------------------------------------------------------------- kernels


def _before_counts(
    rank: NDArray[np.int64], weight: NDArray[np.float64], n_ranks: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted counts of earlier elements with smaller and with equal rank.

    Elements are given in their sweep order. Returns ``less[q] = sum_{p<q} w_p [r_p < r_q]`` and
    ``equal[q] = sum_{p<q} w_p [r_p == r_q]`` in that same order.
    """
    n = rank.size
    acc = np.zeros(n)  # running "less" count, kept in the current arrangement
    idx, r, w = np.arange(n, dtype=np.int64), rank.astype(np.int64), weight
    for k in range(max(1, int(n_ranks - 1).bit_length()) - 1, -1, -1):
        ones = (r >> k) & 1
        zero_w = w * (1 - ones)
        excl = np.cumsum(zero_w)
        excl -= zero_w
        acc += ones * (excl - excl[_run_starts(r >> (k + 1))])
        is_one = ones.astype(bool)
        perm = np.concatenate((np.flatnonzero(~is_one), np.flatnonzero(is_one)))
        idx, r, w, acc = idx[perm], r[perm], w[perm], acc[perm]
    excl = np.cumsum(w) - w
    less, equal = np.empty(n), np.empty(n)
    less[idx] = acc
    equal[idx] = excl - excl[_run_starts(r)]
    return less, equal


def _run_starts(key: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of the first element of each element's run of equal consecutive keys."""
    new = np.empty(key.size, dtype=bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return starts[np.cumsum(new) - 1]


def _sweep(
    s: _Setup, order: NDArray[np.int64], rank: NDArray[np.int64], w_before: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Count earlier elements in ``order``, minus same-time events (never comparable).

    Returns (less, equal, total) per patient in the original indexing.
    """
    r, w, ev = rank[order], w_before[order], s.event[order]
    less, equal = _before_counts(r, w, s.n_ranks)
    total = np.cumsum(w) - w
    grp = (s.time_rank[order] * 2 + ev) * s.n_ranks  # same time & both events
    same_ev = w * ev
    excl_ev = np.cumsum(same_ev) - same_ev
    t_start = _run_starts(s.time_rank[order] * 2 + ev)
    r_start = _run_starts(grp + r)
    total = total - np.where(ev, excl_ev - excl_ev[t_start], 0.0)
    equal = equal - np.where(ev, excl_ev - excl_ev[r_start], 0.0)
    out = [np.empty_like(less) for _ in range(3)]
    for o, v in zip(out, (less, equal, total), strict=True):
        o[order] = v
    return out[0], out[1], out[2]


def _first_member(s: _Setup, w: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """For each event i: weighted concordant, tied and comparable partners j (later times)."""
    key = ((s.time_rank.max() - s.time_rank) * 2 + s.event) * s.n_ranks + (s.n_ranks - 1 - s.rank)
    order = np.argsort(key, kind="stable")
    return _sweep(s, order, s.rank, w)


def _second_member(s: _Setup, v: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """For each patient j: weighted events i earlier than j with higher, equal and any risk."""
    neg = s.n_ranks - 1 - s.rank
    key = (s.time_rank * 2 + ~s.event) * s.n_ranks + (s.n_ranks - 1 - neg)
    order = np.argsort(key, kind="stable")
    return _sweep(s, order, neg, v * s.event)


def _setup(
    time: NDArray[np.float64],
    event: NDArray[np.bool_],
    risk: NDArray[np.float64],
    g: NDArray[np.float64],
) -> _Setup:
    _, time_rank = np.unique(time, return_inverse=True)
    uniq, rank = np.unique(risk, return_inverse=True)
    return _Setup(time_rank.astype(np.int64), event, rank.astype(np.int64), int(uniq.size), g)


def _ratio_and_influence(
    s: _Setup, influence: bool
) -> tuple[float, NDArray[np.float64] | None, tuple[int, int, int]]:
    """C-index at unit frequency weights; with ``influence`` also dC/dw_k (IJ)."""
    ones = np.ones(s.rank.size)
    less, equal, comp = _first_member(s, ones)
    v = s.g * s.event
    num_k, den_k = v * (less + 0.5 * equal), v * comp
    den = den_k.sum()
    if den <= 0:
        raise InputError(
            "time/event", "no comparable pairs", "need at least one event before a later time"
        )
    c = float(num_k.sum() / den)
    pos = v > 0
    counts = (int(comp[pos].sum()), int(less[pos].sum()), int(equal[pos].sum()))
    if not influence:
        return c, None, counts
    less2, equal2, comp2 = _second_member(s, s.g)
    d_num = num_k + less2 + 0.5 * equal2
    d_den = den_k + comp2
    return c, (d_num - c * d_den) / den, counts


# --------------------------------------------------------------------------- bootstrap


def _pair_matrices(s: _Setup) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Dense kernel K (concordance credit) and M (comparable) for small n, first member on rows."""
    ti, tj = s.time_rank[:, None], s.time_rank[None, :]
    later = (tj > ti) | ((tj == ti) & ~s.event[None, :])
    comp = later & s.event[:, None] & (s.g[:, None] > 0)
    ri, rj = s.rank[:, None], s.rank[None, :]
    kern = np.where(comp, (rj < ri) + 0.5 * (rj == ri), 0.0) * s.g[:, None]
    return kern, comp * s.g[:, None]


def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.float64]:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _boot_replicates(
    setups: list[_Setup], n_boot: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """C-index replicates (n_boot, len(setups)) on shared resamples of the patients."""
    n = setups[0].rank.size
    weights = _boot_weights(n, n_boot, rng)
    out = np.empty((n_boot, len(setups)))
    for col, s in enumerate(setups):
        if n <= _PAIRWISE_MAX_N:
            kern, comp = _pair_matrices(s)
            for lo in range(0, n_boot, 256):
                w = weights[lo : lo + 256]
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[lo : lo + 256, col] = ((w @ kern) * w).sum(1) / ((w @ comp) * w).sum(1)
        else:
            for b in range(n_boot):
                out[b, col] = _weighted_c(s, weights[b])
    return out


def _weighted_c(s: _Setup, w: NDArray[np.float64]) -> float:
    """C-index with frequency weights ``w`` (a bootstrap replicate), via the O(n log n) sweep."""
    less, equal, comp = _first_member(s, w)
    v = w * s.g * s.event
    den = (v * comp).sum()
    return float((v * (less + 0.5 * equal)).sum() / den) if den > 0 else np.nan


# --------------------------------------------------------------------------- public


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_options(method: str, ci: str, alpha: float, n_boot: int) -> None:
    if method not in ("harrell", "uno"):
        raise InputError("method", f"unknown method {method!r}", "use 'harrell' or 'uno'")
    if ci not in ("ij", "bootstrap", "none"):
        raise InputError("ci", f"unknown CI method {ci!r}", "use 'ij', 'bootstrap' or 'none'")
    if not 0 < alpha < 1:
        raise InputError("alpha", f"must be in (0, 1), got {alpha}", "use e.g. 0.05")
    if ci == "bootstrap" and n_boot < 10:
        raise InputError("n_boot", f"too few replicates ({n_boot})", "use at least 200")


def _ipcw_squared(
    time: NDArray[np.float64],
    event: NDArray[np.bool_],
    tau: float | None,
    train: tuple[Any, Any] | None,
) -> NDArray[np.float64]:
    """Uno's weights G(t_i)^-2 for events (0 beyond ``tau``), censoring KM as scikit-survival."""
    from sksurv.nonparametric import CensoringDistributionEstimator
    from sksurv.util import Surv

    t_tr, e_tr = survival_arrays(*train) if train is not None else (time, event)
    cens = CensoringDistributionEstimator().fit(Surv.from_arrays(e_tr, t_tr))
    keep = time < tau if tau is not None else np.ones(time.size, dtype=bool)
    try:
        ipcw = cens.predict_ipcw(Surv.from_arrays(event[keep], time[keep]))
    except ValueError as err:
        raise InputError(
            "tau",
            "censoring survival is 0 at some event times",
            "set tau below the last follow-up time",
        ) from err
    g = np.zeros(time.size)
    g[keep] = ipcw**2
    return g


def _prepare(
    time: Any, event: Any, risk: Any, method: str, tau: float | None, train: tuple[Any, Any] | None
) -> _Setup:
    t, e, r = survival_arrays(time, event, risk, names=("risk",))
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise InputError("tau", f"must be a positive time, got {tau}", "use e.g. 24 (months)")
    g = _ipcw_squared(t, e, tau, train) if method == "uno" else np.ones(t.size)
    return _setup(t, e, r, g)


def _interval(
    c: float, se: float, reps: NDArray[np.float64] | None, alpha: float
) -> tuple[float, float]:
    if reps is not None:
        lo, hi = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)
    z = float(stats.norm.ppf(1 - alpha / 2))
    return max(0.0, c - z * se), min(1.0, c + z * se)


def concordance(
    time: Any,
    event: Any,
    risk: Any,
    *,
    method: Method = "harrell",
    tau: float | None = None,
    ci: CIMethod = "ij",
    n_boot: int = 1000,
    alpha: float = 0.05,
    rng: np.random.Generator | int | None = None,
    train: tuple[Any, Any] | None = None,
) -> Concordance:
    """Concordance between a risk score and observed survival (Harrell 1982; Uno et al. 2011).

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time, months (any unit, >= 0).
    event : array-like (n,)
        1/True when progression was observed, 0/False when censored.
    risk : array-like (n,)
        Risk score; higher = earlier event.
    method : {"harrell", "uno"}
        Harrell's C, or Uno's C with inverse-probability-of-censoring weights ``G(t_i)^-2`` and
        truncation at ``tau`` (as scikit-survival's ``concordance_index_ipcw``).
    tau : float, optional
        Truncation time for Uno's C, same unit as ``time``: only events before ``tau`` count as
        the earlier member of a pair. Ignored by Harrell's C.
    ci : {"ij", "bootstrap", "none"}
        ``"ij"``: Wald interval with the infinitesimal-jackknife SE (the variance R's
        ``survival::concordance`` reports; IPCW weights held fixed for Uno's C).
        ``"bootstrap"``: percentile interval of ``n_boot`` patient resamples (IPCW held fixed).
    n_boot : int
        Bootstrap replicates.
    alpha : float
        1 - confidence level.
    rng : numpy Generator, int or None
        Randomness of the bootstrap.
    train : (time, event), optional
        Training outcomes for the censoring distribution of Uno's C; default: this sample.

    Returns
    -------
    Concordance
        Estimate, CI, SE and pair counts.
    """
    _check_options(method, ci, alpha, n_boot)
    s = _prepare(time, event, risk, method, tau, train)
    c, infl, (n_comp, n_conc, n_tied) = _ratio_and_influence(s, ci == "ij")
    reps, se = None, np.nan
    if ci == "ij" and infl is not None:
        se = float(np.sqrt(np.sum(infl**2)))
    elif ci == "bootstrap":
        reps = _boot_replicates([s], n_boot, _as_rng(rng))[:, 0]
        se = float(np.nanstd(reps, ddof=1))
    low, high = _interval(c, se, reps, alpha) if ci != "none" else (np.nan, np.nan)
    return Concordance(c, low, high, se, n_comp, n_conc, n_tied, method, ci)


def compare_concordance(
    time: Any,
    event: Any,
    risk_a: Any,
    risk_b: Any,
    *,
    method: Method = "harrell",
    tau: float | None = None,
    ci: Literal["ij", "bootstrap"] = "ij",
    n_boot: int = 1000,
    alpha: float = 0.05,
    rng: np.random.Generator | int | None = None,
) -> ConcordanceComparison:
    """Paired test of two C-indices on the same patients.

    The SE of ``C_a - C_b`` is the infinitesimal jackknife of the difference,
    ``sqrt(sum_k (U_k^a - U_k^b)^2)`` with ``U_k = dC/dw_k`` — the same first-order (Hajek
    projection) variance that Kang et al. 2015 (R ``compareC``) derive for the U-statistic;
    asymptotically equivalent, not digit-identical (compareC uses its own finite-sample
    U-statistic variance). ``ci="bootstrap"`` resamples patients jointly for both scores.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time (months) and event indicator.
    risk_a, risk_b : array-like (n,)
        The two risk scores (higher = earlier event).
    method, tau, n_boot, alpha, rng
        As in :func:`concordance`.
    ci : {"ij", "bootstrap"}
        How the SE of the difference is obtained.

    Returns
    -------
    ConcordanceComparison
        Difference ``a - b``, its SE, z, two-sided p and CI.
    """
    _check_options(method, ci, alpha, n_boot)
    sa = _prepare(time, event, risk_a, method, tau, None)
    sb = _prepare(time, event, risk_b, method, tau, None)
    ca, ia, _ = _ratio_and_influence(sa, ci == "ij")
    cb, ib, _ = _ratio_and_influence(sb, ci == "ij")
    if ci == "ij" and ia is not None and ib is not None:
        se = float(np.sqrt(np.sum((ia - ib) ** 2)))
    else:
        reps = _boot_replicates([sa, sb], n_boot, _as_rng(rng))
        se = float(np.nanstd(reps[:, 0] - reps[:, 1], ddof=1))
    diff = ca - cb
    z = diff / se if se > 0 else (0.0 if diff == 0 else np.inf)
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    p = float(2 * stats.norm.sf(abs(z)))
    return ConcordanceComparison(ca, cb, diff, se, float(z), p, diff - half, diff + half, ci)
