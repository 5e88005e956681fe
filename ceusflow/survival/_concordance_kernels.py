"""Fast set-up of the concordance pair counts (numba): ranks by hashing, time order by buckets.

A data set with ``k`` distinct values is ranked with one SIMD ``np.unique`` (a sort of the
values only, no permutation) and one hash-table look-up per patient; the time order is then a
stable counting sort on ``(time rank, event)``, censored first within a time. This replaces the
two ``argsort`` calls and the regrouping pass of :func:`ceusflow.survival._pair_counts.make_setup`
(same :class:`~ceusflow.survival._pair_counts.Setup` up to the order of patients that share
both time and event status, which no count depends on). With many distinct values (more than
``HASH_MAX_VALUES``, or a strided sample at least 90% distinct), where the hash table would no
longer fit the cache, the ranks come from ``argsort`` instead.

:func:`harrell_counts` gives Harrell's pair counts straight from the data (ranks, counting sort
of the risk ranks, one integer Fenwick-tree pass, no per-patient arrays); :func:`setup_counts`
runs the same pass on a :class:`Setup`.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from ceusflow.survival._concordance_numba import dense_rank
from ceusflow.survival._pair_counts import Setup

HASH_MAX_VALUES = 1 << 14  # largest number of distinct values ranked through the hash table
_SAMPLE = 2048  # values looked at to guess whether nearly all values are distinct
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier
_NEG_ZERO = np.uint64(1 << 63)  # bits of -0.0, looked up as 0.0


@njit(cache=True)
def _hash_ranks(x: NDArray[np.float64], uniq: NDArray[np.float64]) -> NDArray[np.int32]:
    """Position of each ``x`` in its sorted distinct values ``uniq`` (open addressing on bits)."""
    bits = 1
    while (1 << bits) < 2 * uniq.size:
        bits += 1
    shift, mask = np.uint64(64 - bits), (1 << bits) - 1
    keys, vals = np.zeros(1 << bits, dtype=np.uint64), np.full(1 << bits, -1, dtype=np.int32)
    ub = uniq.view(np.uint64)
    for r in range(uniq.size):
        b = np.uint64(0) if ub[r] == _NEG_ZERO else ub[r]
        h = np.int64((b * _GOLDEN) >> shift)
        while vals[h] >= 0:
            h = (h + 1) & mask
        keys[h], vals[h] = b, r
    xb, out = x.view(np.uint64), np.empty(x.size, dtype=np.int32)
    for i in range(x.size):
        b = np.uint64(0) if xb[i] == _NEG_ZERO else xb[i]
        h = np.int64((b * _GOLDEN) >> shift)
        while keys[h] != b or vals[h] < 0:
            h = (h + 1) & mask
        out[i] = vals[h]
    return out


def _mostly_distinct(x: NDArray[np.float64]) -> bool:
    """Whether a strided sample of ``x`` is at least 90% distinct (then argsort beats hashing)."""
    sample = x[:: max(1, x.size // _SAMPLE)]
    return sample.size >= _SAMPLE // 2 and np.unique(sample).size > 0.9 * sample.size


def dense_ranks(x: NDArray[np.float64]) -> tuple[NDArray[np.integer], int]:
    """Dense 0-based ranks of ``x`` (equal values share a rank) and the number of distinct values.

    Parameters
    ----------
    x : ndarray of float64 (n,)
        Finite values (``-0.0 == 0.0``).

    Returns
    -------
    rank : ndarray of int32 (hashed) or int64 (argsort) (n,)
    n_ranks : int
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not _mostly_distinct(x):
        uniq = np.unique(x)
        if uniq.size <= HASH_MAX_VALUES:
            return _hash_ranks(x, uniq), int(uniq.size)
    rank, n_ranks = dense_rank(np.argsort(x), x)
    return rank, int(n_ranks)


@njit(cache=True)
def _bucket_starts(time_rank: NDArray[np.integer], event: NDArray[np.bool_], n_times: int) -> NDArray[np.int64]:
    """First position of each bucket ``2 * time rank + event`` in time order, then n (2 n_times + 1)."""
    first = np.zeros(2 * n_times + 1, dtype=np.int64)
    for i in range(time_rank.size):
        first[2 * time_rank[i] + event[i] + 1] += 1
    for b in range(2 * n_times):
        first[b + 1] += first[b]
    return first


