"""Harrell's C speed: ceusflow vs scikit-survival vs lifelines, and the bootstrap CI at n = 419.

Run: ``.venv/bin/python benchmarks/concordance.py [--quick]`` (``--quick``: n = 2e4 for sksurv).
Prints wall times and ratios; asserts the three implementations give identical values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_censored

from ceusflow.survival.concordance import concordance


def _timed(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.round(rng.exponential(30.0, n), 1)  # tied times
    e = rng.random(n) < 0.5  # half censored
    r = np.round(-0.02 * t + rng.normal(size=n), 2)  # tied scores
    return t, e, r


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller n for scikit-survival")
    args = parser.parse_args()
    n = 100_000
    t, e, r = _data(n)
    ours, t_ours = _timed(lambda: concordance(t, e, r, ci="none"), repeat=5)
    _, t_ij = _timed(lambda: concordance(t, e, r, ci="ij"), repeat=3)
    _, t_sort = _timed(lambda: np.argsort(t), repeat=5)
    lif, t_lif = _timed(lambda: concordance_index(t, -r, e))
    assert abs(lif - ours.estimate) < 1e-12, (lif, ours.estimate)
    n_sk = 20_000 if args.quick else n
    sk, t_sk = _timed(lambda: concordance_index_censored(e[:n_sk], t[:n_sk], r[:n_sk]))
    sub = concordance(t[:n_sk], e[:n_sk], r[:n_sk], ci="none")
    assert abs(sk[0] - sub.estimate) < 1e-12 and (sk[1], sk[3]) == (
        sub.n_concordant,
        sub.n_tied_risk,
    )
    print(f"Harrell's C, n = {n:,} (half censored, tied times and scores): C = {ours.estimate:.6f}")
    print(f"  ceusflow            {t_ours * 1e3:8.1f} ms   (with IJ variance {t_ij * 1e3:.1f} ms)")
    print(f"  lifelines           {t_lif * 1e3:8.1f} ms   ratio {t_lif / t_ours:5.1f}x slower")
    print(f"  scikit-survival     {t_sk * 1e3:8.1f} ms   at n = {n_sk:,} (identical counts)")
    ratio = t_ours / t_sort
    print(f"  numpy.argsort(time) {t_sort * 1e3:8.1f} ms   ceusflow / argsort = {ratio:.1f}x")

    t4, e4, r4 = _data(419, seed=1)
    boot, t_boot = _timed(lambda: concordance(t4, e4, r4, ci="bootstrap", n_boot=1000, rng=0), 3)
    print(
        f"Bootstrap CI, 1000 replicates at n = 419: {t_boot * 1e3:.1f} ms "
        f"(C = {boot.estimate:.3f}, 95% CI {boot.low:.3f}-{boot.high:.3f})"
    )


if __name__ == "__main__":
    main()
