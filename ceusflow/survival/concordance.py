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
Times and risks are ranked once and the patients put in time order; per-patient counts of
concordant, tied and comparable partners then come from one Fenwick-tree pass over time order
(numba, :mod:`ceusflow.survival._concordance_numba`), or, without numba, from a vectorised
wavelet-matrix dominance count (:mod:`ceusflow.survival._pair_counts`): O(n log n) either way,
identical counts (tested). With numba the ranks come from a hash look-up into the sorted
distinct values and the time order from a counting sort, with no argsort, and Harrell's C from
an integer Fenwick pass without per-patient arrays (:mod:`ceusflow.survival._concordance_kernels`).
The infinitesimal-jackknife SE needs a second pass for each patient
as the later member; the bootstrap reuses the sort for every replicate. The paired comparison
(:func:`compare_concordance`) implements Kang et al. 2015 (R ``compareC``) in
:mod:`ceusflow.survival._kang`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays
from ceusflow.survival._kang import kang_variance
from ceusflow.survival._pair_counts import (
    Setup,
    first_member,
    first_member_sums,
    make_setup,
    numba_kernels,
    second_member,
)

Method = Literal["harrell", "uno"]
CIMethod = Literal["ij", "bootstrap", "none"]
CompareMethod = Literal["kang", "ij", "bootstrap"]
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
        Two-sided p-value of H0: equal concordance, ``2 (1 - Phi(|z|))`` (as compareC).
    low, high : float
        ``1 - alpha`` Wald confidence interval of the difference.
    ci_method : str
        ``"kang"``, ``"ij"`` or ``"bootstrap"``.
    var_a, var_b, cov : float
        Estimated variances of the two C-indices and their covariance (compareC's
        ``est.varCxy``, ``est.varCxz``, ``est.cov`` for ``"kang"``).
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
    var_a: float = np.nan
    var_b: float = np.nan
    cov: float = np.nan


def _fast_kernels() -> ModuleType | None:
    """The argsort-free set-up and integer Harrell kernels, or None without numba."""
    if numba_kernels() is None:
        return None
    from ceusflow.survival import _concordance_kernels

    return _concordance_kernels


def _unit_totals(s: Setup, harrell: bool) -> tuple[float, ...]:
    """:func:`first_member_sums` at unit weights; integer counts for Harrell's C (``g = 1``)."""
    fast = _fast_kernels() if harrell else None
    if fast is None:
        return tuple(first_member_sums(s, np.ones(s.rank.size)))
    counts = fast.setup_counts(s.rank, s.time_starts, s.event_starts, s.n_ranks)
    return (*counts, *counts)


def _no_pairs() -> InputError:
    return InputError("time/event", "no comparable pairs", "need at least one event before a later time")


def _harrell_point(fast: ModuleType, time: Any, event: Any, risk: Any) -> Concordance:
    """Harrell's C without an interval, from integer pair counts (no per-patient set-up)."""
    t, e, r = survival_arrays(time, event, risk, names=("risk",))
    n_conc, n_tied, n_comp = fast.harrell_counts(t, e, r)
    if n_comp <= 0:
        raise _no_pairs()
    c = float((n_conc + 0.5 * n_tied) / n_comp)
    return Concordance(c, np.nan, np.nan, np.nan, n_comp, n_conc, n_tied, "harrell", "none")


def _ratio_and_influence(
    s: Setup, influence: bool, harrell: bool = False
) -> tuple[float, NDArray[np.float64] | None, tuple[int, int, int]]:
    """C-index at unit weights, pair counts, and with ``influence`` dC/dw_k per patient (IJ).

    ``harrell`` says that every first-member weight ``g`` is 1 (Harrell's C), which allows the
    integer kernel. The influence vector is in patient order (``k`` indexes the input rows).
    """
    lower, equal, den, n_lower, n_equal, n_comp = _unit_totals(s, harrell)
    if den <= 0:
        raise _no_pairs()
    c = float((lower + 0.5 * equal) / den)
    counts = (int(n_comp), int(n_lower), int(n_equal))
    if not influence:
        return c, None, counts
    ones = np.ones(s.rank.size)
    less, eq, comp = first_member(s, ones)
    v = s.g * s.event
    higher2, eq2, comp2 = second_member(s, s.g)
    d_num = v * (less + 0.5 * eq) + higher2 + 0.5 * eq2
    d_den = v * comp + comp2
    infl = np.empty(ones.size)
    infl[s.order] = (d_num - c * d_den) / den
    return c, infl, counts