@njit(cache=True)
def _bucket_order(
    time_rank: NDArray[np.integer],
    event: NDArray[np.bool_],
    n_times: int,
    rank: NDArray[np.integer],
    g: NDArray[np.float64],
) -> tuple[NDArray[np.int64], ...]:
    """Stable counting sort on ``(time rank, event)``: censored before events within a time.

    Returns, in that time order, the patient of each position, its time rank, the first position
    of each time followed by n, the first event position of each time, the risk ranks and ``g``;
    the events in order are ``position >= mids`` of its time.
    """
    first = _bucket_starts(time_rank, event, n_times)
    starts, mids = first[0::2].copy(), first[1::2].copy()
    n = time_rank.size
    order, time_t, rank_t, g_t = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    for i in range(n):
        b = 2 * time_rank[i] + event[i]
        p = first[b]
        first[b] = p + 1
        order[p], time_t[p], rank_t[p], g_t[p] = i, time_rank[i], rank[i], g[i]
    return order, time_t, starts, mids, rank_t, g_t


def fast_setup(
    time: NDArray[np.float64], event: NDArray[np.bool_], risk: NDArray[np.float64], g: NDArray[np.float64]
) -> Setup:
    """The :class:`Setup` of :func:`~ceusflow.survival._pair_counts.make_setup`, without argsort.

    Parameters
    ----------
    time, event, risk, g : ndarray (n,)
        Patient-ordered follow-up, event indicator, risk score and first-member weight.
    """
    time_rank, n_times = dense_ranks(time)
    rank, n_ranks = dense_ranks(risk)
    order, time_t, starts, mids, rank_t, g_t = _bucket_order(time_rank, event, n_times, rank, g)
    return Setup(order, time_t, starts, mids, event[order], rank_t, n_ranks, g_t)


def harrell_counts(
    time: NDArray[np.float64], event: NDArray[np.bool_], risk: NDArray[np.float64]
) -> tuple[int, int, int]:
    """Concordant, tied-risk and comparable pair counts of Harrell's C, straight from the data.

    Parameters
    ----------
    time, event, risk : ndarray (n,)
        Follow-up, event indicator and risk score, patient order.

    Returns
    -------
    n_concordant, n_tied_risk, n_comparable : int
    """
    time_rank, n_times = dense_ranks(time)
    rank, n_ranks = dense_ranks(risk)
    return _counts_from_ranks(time_rank, event, n_times, rank, n_ranks)


@njit(cache=True)
def _counts_from_ranks(
    time_rank: NDArray[np.integer], event: NDArray[np.bool_], n_times: int, rank: NDArray[np.integer], n_ranks: int
) -> tuple[int, int, int]:
    """Counting sort of the risk ranks into time order, then :func:`setup_counts`."""
    first = _bucket_starts(time_rank, event, n_times)
    starts, mids = first[0::2].copy(), first[1::2].copy()
    rank_t = np.empty(rank.size, dtype=rank.dtype)
    for i in range(rank.size):
        b = 2 * time_rank[i] + event[i]
        rank_t[first[b]] = rank[i]
        first[b] += 1
    return setup_counts(rank_t, starts, mids, n_ranks)


@njit(cache=True)
def setup_counts(
    rank: NDArray[np.integer], starts: NDArray[np.int64], mids: NDArray[np.int64], n_ranks: int
) -> tuple[int, int, int]:
    """Concordant, tied-risk and comparable pair counts at unit weights (Fenwick tree, integers).

    Arrays as in :class:`Setup` (time order, censored first within a time); times are visited
    from the latest, so the tree holds every later patient and the same-time censored ones.
    """
    tree, point = np.zeros(n_ranks + 1, dtype=np.int64), np.zeros(n_ranks, dtype=np.int64)
    conc, tied, comp, total = 0, 0, 0, 0
    for k in range(starts.size - 2, -1, -1):
        lo, mid, hi = starts[k], mids[k], starts[k + 1]
        for p in range(lo, mid):
            _add_one(tree, point, rank[p])
        total += mid - lo
        for p in range(mid, hi):
            conc += _below_int(tree, rank[p])
            tied += point[rank[p]]
        comp += total * (hi - mid)
        for p in range(mid, hi):
            _add_one(tree, point, rank[p])
        total += hi - mid
    return conc, tied, comp


@njit(cache=True, inline="always")
def _add_one(tree: NDArray[np.int64], point: NDArray[np.int64], r: int) -> None:
    point[r] += 1
    i = r + 1
    while i < tree.size:
        tree[i] += 1
        i += i & -i


@njit(cache=True, inline="always")
def _below_int(tree: NDArray[np.int64], r: int) -> int:
    s, i = 0, r
    while i > 0:
        s += tree[i]
        i -= i & -i
    return s
