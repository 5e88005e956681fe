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


def pattern_roi(n_patients: int = 48, *, region: str = "core", n_frames: int = 8, size: int = 32,
                center: tuple[float, float] | None = None, radius: float | None = None,
                effect: float = 3.0, nuisance: bool = True, fps: float = 2.0,
                seed: int = 0) -> xr.Dataset:
    """ROI cohort whose risk sits in the wash-out kinetics of the tumour core or of its rim.

    A disc-shaped tumour (``center``, ``radius``; default centred, a quarter of the side) has a
    core (Gaussian, SD ``radius / 3``) and a rim (ring from 0.7 to 1.0 ``radius``). Each region
    enhances as a gamma-variate ``A (s / s_p) exp(1 - s / s_p)`` over the concatenated phases
    (``s`` in [0, 1)). In the ``region`` that carries the signal, the peak time ``s_p`` falls
    with the risk factor ``z ~ U(0, 1)`` (early wash-out = early progression); its amplitude and
    the other region's kinetics are random nuisance (``nuisance=False``: the other region
    stays dark). The true log-hazard ``oracle`` is ``effect * (z - 0.5)``.

    Parameters
    ----------
    n_patients, n_frames, size : int
        Patients, frames per phase and ROI side in pixels.
    region : {"core", "rim"}
        Where the signal sits.
    center : tuple of float, optional
        Tumour centre ``(y, x)`` in pixels.
    radius : float, optional
        Tumour radius in pixels.
    effect : float
        Log-hazard per unit of ``z``.
    nuisance : bool
        Whether the non-signal region enhances with random kinetics.
    fps : float
        Frame rate of the ``time`` coordinate.
    seed : int
        Seed of everything drawn.

    Returns
    -------
    Dataset
        As :func:`synthetic_roi`, with ``oracle`` and attrs ``region``, ``center``, ``radius``.
    """
    if region not in ("core", "rim"):
        raise ValueError(f"region {region!r}: use 'core' or 'rim'")
    rng = np.random.default_rng(seed)
    cy, cx = center if center is not None else ((size - 1) / 2, (size - 1) / 2)
    r = float(radius) if radius is not None else size / 4
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.hypot(yy - cy, xx - cx)
    core = np.exp(-(d**2) / (2 * (r / 3) ** 2))
    rim = ((d >= 0.7 * r) & (d <= r)).astype(float)
    z = rng.uniform(0.0, 1.0, n_patients)
    s = (np.arange(3 * n_frames) / (3 * n_frames)).reshape(3, n_frames) + 0.5 / (3 * n_frames)
    signal = _gamma(s, 0.08 + 0.3 * (1 - z), rng.uniform(0.5, 0.8, n_patients))
    other = _gamma(s, rng.uniform(0.08, 0.38, n_patients), rng.uniform(0.5, 0.8, n_patients))
    other = other if nuisance else 0.0 * other
    sig_map, oth_map = (core, rim) if region == "core" else (rim, core)
    liver = 0.15 + 0.1 * s[None, :, :, None, None]
    base = liver + signal[..., None, None] * sig_map + other[..., None, None] * oth_map
    noise = rng.normal(0.0, 0.03, base.shape)
    intensity = np.clip(base + noise, 0.0, 1.0).astype(np.float32)
    roi = synthetic_roi(n_patients, n_frames=n_frames, size=size, fps=fps, seed=seed)
    log_hz = effect * (z - 0.5)
    event_t = rng.exponential(12.0 * np.exp(-log_hz))
    censor_t = rng.uniform(6.0, 48.0, n_patients)
    ok = roi[FRAME_OK].values
    intensity[~ok] = 0.0
    return roi.assign({INTENSITY: ((PATIENT, PHASE, TIME, Y, X), intensity),
                       DURATION: (PATIENT, np.minimum(event_t, censor_t), {"units": "month"}),
                       EVENT: (PATIENT, event_t <= censor_t), "oracle": (PATIENT, log_hz)}).assign_attrs(
        region=region, center=[float(cy), float(cx)], radius=r)


def _gamma(s: np.ndarray, peak: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Gamma-variate curves ``(n, 3, T)`` peaking at ``peak`` with height ``amp``."""
    p = np.asarray(peak, dtype=float)[:, None, None]
    return np.asarray(amp, dtype=float)[:, None, None] * (s / p) * np.exp(1 - s / p)