# --------------------------------------------------------------------------- bootstrap


def _pair_matrices(s: Setup) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Dense kernel K (concordance credit) and M (comparable) for small n, first member on rows."""
    ti, tj = s.time_rank[:, None], s.time_rank[None, :]
    later = (tj > ti) | ((tj == ti) & ~s.event[None, :])
    comp = later & s.event[:, None] & (s.g[:, None] > 0)
    ri, rj = s.rank[:, None], s.rank[None, :]
    kern = np.where(comp, (rj < ri) + 0.5 * (rj == ri), 0.0) * s.g[:, None]
    return kern, comp * s.g[:, None]


def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Frequency weights (n_boot, n) of patient resamples with replacement."""
    draws = rng.integers(0, n, (n_boot, n)) + np.arange(n_boot)[:, None] * n
    return np.bincount(draws.ravel(), minlength=n * n_boot).reshape(n_boot, n).astype(float)


def _boot_replicates(setups: list[Setup], n_boot: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """C-index replicates (n_boot, len(setups)) on shared resamples of the patients."""
    n = setups[0].rank.size
    weights = _boot_weights(n, n_boot, rng)[:, setups[0].order]  # patients -> time order
    out = np.empty((n_boot, len(setups)))
    for col, s in enumerate(setups):
        if n <= _PAIRWISE_MAX_N and numba_kernels() is None:
            kern, comp = _pair_matrices(s)
            for lo in range(0, n_boot, 256):
                w = weights[lo : lo + 256]
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[lo : lo + 256, col] = ((w @ kern) * w).sum(1) / ((w @ comp) * w).sum(1)
        else:
            for b in range(n_boot):
                out[b, col] = _weighted_c(s, weights[b])
    return out


def _weighted_c(s: Setup, w: NDArray[np.float64]) -> float:
    """C-index with frequency weights ``w`` (time order; a bootstrap replicate), O(n log n)."""
    lower, equal, den = first_member_sums(s, w)[:3]
    return float((lower + 0.5 * equal) / den) if den > 0 else np.nan


# --------------------------------------------------------------------------- public


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_options(
    method: str, ci: str, alpha: float, n_boot: int, allowed: tuple[str, ...] = ("ij", "bootstrap", "none")
) -> None:
    if method not in ("harrell", "uno"):
        raise InputError("method", f"unknown method {method!r}", "use 'harrell' or 'uno'")
    if ci not in allowed:
        raise InputError("ci", f"unknown CI method {ci!r}", "use one of " + ", ".join(map(repr, allowed)))
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
    time: Any,
    event: Any,
    risk: Any,
    method: str,
    tau: float | None,
    train: tuple[Any, Any] | None,
    order: NDArray[np.int64] | None = None,
) -> Setup:
    t, e, r = survival_arrays(time, event, risk, names=("risk",))
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise InputError("tau", f"must be a positive time, got {tau}", "use e.g. 24 (months)")
    g = _ipcw_squared(t, e, tau, train) if method == "uno" else np.ones(t.size)
    fast = _fast_kernels() if order is None else None
    return fast.fast_setup(t, e, r, g) if fast is not None else make_setup(t, e, r, g, order)


