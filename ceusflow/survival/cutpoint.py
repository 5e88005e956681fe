"""Cut-point of a risk score by the maximally selected log-rank statistic (R ``maxstat``).

The honest form of X-tile: every cut between the ``min_prop`` and ``max_prop`` quantiles is tried,
the largest standardized log-rank statistic wins, and its p-value is corrected for the search
(Lausen & Schumacher 1992; Lausen, Sauerbrei & Schumacher 1994; or a permutation test).
Choose the cut on training data only and apply it unchanged to validation data (:func:`stratify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ceusflow.errors import InputError
from ceusflow.survival._inputs import survival_arrays

PMethod = Literal["lau92", "lau94", "permutation", "none"]


@dataclass(frozen=True)
class Cutpoint:
    """Result of a maximally selected log-rank search.

    Attributes
    ----------
    threshold : float
        Selected cut, in score units: patients with ``score > threshold`` are high risk
        (``threshold`` is the largest score of the low group, as R ``maxstat`` reports it).
    statistic : float
        Maximum of the absolute standardized log-rank statistics ("M" in ``maxstat``).
    p_value : float
        Search-corrected p-value (NaN for ``pvalue="none"``).
    method : str
        ``"lau92"``, ``"lau94"``, ``"permutation"`` or ``"none"``.
    n_low, n_high : int
        Patients at or below / above the threshold.
    cuts : ndarray (k,)
        Every candidate threshold, increasing, score units.
    statistics : ndarray (k,)
        Absolute standardized log-rank statistic at each candidate.
    """

    threshold: float
    statistic: float
    p_value: float
    method: str
    n_low: int
    n_high: int
    cuts: NDArray[np.float64]
    statistics: NDArray[np.float64]


def logrank_scores(time: NDArray[np.float64], event: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Log-rank scores ``a_i = d_i - sum_{j: t_j <= t_i} d_j / (n - r_j + 1)``.

    ``r_j`` is the number of patients with time <= ``t_j`` (exactRankTests' ``cscores.Surv``,
    Hothorn & Lausen 2003), so tied times share one score.

    Parameters
    ----------
    time : ndarray (n,)
        Follow-up time.
    event : ndarray (n,) of bool
        Event indicator.

    Returns
    -------
    ndarray (n,)
        Scores summing to zero up to the tie treatment.
    """
    n = time.size
    order = np.argsort(time, kind="stable")
    r_max = np.searchsorted(time[order], time, side="right")  # rank with ties at max
    fact = event / (n - r_max + 1.0)
    return event - np.cumsum(fact[order])[r_max - 1]


def _standardized(a_sorted: NDArray[np.float64], m: NDArray[np.int64]) -> NDArray[np.float64]:
    """|S_m - E| / sqrt(V) for the first ``m`` sorted patients (exact permutation moments)."""
    n = a_sorted.size
    total = a_sorted.sum()
    mean = m / n * total
    var = m * (n - m) / (n**2 * (n - 1.0)) * (n * np.sum(a_sorted**2) - total**2)
    return np.abs(np.cumsum(a_sorted)[m - 1] - mean) / np.sqrt(var)


def _candidates(
    x_sorted: NDArray[np.float64], min_prop: float, max_prop: float
) -> NDArray[np.int64]:
    """Sizes ``m`` of the low group at each distinct score, within the proportion bounds."""
    n = x_sorted.size
    m = np.flatnonzero(np.r_[True, x_sorted[1:] != x_sorted[:-1]])
    m = m[(m >= max(1, np.floor(n * min_prop))) & (m <= np.floor(n * max_prop))]
    if m.size == 0:
        raise InputError(
            "score",
            "no cut point between min_prop and max_prop",
            "widen the proportions or use a score with more distinct values",
        )
    return m


def p_lausen92(b: float, min_prop: float = 0.1, max_prop: float = 0.9) -> float:
    """Lausen & Schumacher (1992) approximation of P(M > b) (limiting Brownian bridge).

    Parameters
    ----------
    b : float
        Observed maximal standardized statistic.
    min_prop, max_prop : float
        Proportion bounds of the search.

    Returns
    -------
    float
        The p-value, clipped to [0, 1].
    """
    db = stats.norm.pdf(b)
    ratio = max_prop * (1 - min_prop) / ((1 - max_prop) * min_prop)
    return float(np.clip(4 * db / b + db * (b - 1 / b) * np.log(ratio), 0.0, 1.0))


def p_lausen94(b: float, n: int, m: NDArray[np.int64]) -> float:
    """Lausen, Sauerbrei & Schumacher (1994) improved Bonferroni bound of P(M > b).

    Parameters
    ----------
    b : float
        Observed maximal standardized statistic.
    n : int
        Number of patients.
    m : ndarray of int
        Sizes of the low group at the candidate cuts, increasing.

    Returns
    -------
    float
        The p-value, clipped to [0, 1].
    """
    m1, m2 = m[:-1].astype(float), m[1:].astype(float)
    t = np.sqrt(1 - m1 * (n - m2) / ((n - m1) * m2))
    d = np.sum(np.exp(-(b**2) / 2) / np.pi * (t - (b**2 / 4 - 1) * t**3 / 6))
    return float(np.clip(2 * stats.norm.sf(b) + d, 0.0, 1.0))


