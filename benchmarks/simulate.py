"""Simulator measurements for one run: cohort truth at paper size, time and disk per patient.

Usage: ``python benchmarks/simulate.py [--demo-patients 16] [--paper-seconds 8]``

1. A 419-patient cohort (outcome model only, pure): oracle C-index per treatment, event rate,
   median follow-up, swap share.
2. A demo-scale export (the built-in demo settings): seconds and MB per patient.
3. Paper-scale frames (600 x 800, 25 fps) for each pixel format on a short continuous clip:
   frames/s rendered+written and bytes per frame, extrapolated to a 3-minute exam.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ceusflow.simulate import SimulationConfig, oracle_summary, simulate_patients, write_synthetic_export
from ceusflow.simulate.dicom_writer import ClipSpec, Identity, write_clip
from ceusflow.simulate.render import render_clip
from ceusflow.simulate.scene import PIXEL_FORMATS, make_scene


def paper_cohort() -> None:
    for seed in range(3):
        s = oracle_summary(simulate_patients(419, np.random.default_rng(seed)))
        print(f"419 patients seed {seed}: oracle C RFA {s['oracle_c_RFA']:.3f} (n={s['n_RFA']:.0f}), "
              f"SR {s['oracle_c_SR']:.3f} (n={s['n_SR']:.0f}); events {s['event_rate']:.1%}; median follow-up "
              f"(censored) {s['median_follow_up_months']:.1f} mo; swap RFA {s['swap_share_RFA']:.1%}, "
              f"SR {s['swap_share_SR']:.1%}, all {s['swap_share']:.1%}")


def demo_export(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = write_synthetic_export(Path(tmp) / "c", SimulationConfig(n_patients=n))
        print(f"demo settings ({n} patients, 3 fps, 128x160, 180 s): {r.seconds / n:.2f} s/patient, "
              f"{r.bytes_written / n / 1e6:.1f} MB/patient DICOM")


def paper_frames(seconds: float) -> None:
    patients = simulate_patients(4, np.random.default_rng(0))
    for i, fmt in enumerate(PIXEL_FORMATS):
        rng = np.random.default_rng(i)
        scene = make_scene(patients.iloc[i], rng, image_size=(600, 800), fps=25.0, duration_s=seconds,
                           index=15 * i)
        scene = type(scene)(**{**scene.__dict__, "pixel_format": fmt})
        n = int(round(seconds * scene.fps))
        spec = ClipSpec(rows=600, cols=800, n_frames=n, fps=scene.fps, start_s=0.0, clip_index=0,
                        pixel_format=fmt, timing_mode="frame_time", manufacturer=("x", "y"),
                        regions=((0, 0, 800, 600),), spacing_mm=scene.spacing_mm)
        ident = Identity("P1", "A^B", "19600101", "M", "H", "A1", "1.2.3", __import__("datetime").datetime(2012, 1, 1))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            size = write_clip(Path(tmp) / "x.dcm", ident, spec, render_clip(scene, 0, rng), seed_key="b")
            dt = time.perf_counter() - t0
        per_patient_frames = 180 * scene.fps
        print(f"paper scale {fmt:9s}: {n / dt:5.1f} frames/s, {size / n / 1e3:6.1f} kB/frame -> "
              f"3-min exam {per_patient_frames / (n / dt) / 60:.1f} min, {size / n * per_patient_frames / 1e9:.2f} GB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-patients", type=int, default=16)
    ap.add_argument("--paper-seconds", type=float, default=8.0)
    args = ap.parse_args()
    paper_cohort()
    demo_export(args.demo_patients)
    paper_frames(args.paper_seconds)
