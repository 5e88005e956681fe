"""Harrell's C speed: ceusflow vs numpy.argsort, lifelines and scikit-survival; bootstrap at n = 419.

Run: ``.venv/bin/python benchmarks/concordance.py [--quick] [--no-numba]``
(``--quick``: scikit-survival on the first 20,000 patients only, since it is O(n * events);
``--no-numba``: time the pure-numpy fallback kernels). One run prints every time and ratio, the
machine load (``os.getloadavg``) before and after, and asserts identical values and counts.
argsort and ceusflow are timed interleaved (best of 25 each), so their ratio survives a
shared, loaded machine better than their absolute times.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_censored

from ceusflow.survival import _pair_counts
from ceusflow.survival.concordance import compare_concordance, concordance


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Best wall time of ``repeat`` calls (seconds) and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall time and best CPU time of this thread (seconds) of each function, calls
    interleaved round-robin so that load changes on a shared machine hit all of them alike.
    CPU time leaves out the time the thread waits for a core, not what other programs cost it
    (shared caches, a busy sibling hyper-thread)."""
    wall, cpu = dict.fromkeys(fns, np.inf), dict.fromkeys(fns, np.inf)
    for _ in range(repeat):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu[name] = min(cpu[name], time.thread_time() - c0)
            wall[name] = min(wall[name], time.perf_counter() - w0)
    return wall, cpu


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.round(rng.exponential(30.0, n), 1)  # tied times
    e = rng.random(n) < 0.5  # half censored
    r = np.round(-0.02 * t + rng.normal(size=n), 2)  # tied scores
    return t, e, r


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def _disable_numba() -> None:
    _pair_counts.numba_kernels = lambda: None  # type: ignore[assignment]
    importlib.import_module("ceusflow.survival.concordance").numba_kernels = lambda: None


def _harrell(n: int, n_sk: int) -> None:
    t, e, r = _data(n)
    for ci in ("none", "ij"):  # compile / load the numba cache outside the timing
        concordance(t[:100], e[:100], r[:100], ci=ci)
    ours = concordance(t, e, r, ci="none")
    ij = concordance(t, e, r, ci="ij")  # the per-patient path: same C and counts
    fields = ("estimate", "n_concordant", "n_tied_risk", "n_comparable")
    assert [getattr(ij, f) for f in fields] == [getattr(ours, f) for f in fields]
    best, cpu = _interleaved(
        {
            "sort": lambda: np.argsort(t),
            "ours": lambda: concordance(t, e, r, ci="none"),
            "ij": lambda: concordance(t, e, r, ci="ij"),
        },
        repeat=25,
    )
    t_sort, t_ours = best["sort"], best["ours"]
    lif, t_lif = _timed(lambda: concordance_index(t, -r, e), repeat=2)
    assert abs(lif - ours.estimate) < 1e-12, (lif, ours.estimate)
    sk, t_sk = _timed(lambda: concordance_index_censored(e[:n_sk], t[:n_sk], r[:n_sk]))
    sub, t_sub = _timed(lambda: concordance(t[:n_sk], e[:n_sk], r[:n_sk], ci="none"), repeat=5)
    assert abs(sk[0] - sub.estimate) < 1e-12
    assert (sk[1], sk[3]) == (sub.n_concordant, sub.n_tied_risk)
    print(f"Harrell's C, n = {n:,} (half censored, tied times and scores): C = {ours.estimate:.6f}")
    print("                        wall time              CPU time of the thread")
    print(f"  numpy.argsort(time)  {t_sort * 1e3:9.1f} ms               {cpu['sort'] * 1e3:9.1f} ms")
    for key, label in (("ours", "ceusflow        "), ("ij", "ceusflow + IJ SE")):
        print(
            f"  {label}     {best[key] * 1e3:9.1f} ms = {best[key] / t_sort:4.1f}x argsort"
            f"   {cpu[key] * 1e3:9.1f} ms = {cpu[key] / cpu['sort']:4.1f}x argsort"
        )
    print(f"  lifelines            {t_lif * 1e3:9.1f} ms   = {t_lif / t_ours:5.1f}x ceusflow (same C)")
    print(
        f"  scikit-survival      {t_sk * 1e3:9.1f} ms   = {t_sk / t_sub:5.0f}x ceusflow at n = {n_sk:,}"
        " (same C and counts)"
    )


def _bootstrap_and_compare() -> None:
    t4, e4, r4 = _data(419, seed=1)
    boot, t_boot = _timed(lambda: concordance(t4, e4, r4, ci="bootstrap", n_boot=1000, rng=0), 3)
    print(
        f"Bootstrap CI, 1000 replicates at n = 419: {t_boot * 1e3:.1f} ms "
        f"(C = {boot.estimate:.3f}, 95% CI {boot.low:.3f}-{boot.high:.3f})"
    )
    other = r4 + np.random.default_rng(2).normal(0, 0.5, r4.size)
    cmp, t_cmp = _timed(lambda: compare_concordance(t4, e4, r4, other), 3)
    print(f"compare_concordance (Kang/compareC) at n = 419: {t_cmp * 1e3:.1f} ms (p = {cmp.p_value:.3g})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="scikit-survival on 20,000 patients")
    parser.add_argument("--no-numba", action="store_true", help="time the numpy fallback")
    args = parser.parse_args()
    if args.no_numba:
        _disable_numba()
    kernel = "numba" if _pair_counts.numba_kernels() is not None else "numpy fallback"
    print(f"kernel: {kernel}; before: {_load()}")
    n = 100_000
    _harrell(n, 20_000 if args.quick else n)
    _bootstrap_and_compare()
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
