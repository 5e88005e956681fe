"""Kang et al. 2015 (R ``compareC``): U-statistic variance of the difference of two Harrell's C.

Harrell's C is ``(1 + t_xy / t_xx) / 2`` with two U-statistics of order 2 over ordered pairs
``i != j``: ``t_xx`` = mean of ``A_ij`` (1 when the pair is comparable) and ``t_xy`` = mean of
``B_ij`` (+1 concordant, -1 discordant, 0 tied risk or not comparable). For symmetric kernels
``K, L`` with row sums ``R_i = sum_j K_ij`` the unbiased (co)variance estimate of their means is

    (4 sum_i R^K_i R^L_i - 2 sum_ij K_ij L_ij - 2 (2n - 3) S_K S_L / (n (n - 1)))
    / (n (n - 1) (n - 2) (n - 3)),        S_K = sum_i R^K_i,

and the delta method carries it to ``C_a``, ``C_b`` and ``C_a - C_b`` (compareC's ``vardiffC``).
Row sums come from the O(n log n) pair counts; ``sum_ij B^a_ij B^b_ij`` needs every comparable
pair and is computed in blocks (O(n^2) time, O(n) memory per block row), as compareC itself is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ceusflow.survival._pair_counts import Setup, first_member, second_member

_BLOCK_PAIRS = 4_000_000  # pairs per block of the cross-product sum


@dataclass(frozen=True)
class KangVariance:
    """Delta-method variances of ``C_a``, ``C_b`` and their covariance (compareC's ``vardiffC``)."""

    var_a: float
    var_b: float
    cov: float

    @property
    def var_diff(self) -> float:
        """Variance of ``C_a - C_b``."""
        return self.var_a + self.var_b - 2 * self.cov


def _row_sums(s: Setup) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Row sums of the comparable kernel A and the sign kernel B, and ``sum_ij B_ij^2``."""
    ones = np.ones(s.rank.size)
    less, equal, comp = (np.where(s.event, c, 0.0) for c in first_member(s, ones))
    greater2, equal2, comp2 = second_member(s, ones * s.event)
    r_a = comp + comp2
    r_b = (2 * less + equal - comp) + (2 * greater2 + equal2 - comp2)
    return r_a, r_b, float(2 * (comp.sum() - equal.sum()))


def _sign_cross(sa: Setup, sb: Setup) -> float:
    """``sum_ij B^a_ij B^b_ij`` over ordered pairs (each comparable pair counted twice)."""
    ev = np.flatnonzero(sa.event)
    n = sa.rank.size
    step = max(1, _BLOCK_PAIRS // n)
    total = 0.0
    for lo in range(0, ev.size, step):
        i = ev[lo : lo + step, None]
        ti, tj = sa.time_rank[i], sa.time_rank[None, :]
        comp = (tj > ti) | ((tj == ti) & ~sa.event[None, :])
        da = np.sign(sa.rank[i] - sa.rank[None, :])
        db = np.sign(sb.rank[i] - sb.rank[None, :])
        total += float(np.sum(da * db, where=comp))
    return 2 * total


def _ucov(r_k: NDArray[np.float64], r_l: NDArray[np.float64], kl: float) -> float:
    """Unbiased covariance of two order-2 U-statistic means from row sums and ``sum K L``."""
    n = r_k.size
    s_k, s_l = r_k.sum(), r_l.sum()
    num = 4 * float(r_k @ r_l) - 2 * kl - 2 * (2 * n - 3) * s_k * s_l / (n * (n - 1))
    return num / (n * (n - 1) * (n - 2) * (n - 3))


def kang_variance(sa: Setup, sb: Setup) -> KangVariance:
    """Delta-method variances (compareC) of Harrell's C for two scores on the same patients.

    Parameters
    ----------
    sa, sb : Setup
        Pair-count setups of the two scores (same times and events, unit weights, n >= 4).

    Returns
    -------
    KangVariance
        ``var(C_a)``, ``var(C_b)`` and ``cov(C_a, C_b)``.
    """
    n = sa.rank.size
    r_xx, r_a, bb_a = _row_sums(sa)
    _, r_b, bb_b = _row_sums(sb)
    s_xx = r_xx.sum()  # = sum_ij A_ij^2, A being 0/1
    t11 = s_xx / (n * (n - 1))
    t12, t13 = r_a.sum() / (n * (n - 1)), r_b.sum() / (n * (n - 1))
    v11 = _ucov(r_xx, r_xx, s_xx)
    v12, v13 = _ucov(r_a, r_a, bb_a), _ucov(r_b, r_b, bb_b)
    c1112, c1113 = _ucov(r_xx, r_a, r_a.sum()), _ucov(r_xx, r_b, r_b.sum())
    c1213 = _ucov(r_a, r_b, _sign_cross(sa, sb))
    ga = np.array([1 / t11, -t12 / t11**2]) / 2  # gradient of C = (1 + t12/t11)/2
    gb = np.array([1 / t11, -t13 / t11**2]) / 2
    var_a = float(ga @ np.array([[v12, c1112], [c1112, v11]]) @ ga)
    var_b = float(gb @ np.array([[v13, c1113], [c1113, v11]]) @ gb)
    cov = float(ga @ np.array([[c1213, c1112], [c1113, v11]]) @ gb)
    return KangVariance(var_a, var_b, cov)
