"""Training throughput (patients/s) of both profiles at paper-scale input, memory vs Zarr store.

One run prints, per profile: forward+backward+AdamW patients/s from tensors already in memory
(cached ``CineBatches``) and from a Zarr store read lazily one patient at a time (prefetched two
batches ahead in a thread), their ratio (median of ``--repeats`` alternating memory/store epochs,
so slow drifts of a shared machine's load hit both paths alike),
and the extrapolated wall time to train both treatment models on 419 patients (2:1 split, so
~280 training patients per epoch in total, inner validation included) for ``--epochs`` epochs.

Run: ``.venv/bin/python benchmarks/train_throughput.py [--patients 32] [--repeats 3] [--epochs 30]``.
Input: 3 phases x 150 frames (2 fps, padded; AP 90, PP 150, VP 120 valid) x 64 x 64.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ceusflow.model import CineBatches, CoxCNN, TrainConfig, profile
from ceusflow.model._memory import reuse_freed_memory
from ceusflow.model._synthetic import synthetic_roi
from ceusflow.model.train import _train_epoch
from ceusflow.preprocess.cohort import ENCODING, open_rois

VALID = {0: 90, 1: 150, 2: 120}  # frames per phase at 2 fps


def _cohort(n: int) -> xr.Dataset:
    roi = synthetic_roi(n, n_frames=150, size=64, seed=0)
    ok = np.zeros((n, 3, 150), dtype=bool)
    for p, k in VALID.items():
        ok[:, p, :k] = True
    return roi.assign(frame_ok=(("patient", "phase", "time"), ok))


def _patients_per_s(name: str, ds: CineBatches, n: int, batch: int) -> tuple[float, float]:
    """Patients/s by wall clock, and by process CPU time / threads (less sensitive to load)."""
    torch.manual_seed(0)
    model = CoxCNN(profile(name))  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrainConfig(batch_size=batch, device="cpu")
    _train_epoch(model, opt, ds, torch.arange(batch), cfg, torch.device("cpu"))  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    _train_epoch(model, opt, ds, torch.arange(n), cfg, torch.device("cpu"))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / wall, n / (cpu / torch.get_num_threads())


def _compare(name: str, memory: CineBatches, store: CineBatches, n: int, batch: int,
             repeats: int) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Alternate memory and store epochs ``repeats`` times; medians and the median ratio."""
    mem, sto = [], []
    for _ in range(repeats):
        mem.append(_patients_per_s(name, memory, n, batch))
        sto.append(_patients_per_s(name, store, n, batch))
    ratio = float(np.median([s[0] / m[0] for m, s in zip(mem, sto, strict=True)]))
    med = lambda rows: (float(np.median([r[0] for r in rows])), float(np.median([r[1] for r in rows])))  # noqa: E731
    return med(mem), med(sto), ratio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=32)
    parser.add_argument("--paper-patients", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator alone (train() keeps freed memory for reuse)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    roi = _cohort(args.patients)
    with tempfile.TemporaryDirectory() as tmp:
        # the ROI store's own layout: 8-bit intensities (CF scale 1/255), one patient per chunk
        stored = roi.assign(intensity=np.rint(roi.intensity * 255) / 255).chunk({"patient": 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored.to_zarr(Path(tmp) / "roi.zarr", encoding=ENCODING)
        lazy = open_rois(Path(tmp) / "roi.zarr")
        memory, store = CineBatches(roi, cache=True), CineBatches(lazy, cache=False)
        print(f"torch threads: {torch.get_num_threads()}; load average before: {os.getloadavg()}")
        print("patients/s: wall clock [CPU time / threads], medians of", args.repeats,
              "alternating epochs; store/mem = median of the per-repeat wall-clock ratios")
        print(f"{'profile':>8} {'memory':>16} {'store':>16} {'store/mem':>10} "
              f"{'both models, 419 pts':>22}")
        runs = [("cpu", args.patients)] + ([] if args.skip_paper else [("paper", args.paper_patients)])
        allocator = contextlib.nullcontext(False) if args.default_allocator else reuse_freed_memory()
        with allocator as tuned:
            print(f"allocator: {'freed memory kept for reuse, as in train()' if tuned else 'glibc default'}")
            results = [(name, _compare(name, memory, store, n, min(args.batch, n), args.repeats))
                       for name, n in runs]
        for name, (mem, sto, ratio) in results:
            wall = args.epochs * (419 * 2 / 3) / mem[0]
            print(f"{name:>8} {mem[0]:>7.2f} [{mem[1]:>6.2f}] {sto[0]:>7.2f} [{sto[1]:>6.2f}] "
                  f"{ratio:>10.2f} {wall / 60:>17.1f} min ({args.epochs} epochs)")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