def _interval(c: float, se: float, reps: NDArray[np.float64] | None, alpha: float) -> tuple[float, float]:
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
    if method == "harrell" and ci == "none" and (fast := _fast_kernels()) is not None:
        return _harrell_point(fast, time, event, risk)
    s = _prepare(time, event, risk, method, tau, train)
    c, infl, (n_comp, n_conc, n_tied) = _ratio_and_influence(s, ci == "ij", method == "harrell")
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
    ci: CompareMethod = "kang",
    n_boot: int = 1000,
    alpha: float = 0.05,
    rng: np.random.Generator | int | None = None,
) -> ConcordanceComparison:
    """Paired test of two C-indices on the same patients (Kang et al. 2015, R ``compareC``).

    ``ci="kang"`` (default, Harrell's C only) is compareC's ``compareC``/``vardiffC``: both C
    are ratios of two U-statistics, their unbiased U-statistic (co)variances are carried to
    ``C_a - C_b`` by the delta method, and ``z = (C_a - C_b) / SE`` is referred to the normal
    distribution. It reproduces compareC's published output (``docs/statistics.md``); it costs
    O(n^2) time for one cross-product (n = 10^4 in about a second). ``ci="ij"``: the
    infinitesimal jackknife of the difference, ``sqrt(sum_k (U_k^a - U_k^b)^2)`` with
    ``U_k = dC/dw_k`` (O(n log n); also for Uno's C). ``ci="bootstrap"``: SD of the difference
    over joint patient resamples.

    Parameters
    ----------
    time, event : array-like (n,)
        Follow-up time (months) and event indicator.
    risk_a, risk_b : array-like (n,)
        The two risk scores (higher = earlier event). compareC wants survival-like scores, so
        ``compareC(time, status, -risk_a, -risk_b)`` is the R equivalent.
    method, tau, n_boot, alpha, rng
        As in :func:`concordance`.
    ci : {"kang", "ij", "bootstrap"}
        How the SE of the difference is obtained.

    Returns
    -------
    ConcordanceComparison
        Difference ``a - b``, its SE, z, two-sided p, CI, and the variances and covariance of the
        two estimates.
    """
    _check_options(method, ci, alpha, n_boot, allowed=("kang", "ij", "bootstrap"))
    if ci == "kang" and method != "harrell":
        raise InputError("ci", "Kang's (compareC) variance is for Harrell's C", "use ci='ij' or 'bootstrap'")
    sa = _prepare(time, event, risk_a, method, tau, None)
    sb = _prepare(time, event, risk_b, method, tau, None, order=sa.order)
    if ci == "kang" and sa.rank.size < 4:
        raise InputError("time", f"{sa.rank.size} patients", "Kang's variance needs at least 4")
    ca, ia, _ = _ratio_and_influence(sa, ci == "ij", method == "harrell")
    cb, ib, _ = _ratio_and_influence(sb, ci == "ij", method == "harrell")
    if ci == "kang":
        kv = kang_variance(sa, sb)
        var_a, var_b, cov = kv.var_a, kv.var_b, kv.cov
    elif ia is not None and ib is not None:
        var_a, var_b, cov = float(ia @ ia), float(ib @ ib), float(ia @ ib)
    else:
        reps = _boot_replicates([sa, sb], n_boot, _as_rng(rng))
        m = np.cov(reps[np.isfinite(reps).all(1)], rowvar=False)
        var_a, var_b, cov = float(m[0, 0]), float(m[1, 1]), float(m[0, 1])
    return _comparison(ca, cb, var_a, var_b, cov, alpha, ci)


def _comparison(
    ca: float, cb: float, var_a: float, var_b: float, cov: float, alpha: float, ci: str
) -> ConcordanceComparison:
    """Wald test and interval of ``ca - cb``; a (numerically) negative variance is read as 0."""
    diff = ca - cb
    se = float(np.sqrt(max(var_a + var_b - 2 * cov, 0.0)))
    z = diff / se if se > 0 else (0.0 if diff == 0 else float(np.copysign(np.inf, diff)))
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    p = float(2 * stats.norm.sf(abs(z)))
    return ConcordanceComparison(ca, cb, diff, se, float(z), p, diff - half, diff + half, ci, var_a, var_b, cov)
