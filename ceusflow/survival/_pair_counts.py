"""Per-patient pair counts behind Harrell's and Uno's C, in O(n log n).

Two interchangeable kernels give the same counts (checked in the tests):

* numba (when installed): one Fenwick-tree pass over the patients in time order
  (:mod:`ceusflow.survival._concordance_numba`), a few milliseconds at n = 10^5;
* pure numpy fallback: a dominance count done bit by bit on the risk ranks (a wavelet-matrix
  pass: ``ceil(log2 #ranks)`` vectorised O(n) sweeps), about 10x slower.

Pair rule (R ``survival::concordance``, scikit-survival): ``(i, j)`` is comparable when ``i`` had
the event and ``t_i < t_j``, or ``t_i == t_j`` with ``j`` censored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

Counts = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


@dataclass(frozen=True)
class Setup:
    """One data set in ascending time order, ranked once; the counts reuse it for any weights.

    Within one time the censored patients come before the events (a stable partition), so the
    numba kernels visit each kind without branching.

    Attributes
    ----------
    order : ndarray of int64 (n,)
        Patient index of each time-ordered position (``time[order]`` is sorted).
    time_rank : ndarray of int64 (n,)
        Dense 0-based rank of each position's time (non-decreasing).
    time_starts : ndarray of int64
        First position of each distinct time, followed by n.
    event_starts : ndarray of int64
        First event position within each distinct time (censored come first).
    event : ndarray of bool (n,)
        Event indicator, in time order.
    rank : ndarray of int64 (n,)
        Dense 0-based rank of the risk score, in time order.
    n_ranks : int
        Number of distinct risk scores.
    g : ndarray (n,)
        Weight of each position as the earlier (event) member: 1 (Harrell) or IPCW^2 (Uno).
    """

    order: NDArray[np.int64]
    time_rank: NDArray[np.int64]
    time_starts: NDArray[np.int64]
    event_starts: NDArray[np.int64]
    event: NDArray[np.bool_]
    rank: NDArray[np.int64]
    n_ranks: int
    g: NDArray[np.float64]


def _runs(sorted_x: NDArray[Any]) -> NDArray[np.bool_]:
    """True where a sorted array starts a new value."""
    new = np.empty(sorted_x.size, dtype=bool)
    new[0] = True
    np.not_equal(sorted_x[1:], sorted_x[:-1], out=new[1:])
    return new


def make_setup(
    time: NDArray[np.float64],
    event: NDArray[np.bool_],
    risk: NDArray[np.float64],
    g: NDArray[np.float64],
    order: NDArray[np.int64] | None = None,
) -> Setup:
    """Sort by time and rank the risks (two argsorts); ``order`` reuses another setup's sort.

    Parameters
    ----------
    time, event, risk, g : ndarray (n,)
        Patient-ordered follow-up, event indicator, risk score and first-member weight.
    order : ndarray of int64, optional
        A permutation sorting ``time`` (e.g. ``other.order``), to share one time order.
    """
    order = np.argsort(time) if order is None else order
    nb = numba_kernels()
    if nb is not None:
        order, time_rank, starts, mids, event_t = nb.time_groups(order, time[order], event[order])
        risk_t = risk[order]
        rank, n_ranks = nb.dense_rank(np.argsort(risk_t), risk_t)
    else:
        perm, time_rank, starts, mids = _time_groups(time[order], event[order])
        order = order[perm]
        event_t = event[order]
        rank, n_ranks = _dense_rank(risk[order])
    return Setup(order, time_rank, starts, mids, event_t, rank, n_ranks, g[order])


def _dense_rank(x: NDArray[np.float64]) -> tuple[NDArray[np.int64], int]:
    """Dense 0-based ranks of ``x`` and the number of distinct values (numpy)."""
    r_order = np.argsort(x)
    new = _runs(x[r_order])
    rank = np.empty(x.size, dtype=np.int64)
    rank[r_order] = np.cumsum(new) - 1
    return rank, int(new.sum())


def _time_groups(
    time: NDArray[np.float64], event: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Group sorted ``time``; stable partition of each group, censored before events.

    Returns the permutation (new position -> old), each position's time rank, the start of each
    time (then n) and the first event position of each time (numpy twin of the numba kernel).
    """
    new = _runs(time)
    group = np.cumsum(new) - 1
    starts = np.r_[np.flatnonzero(new), time.size]
    cens = ~event
    before = np.cumsum(cens) - cens  # censored strictly before each position
    first = starts[group]  # start of each position's time
    n_cens = np.add.reduceat(cens.astype(np.int64), starts[:-1])
    cens_rank = before - before[first]
    dest = np.where(event, first + n_cens[group] + (np.arange(event.size) - first - cens_rank), first + cens_rank)
    perm = np.empty(event.size, dtype=np.int64)
    perm[dest] = np.arange(event.size)
    return perm, group, starts, starts[:-1] + n_cens


