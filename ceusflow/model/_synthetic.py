"""Tiny synthetic ROI cohorts for tests and benchmarks: a bright blob predicts early events."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ceusflow.conventions import (
    DURATION,
    EVENT,
    FRAME_OK,
    INTENSITY,
    PATIENT,
    PHASE,
    PHASES,
    TIME,
    TREATMENT,
    X,
    Y,
)


def synthetic_roi(n_patients: int = 24, *, n_frames: int = 8, size: int = 16,
                  fps: float = 2.0, effect: float = 2.5, seed: int = 0) -> xr.Dataset:
    """Return an in-memory ROI cohort following the data contract.

    Parameters
    ----------
    n_patients, n_frames, size : int
        Patients, frames per phase (padded length) and ROI side in pixels.
    fps : float
        Frame rate of the ``time`` coordinate, frames per s.
    effect : float
        Log-hazard per unit of blob brightness (0: the images carry no signal).
    seed : int
        Seed of everything drawn.

    Returns
    -------
    Dataset
        ``intensity``, ``frame_ok``, ``duration`` (months), ``event``, ``treatment``, and the
        true log-hazard ``oracle``.
    """
    rng = np.random.default_rng(seed)
    bright = rng.uniform(0.0, 1.0, n_patients)
    intensity = _cines(bright, n_frames, size, rng)
    ok = np.ones((n_patients, len(PHASES), n_frames), dtype=bool)
    ok[:, 0, -max(1, n_frames // 4):] = False  # AP shorter than the padded length
    ok[rng.random(ok.shape) < 0.05] = False  # dropped frames
    intensity[~ok] = 0.0
    log_hz = effect * (bright - 0.5)
    event_t = rng.exponential(12.0 * np.exp(-log_hz))
    censor_t = rng.uniform(6.0, 48.0, n_patients)
    coords = {PATIENT: [f"P{i:04d}" for i in range(n_patients)], PHASE: list(PHASES),
              TIME: np.arange(n_frames) / fps, Y: np.arange(size), X: np.arange(size)}
    return xr.Dataset(
        {INTENSITY: ((PATIENT, PHASE, TIME, Y, X), intensity),
         FRAME_OK: ((PATIENT, PHASE, TIME), ok),
         DURATION: (PATIENT, np.minimum(event_t, censor_t), {"units": "month"}),
         EVENT: (PATIENT, event_t <= censor_t),
         TREATMENT: (PATIENT, np.where(rng.random(n_patients) < 0.5, "RFA", "SR")),
         "oracle": (PATIENT, log_hz)},
        coords=coords)


def _cines(bright: np.ndarray, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * (size / 6) ** 2))
    t = np.arange(3 * n_frames).reshape(3, n_frames) / (3 * n_frames)
    curve = np.clip(1.2 * t * np.exp(1 - 2 * t) + 0.2, 0, 1)  # wash-in then wash-out
    base = 0.15 + 0.6 * bright[:, None, None, None, None] * curve[None, :, :, None, None] * blob
    noise = rng.normal(0.0, 0.03, (bright.size, 3, n_frames, size, size))
    return np.clip(base + noise, 0.0, 1.0).astype(np.float32)
