"""numba kernels for the concordance pair counts: one Fenwick-tree (BIT) pass over time order.

All arrays are in the order of :class:`ceusflow.survival._pair_counts.Setup`: ascending time,
censored before events within one time.

Imported lazily by :mod:`ceusflow.survival._pair_counts`; without numba the numpy wavelet-matrix
kernels there are used instead (same counts, checked in the tests).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True)
def _add(tree: NDArray[np.float64], pos: int, w: float) -> None:
    i = pos + 1
    while i < tree.size:
        tree[i] += w
        i += i & -i


@njit(cache=True)
def _below(tree: NDArray[np.float64], pos: int) -> float:
    """Sum of the weights at ranks ``< pos``."""
    s, i = 0.0, pos
    while i > 0:
        s += tree[i]
        i -= i & -i
    return s


@njit(cache=True)
def _insert(
    tree: NDArray[np.float64],
    point: NDArray[np.float64],
    rank: NDArray[np.int64],
    w: NDArray[np.float64],
    lo: int,
    hi: int,
) -> float:
    """Add positions ``lo:hi`` to the tree; returns the weight added."""
    added = 0.0
    for p in range(lo, hi):
        _add(tree, rank[p], w[p])
        point[rank[p]] += w[p]
        added += w[p]
    return added


@njit(cache=True)
def first_member(
    rank: NDArray[np.int64],
    w: NDArray[np.float64],
    starts: NDArray[np.int64],
    mids: NDArray[np.int64],
    n_ranks: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """For each event i: weighted later partners j with lower risk, equal risk, and any risk.

    Positions are in ascending time order with, within one time ``starts[k]:starts[k+1]``, the
    censored before the events (from ``mids[k]``). Times are visited from the latest: a censored
    j at the same time as event i is a partner, an event at the same time is not. Censored
    positions get 0.
    """
    n = rank.size
    tree, point = np.zeros(n_ranks + 1), np.zeros(n_ranks)
    less, equal, comp = np.zeros(n), np.zeros(n), np.zeros(n)
    total = 0.0
    for k in range(starts.size - 2, -1, -1):
        lo, mid, hi = starts[k], mids[k], starts[k + 1]
        total += _insert(tree, point, rank, w, lo, mid)
        for p in range(mid, hi):
            less[p], equal[p], comp[p] = _below(tree, rank[p]), point[rank[p]], total
        total += _insert(tree, point, rank, w, mid, hi)
    return less, equal, comp


@njit(cache=True)
def second_member(
    rank: NDArray[np.int64],
    v: NDArray[np.float64],
    starts: NDArray[np.int64],
    mids: NDArray[np.int64],
    n_ranks: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """For each position j: ``v``-weighted earlier events i with higher, equal and any risk.

    Positions as in :func:`first_member`. An event at the same time as j counts only when j is
    censored.
    """
    n = rank.size
    tree, point = np.zeros(n_ranks + 1), np.zeros(n_ranks)
    greater, equal, comp = np.zeros(n), np.zeros(n), np.zeros(n)
    total = 0.0
    for k in range(starts.size - 1):
        lo, mid, hi = starts[k], mids[k], starts[k + 1]
        for p in range(mid, hi):
            eq = point[rank[p]]
            greater[p], equal[p], comp[p] = total - _below(tree, rank[p]) - eq, eq, total
        total += _insert(tree, point, rank, v, mid, hi)
        for p in range(lo, mid):
            eq = point[rank[p]]
            greater[p], equal[p], comp[p] = total - _below(tree, rank[p]) - eq, eq, total
    return greater, equal, comp


@njit(cache=True)
def first_member_sums(
    rank: NDArray[np.int64],
    w: NDArray[np.float64],
    g: NDArray[np.float64],
    starts: NDArray[np.int64],
    mids: NDArray[np.int64],
    n_ranks: int,
) -> NDArray[np.float64]:
    """Totals of :func:`first_member` over events weighted by ``w * g``, then by ``w [g > 0]``.

    Returns ``[lower, equal, comparable]`` for each weighting (6 numbers); no per-patient arrays.
    """
    tree, point = np.zeros(n_ranks + 1), np.zeros(n_ranks)
    out = np.zeros(6)
    total = 0.0
    for k in range(starts.size - 2, -1, -1):
        lo, mid, hi = starts[k], mids[k], starts[k + 1]
        total += _insert(tree, point, rank, w, lo, mid)
        for p in range(mid, hi):
            if g[p] > 0:
                le, eq = _below(tree, rank[p]), point[rank[p]]
                a, b = w[p] * g[p], w[p]
                out[0] += a * le
                out[1] += a * eq
                out[2] += a * total
                out[3] += b * le
                out[4] += b * eq
                out[5] += b * total
        total += _insert(tree, point, rank, w, mid, hi)
    return out


@njit(cache=True)
def time_groups(
    order: NDArray[np.int64], time: NDArray[np.float64], event: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Group the times along ``order`` (which sorts them) and put each group censored-first.

    ``time`` and ``event`` are already in ``order``. Returns the new order (stable within each
    kind), each position's time rank, the start of each time (then n), the first event position
    of each time, and the events in the new order.
    """
    n = order.size
    new_order, time_rank = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    starts, mids = np.empty(n + 1, dtype=np.int64), np.empty(n, dtype=np.int64)
    new_event = np.empty(n, dtype=np.bool_)
    k, lo = 0, 0
    while lo < n:
        hi = lo + 1
        while hi < n and time[hi] == time[lo]:
            hi += 1
        c = lo
        for p in range(lo, hi):
            if not event[p]:
                new_order[c] = order[p]
                c += 1
        mids[k] = c
        for p in range(lo, hi):
            if event[p]:
                new_order[c] = order[p]
                c += 1
        new_event[lo : mids[k]] = False
        new_event[mids[k] : hi] = True
        time_rank[lo:hi] = k
        starts[k] = lo
        k, lo = k + 1, hi
    starts[k] = n
    return new_order, time_rank, starts[: k + 1].copy(), mids[:k].copy(), new_event


@njit(cache=True)
def dense_rank(sorted_order: NDArray[np.int64], x: NDArray[np.float64]) -> tuple[NDArray[np.int64], int]:
    """Dense 0-based ranks of ``x`` given a permutation sorting it, and the number of values."""
    rank = np.empty(x.size, dtype=np.int64)
    r = -1
    for p in range(x.size):
        q = sorted_order[p]
        if p == 0 or x[q] != x[sorted_order[p - 1]]:
            r += 1
        rank[q] = r
    return rank, r + 1