@functools.cache
def numba_kernels() -> ModuleType | None:
    """The compiled kernels, or None when numba is not installed."""
    try:
        from ceusflow.survival import _concordance_numba
    except ImportError:
        return None
    return _concordance_numba


def _kernels(use_numba: bool | None) -> ModuleType | None:
    nb = numba_kernels() if use_numba in (None, True) else None
    if use_numba and nb is None:
        raise ImportError("numba is not installed")
    return nb


def first_member(s: Setup, w: NDArray[np.float64], *, use_numba: bool | None = None) -> Counts:
    """For each event i: ``w``-weighted later partners with lower, equal and any risk.

    ``w`` and the results are in the setup's time order. Entries of censored positions are 0
    (numba) or meaningless (numpy); callers weight them by ``event``. ``use_numba=None`` picks
    numba when installed, False forces the numpy kernel.
    """
    nb = _kernels(use_numba)
    if nb is not None:
        return nb.first_member(s.rank, w, s.time_starts, s.event_starts, s.n_ranks)
    return _first_member_numpy(s, w)


def second_member(s: Setup, v: NDArray[np.float64], *, use_numba: bool | None = None) -> Counts:
    """For each position j: ``v``-weighted earlier events with higher, equal and any risk.

    Only events carry weight (``v`` of censored positions is ignored); time order as above.
    """
    nb = _kernels(use_numba)
    if nb is not None:
        return nb.second_member(s.rank, v, s.time_starts, s.event_starts, s.n_ranks)
    return _second_member_numpy(s, v)


def first_member_sums(s: Setup, w: NDArray[np.float64], *, use_numba: bool | None = None) -> NDArray[np.float64]:
    """Sums of :func:`first_member` over events, weighted by ``w * g`` and by ``w [g > 0]``.

    Returns ``[lower, equal, comparable]`` for each of the two weightings: the numerator and
    denominator of C, and the pair counts.
    """
    nb = _kernels(use_numba)
    if nb is not None:
        return nb.first_member_sums(s.rank, w, s.g, s.time_starts, s.event_starts, s.n_ranks)
    counts = np.stack(_first_member_numpy(s, w))
    use = s.event & (s.g > 0)
    return np.r_[counts[:, use] @ (w * s.g)[use], counts[:, use] @ w[use]]


# --------------------------------------------------------------------------- numpy fallback


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


def _sweep(s: Setup, order: NDArray[np.int64], rank: NDArray[np.int64], w_before: NDArray[np.float64]) -> Counts:
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


def _first_member_numpy(s: Setup, w: NDArray[np.float64]) -> Counts:
    t_max = int(s.time_rank.max())
    key = ((t_max - s.time_rank) * 2 + s.event) * s.n_ranks + (s.n_ranks - 1 - s.rank)
    order = np.argsort(key, kind="stable")
    return _sweep(s, order, s.rank, w)


def _second_member_numpy(s: Setup, v: NDArray[np.float64]) -> Counts:
    neg = s.n_ranks - 1 - s.rank
    key = (s.time_rank * 2 + ~s.event) * s.n_ranks + (s.n_ranks - 1 - neg)
    order = np.argsort(key, kind="stable")
    return _sweep(s, order, neg, v * s.event)