def _p_permutation(
    a_sorted: NDArray[np.float64],
    m: NDArray[np.int64],
    observed: float,
    n_perm: int,
    rng: np.random.Generator,
) -> float:
    """Monte-Carlo p-value of the maximum: permute the scores over the sorted covariate."""
    exceed = 0
    for lo in range(0, n_perm, 256):
        perms = rng.permuted(np.tile(a_sorted, (min(256, n_perm - lo), 1)), axis=1)
        total = perms.sum(1, keepdims=True)
        n = a_sorted.size
        var = m * (n - m) / (n**2 * (n - 1.0)) * (n * np.sum(a_sorted**2) - a_sorted.sum() ** 2)
        stat = np.abs(np.cumsum(perms, axis=1)[:, m - 1] - m / n * total) / np.sqrt(var)
        exceed += int(np.sum(stat.max(1) >= observed * (1 - 1e-12)))
    return (1 + exceed) / (1 + n_perm)


def cutpoint(
    time: Any,
    event: Any,
    score: Any,
    *,
    min_prop: float = 0.1,
    max_prop: float = 0.9,
    pvalue: PMethod = "lau94",
    n_perm: int = 1000,
    rng: np.random.Generator | int | None = None,
) -> Cutpoint:
    """Maximally selected log-rank cut-point of a score (Hothorn & Lausen 2003, R ``maxstat``).

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time, months.
    event : array-like (n,)
        1/True for an observed event.
    score : array-like (n,)
        Continuous score (e.g. the model risk) to dichotomise.
    min_prop, max_prop : float
        Only cuts leaving at least ``floor(n * min_prop)`` and at most ``floor(n * max_prop)``
        patients in the low group are tried.
    pvalue : {"lau94", "lau92", "permutation", "none"}
        How the search-corrected p-value is obtained.
    n_perm : int
        Permutations for ``pvalue="permutation"``.
    rng : numpy Generator, int or None
        Randomness of the permutation test.

    Returns
    -------
    Cutpoint
        Threshold (score units), statistic, p-value, group sizes and the statistic profile.
    """
    t, e, x = survival_arrays(time, event, score, names=("score",))
    if not 0 < min_prop < max_prop < 1:
        raise InputError(
            "min_prop/max_prop", f"need 0 < {min_prop} < {max_prop} < 1", "use 0.1/0.9"
        )
    if pvalue not in ("lau92", "lau94", "permutation", "none"):
        raise InputError(
            "pvalue", f"unknown method {pvalue!r}", "use lau94, lau92, permutation or none"
        )
    if not e.any():
        raise InputError("event", "no events", "a log-rank cut needs at least one event")
    order = np.argsort(x, kind="stable")
    a_sorted, x_sorted = logrank_scores(t, e)[order], x[order]
    m = _candidates(x_sorted, min_prop, max_prop)
    profile = _standardized(a_sorted, m)
    best = int(np.argmax(profile))
    stat = float(profile[best])
    p = _p_value(pvalue, stat, a_sorted, m, min_prop, max_prop, n_perm, rng)
    n_low = int(m[best])
    return Cutpoint(
        float(x_sorted[n_low - 1]),
        stat,
        p,
        pvalue,
        n_low,
        x.size - n_low,
        x_sorted[m - 1].copy(),
        profile,
    )


def _p_value(
    pvalue: str,
    stat: float,
    a_sorted: NDArray[np.float64],
    m: NDArray[np.int64],
    min_prop: float,
    max_prop: float,
    n_perm: int,
    rng: np.random.Generator | int | None,
) -> float:
    if pvalue == "lau92":
        return p_lausen92(stat, min_prop, max_prop)
    if pvalue == "lau94":
        return p_lausen94(stat, a_sorted.size, m)
    if pvalue == "permutation":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return _p_permutation(a_sorted, m, stat, n_perm, gen)
    return float("nan")


def stratify(score: Any, threshold: float) -> NDArray[np.bool_]:
    """High-risk indicator ``score > threshold`` (a cut chosen on training data, applied as is).

    Parameters
    ----------
    score : array-like (n,)
        Scores of the patients to classify (training or validation), score units.
    threshold : float
        ``Cutpoint.threshold`` from the training data.

    Returns
    -------
    ndarray (n,) of bool
        True = high risk (score strictly above the threshold).
    """
    x = np.asarray(score, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise InputError(
            "score", "contains NaN or infinite values", "drop or impute those patients"
        )
    if not np.isfinite(threshold):
        raise InputError("threshold", f"must be finite, got {threshold}", "pass Cutpoint.threshold")
    return x > threshold
