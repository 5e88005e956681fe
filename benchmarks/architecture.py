"""Architecture choices by measurement: conv type, weight sharing, normalisation, dropout.

Each variant of the ``cpu``-like network is trained (seeded, same protocol as ``train``) on a
simulated ROI cohort whose risk sits in the wash-out kinetics of the tumour core or of its rim
(``ceusflow.model._synthetic.pattern_roi``, nuisance kinetics in the other region), then scored
on held-out patients of the same simulation. Printed per variant and cohort: best inner-validation
Harrell's C, held-out Harrell's C with its 95 % CI, and training patients/s (wall clock).

Run: ``.venv/bin/python benchmarks/architecture.py [--train 120] [--test 120] [--epochs 12]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings

import torch

from ceusflow.model import NetworkConfig, TrainConfig, predict_risk, train
from ceusflow.model._synthetic import pattern_roi
from ceusflow.survival import concordance

BASE = NetworkConfig(widths=(8, 16, 32, 64), flatten_grid=2, dropout=0.2, norm="group")
VARIANTS = {
    "base: 3d, shared, group, drop 0.2": BASE,
    "(2+1)-d convs": dataclasses.replace(BASE, conv="2plus1d"),
    "per-phase weights": dataclasses.replace(BASE, shared_weights=False),
    "batch norm": dataclasses.replace(BASE, norm="batch"),
    "no norm": dataclasses.replace(BASE, norm="none"),
    "dropout 0": dataclasses.replace(BASE, dropout=0.0),
    "dropout 0.5": dataclasses.replace(BASE, dropout=0.5),
}


def _run(net: NetworkConfig, region: str, args: argparse.Namespace) -> tuple[float, str, float]:
    n = args.train + args.test
    roi = pattern_roi(n, region=region, size=args.size, n_frames=args.frames, seed=args.seed)
    fit, test = roi.isel(patient=slice(0, args.train)), roi.isel(patient=slice(args.train, n))
    cfg = TrainConfig(network=net, epochs=args.epochs, patience=args.epochs, batch_size=16,
                      device="cpu", seed=args.seed)
    start = time.perf_counter()
    trained = train(fit, cfg, progress=False)
    seconds = time.perf_counter() - start
    risk = predict_risk(trained.model, test).values
    c = concordance(test.duration.values, test.event.values, risk)
    inner = float(trained.history.inner_cindex.max())
    pps = args.train * trained.history.sizes["epoch"] / seconds
    return inner, f"{c.estimate:.3f} [{c.low:.3f}, {c.high:.3f}]", pps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regions", default="core,rim")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch threads {torch.get_num_threads()}; load average before {os.getloadavg()}")
    for region in args.regions.split(","):
        roi = pattern_roi(args.train + args.test, region=region, size=args.size,
                          n_frames=args.frames, seed=args.seed)
        test = roi.isel(patient=slice(args.train, None))
        oracle = concordance(test.duration.values, test.event.values, test.oracle.values)
        print(f"\nsignal in the tumour {region}: oracle held-out C {oracle.estimate:.3f} "
              f"[{oracle.low:.3f}, {oracle.high:.3f}]")
        print("| variant | inner C (best) | held-out C [95 % CI] | train patients/s |")
        print("|---|---|---|---|")
        for name, net in VARIANTS.items():
            inner, held, pps = _run(net, region, args)
            print(f"| {name} | {inner:.3f} | {held} | {pps:.1f} |", flush=True)
    print(f"\nload average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
