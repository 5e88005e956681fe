"""GPU training throughput of the ``paper`` profile: Zarr store vs memory vs the model alone.

For one CUDA card, per precision variant (fp32, bf16 autocast, bf16 + channels-last-3d, bf16 +
``torch.compile``), one run prints training patients/s (forward + backward + AdamW, augmentation
on, batch 32) for:

* ``model``: the same device-resident batch stepped over and over: no data path at all (the
  ceiling the data path is judged against);
* ``memory``: ``CineBatches`` cached in host memory (gathered, copied and augmented on the card,
  prepared two batches ahead in a thread);
* ``store``: the 8-bit ROI store read lazily, one chunk per patient (same prefetch);
* ``cache8``: the store's 8-bit levels cached in host memory (what ``train`` does when they fit),
  decoded on the card.

``memory`` and ``store`` epochs alternate (``--repeats``), medians are printed. Also the extrapolated
wall time of one epoch of both treatment models on 419 patients (2:1 split: ~280 training
patients, inner validation included).

Run on a GPU machine: ``python benchmarks/gpu_train.py [--patients 256] [--repeats 3]``.
Input: 3 phases x 150 frames (2 fps, padded; AP 90, PP 150, VP 120 valid) x 64 x 64.
Never a test dependency.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ceusflow.model import CineBatches, CoxCNN, TrainConfig, profile
from ceusflow.model._synthetic import synthetic_roi
from ceusflow.model.loss import cox_nll
from ceusflow.model.train import _autocast, _train_epoch
from ceusflow.preprocess.cohort import ENCODING, open_rois

VALID = {0: 90, 1: 150, 2: 120}  # frames per phase at 2 fps


def _cohort(n: int, distinct: int = 32) -> xr.Dataset:
    """``n`` paper-scale patients: ``distinct`` simulated ones repeated under new keys."""
    base = synthetic_roi(distinct, n_frames=150, size=64, seed=0)
    reps = -(-n // distinct)
    roi = xr.concat([base.assign_coords(patient=[f"{p}-{k}" for p in base.patient.values])
                     for k in range(reps)], dim="patient").isel(patient=slice(0, n))
    ok = np.zeros((n, 3, 150), dtype=bool)
    for p, k in VALID.items():
        ok[:, p, :k] = True
    return roi.assign(frame_ok=(("patient", "phase", "time"), ok))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model(variant: str, device: torch.device) -> tuple[torch.nn.Module, TrainConfig]:
    torch.manual_seed(0)
    model: torch.nn.Module = CoxCNN(profile("paper")).to(device)
    if "cl" in variant:
        model = model.to(memory_format=torch.channels_last_3d)
    if "compile" in variant:
        model = torch.compile(model)  # type: ignore[assignment]
    return model, TrainConfig(batch_size=32, device=device.type, amp=variant != "fp32")  # type: ignore[arg-type]


def _epoch_rate(model: torch.nn.Module, opt: torch.optim.Optimizer, ds: CineBatches, cfg: TrainConfig,
                device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    _train_epoch(model, opt, ds, torch.randperm(len(ds)), cfg, device)  # type: ignore[arg-type]
    _sync(device)
    return len(ds) / (time.perf_counter() - start)


def _model_only_rate(model: torch.nn.Module, opt: torch.optim.Optimizer, ds: CineBatches, cfg: TrainConfig,
                     device: torch.device, steps: int) -> float:
    x, mask, duration, event = ds.batch(torch.arange(min(cfg.batch_size, len(ds))), device)
    event = event.clone()
    event[0] = True

    def step() -> None:
        with _autocast(cfg, device):
            log_hz = model(x, mask)
        loss = cox_nll(log_hz.float(), duration, event, reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss / event.sum()).backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * len(event) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="model-only steps")
    parser.add_argument("--variants", default="fp32,bf16,bf16-cl,bf16-compile")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to check the script")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU path")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; {os.cpu_count()} CPUs; "
          f"torch threads {torch.get_num_threads()}")
    start = time.perf_counter()
    roi = _cohort(args.patients)
    with tempfile.TemporaryDirectory() as tmp:
        stored = roi.assign(intensity=np.rint(roi.intensity * 255) / 255).chunk({"patient": 1})
        stored.to_zarr(Path(tmp) / "roi.zarr", encoding=ENCODING)
        lazy = open_rois(Path(tmp) / "roi.zarr")
        store = CineBatches(lazy, augment=TrainConfig().augment, cache=False)
        memory = CineBatches(roi, augment=TrainConfig().augment, cache=True)
        cache8 = CineBatches(lazy, augment=TrainConfig().augment, cache=True)
        print(f"{args.patients} patients ready in {time.perf_counter() - start:.1f} s "
              f"(store: {store._reader is not None and store._reader._chunk is not None} direct chunk reads)")
        print("patients/s (medians of", args.repeats, "alternating memory/store epochs, batch 32)")
        print(f"{'variant':>13} {'model':>8} {'memory':>8} {'store':>8} {'cache8':>8} {'store/mem':>9} "
              f"{'mem/model':>9} {'epoch, 2 x 280 pts':>19} {'first epoch':>11}")
        for variant in args.variants.split(","):
            try:
                model, cfg = _model(variant, device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
                t0 = time.perf_counter()
                _epoch_rate(model, opt, memory, cfg, device)  # warm-up (compilation, cuDNN autotune)
                first = time.perf_counter() - t0
                solo = _model_only_rate(model, opt, memory, cfg, device, args.steps)
                mem, sto, c8 = [], [], []
                for _ in range(args.repeats):
                    mem.append(_epoch_rate(model, opt, memory, cfg, device))
                    sto.append(_epoch_rate(model, opt, store, cfg, device))
                    c8.append(_epoch_rate(model, opt, cache8, cfg, device))
                m, s, c = (float(np.median(v)) for v in (mem, sto, c8))
                print(f"{variant:>13} {solo:>8.1f} {m:>8.1f} {s:>8.1f} {c:>8.1f} {s / m:>9.2f} {m / solo:>9.2f} "
                      f"{2 * 280 / s:>17.1f} s {first:>9.1f} s", flush=True)
            except Exception as exc:  # one variant failing (e.g. compilation) must not hide the others
                print(f"{variant:>13} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
            finally:
                torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"peak GPU memory {peak:.1f} GiB; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
