"""Per-patient imaging scene: field of view, tumour geometry, motion and acquisition settings.

A :class:`Scene` holds everything needed to render one patient's cine deterministically; it is
built from the patient row of :func:`ceusflow.simulate.cohort.simulate_patients` and an RNG.
Lengths are in mm, times in s, pixel positions in (row, column) of one display panel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ceusflow.simulate.perfusion import ArterialInput, Tissue

PIXEL_FORMATS = ("mono", "mono_rle", "rgb", "ybr_jpeg")
TIMING_MODES = ("frame_time_vector", "frame_time", "cine_rate")
VENDORS = (("Philips Medical Systems", "iU22"), ("TOSHIBA_MEC", "Aplio"))


@dataclass(frozen=True)
class Scene:
    """Geometry, perfusion and acquisition of one simulated exam (see module docstring)."""

    panel_shape: tuple[int, int]
    spacing_mm: float
    dual: bool
    centre_mm: tuple[float, float]
    radius_mm: tuple[float, float]
    core_fraction: float
    rim_width_mm: float
    satellites_mm: tuple[tuple[float, float, float], ...]
    aif: ArterialInput
    tissues: dict[str, Tissue]
    gain_db: float
    breathing: tuple[float, float, float]
    drift_mm_per_s: tuple[float, float]
    clip_starts_s: tuple[float, ...]
    clip_lengths_s: tuple[float, ...]
    clip_offsets_mm: tuple[tuple[float, float], ...]
    fps: float
    dropped: frozenset[tuple[int, int]]
    pixel_format: str
    timing_mode: str
    vendor: int
    breathing_irregularity: float = 0.0


def clip_schedule(split: bool, duration_s: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Clip start times and lengths (s): one continuous clip, or 0-90 s then ~3 s every 10 s."""
    if not split or duration_s <= 90:
        return (0.0,), (float(duration_s),)
    starts = [0.0] + [s - 3.0 for s in np.arange(100.0, duration_s + 1e-9, 10.0)]
    return tuple(starts), (90.0,) + (3.0,) * (len(starts) - 1)


def _tissues(row: pd.Series, rng: np.random.Generator) -> dict[str, Tissue]:
    """Perfusion of parenchyma, tumour, necrotic core, peritumoral rim and satellites."""
    bv = float(row["peak_ratio"])
    tumour = Tissue(blood_volume=bv, arterial_fraction=float(rng.uniform(0.9, 1.0)),
                    mtt_s=float(rng.uniform(4.0, 9.0)), washout_onset_s=float(row["washout_onset_s"]),
                    washout_degree=float(row["washout_degree"]), washout_tau_s=float(row["washout_tau_s"]))
    rim = float(row["rim"])
    return {
        "parenchyma": Tissue(blood_volume=1.0, arterial_fraction=0.25, mtt_s=float(rng.uniform(15, 22))),
        "tumour": tumour,
        "core": Tissue(blood_volume=0.08 * bv, arterial_fraction=0.9, mtt_s=20.0),
        # peritumoral arterial hyperenhancement (arterioportal shunting, microvascular invasion):
        # bright in the arterial phase, close to iso-enhancing by the portal phase
        "rim": Tissue(blood_volume=1.0 + 3.0 * rim, arterial_fraction=0.25 + 0.7 * rim, mtt_s=10.0),
        "satellite": Tissue(blood_volume=bv, arterial_fraction=0.95, mtt_s=6.0,
                            washout_onset_s=tumour.washout_onset_s, washout_degree=tumour.washout_degree,
                            washout_tau_s=tumour.washout_tau_s),
    }


def _satellites(row: pd.Series, radius: float, rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    """Satellite nodules (dy, dx, radius) in mm relative to the tumour centre, 2-8 mm outside.

    Their centres stay inside the 1 cm margin of the ROI box, where the paper's R-SR looked.
    """
    out = []
    for _ in range(int(row["satellites"])):
        angle, gap = rng.uniform(0, 2 * np.pi), rng.uniform(2.0, 8.0)
        r = radius + gap
        out.append((r * np.sin(angle), r * np.cos(angle), float(rng.uniform(2.0, 3.5))))
    return tuple(out)


def _dropped(starts: tuple[float, ...], lengths: tuple[float, ...], fps: float,
             rng: np.random.Generator) -> frozenset[tuple[int, int]]:
    """A few dropped (dark) frames, as (clip, frame) pairs: ~0.3 % of frames."""
    out = set()
    for clip, length in enumerate(lengths):
        n = int(round(length * fps))
        for f in np.flatnonzero(rng.random(n) < 0.003):
            out.add((clip, int(f)))
    return frozenset(out)


def make_scene(row: pd.Series, rng: np.random.Generator, *, image_size: tuple[int, int],
               fps: float, duration_s: float, index: int = 0, breathing_irregularity: float = 0.0) -> Scene:
    """Draw one patient's scene from their latent traits and acquisition settings.

    Parameters
    ----------
    row : pandas.Series
        One row of ``simulate_patients``: needs ``tumor_size_cm`` and the latent traits.
    rng : numpy.random.Generator
        Random generator for this patient.
    image_size : (rows, cols)
        Whole-frame size in pixels (both panels together on a dual display).
    index : int
        Patient number: pixel format, timing, vendor, dual display and split clips rotate with
        it (co-prime cycles), so even a small cohort holds every combination class.
    fps : float
        Nominal frame rate.
    duration_s : float
        Exam length in s after injection.
    breathing_irregularity : float
        Standard deviation of the breathing rate and amplitude relative to their means (0: a
        perfectly regular breather; :func:`breathing_mm`).

    Returns
    -------
    Scene
    """
    rows, cols = image_size
    dual = index % 3 == 1  # a third of exams on a dual (B-mode | contrast) display
    panel = (rows, cols // 2 if dual else cols)
    depth_mm = float(rng.uniform(110, 150))
    spacing = max(depth_mm / panel[0], 1.25 * depth_mm / panel[1])
    radius = 5.0 * float(row["tumor_size_cm"])
    field_h, field_w = panel[0] * spacing, panel[1] * spacing
    centre = (float(rng.uniform(0.4, 0.62) * field_h), float(field_w / 2 + rng.uniform(-0.12, 0.12) * field_w))
    split = index % 5 in (1, 3)  # 40 % of exams split into clips after 90 s
    starts, lengths = clip_schedule(split, duration_s)
    timing_mode = TIMING_MODES[index % len(TIMING_MODES)]
    fps_patient = float(fps * rng.uniform(0.95, 1.05)) if fps >= 10 else float(fps)
    if timing_mode == "cine_rate":  # CineRate is an integer frames/s
        fps_patient = float(max(1, round(fps_patient)))
    return Scene(
        panel_shape=panel, spacing_mm=spacing, dual=dual, centre_mm=centre,
        radius_mm=(radius * float(rng.uniform(0.85, 1.0)), radius),
        core_fraction=0.7 * float(row["heterogeneity"]), rim_width_mm=2.0 + 6.0 * float(row["rim"]),
        satellites_mm=_satellites(row, radius, rng),
        aif=ArterialInput(arrival_s=float(rng.uniform(10, 15)), first_pass_median_s=float(rng.uniform(5.5, 8.5))),
        tissues=_tissues(row, rng), gain_db=float(rng.normal(0, 2.0)),
        breathing=(float(rng.uniform(1.5, 4.0)), float(rng.uniform(3.5, 5.5)), float(rng.uniform(0, 2 * np.pi))),
        drift_mm_per_s=(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.02))),
        clip_starts_s=starts, clip_lengths_s=lengths,
        clip_offsets_mm=tuple((0.0, 0.0) if i == 0 else (float(rng.normal(0, 2.5)), float(rng.normal(0, 2.5)))
                              for i in range(len(starts))),
        fps=fps_patient, dropped=_dropped(starts, lengths, fps_patient, rng),
        pixel_format=PIXEL_FORMATS[index % len(PIXEL_FORMATS)], timing_mode=timing_mode,
        vendor=(index // 2) % 2, breathing_irregularity=float(breathing_irregularity),
    )


def displacement_mm(scene: Scene, t: np.ndarray, clip: int, *, breathing: bool = True) -> np.ndarray:
    """Tissue displacement (dy, dx) in mm at times ``t`` (s) of ``clip``: breathing + drift + reposition.

    Returns
    -------
    ndarray (len(t), 2)
    """
    breath = breathing_mm(scene, np.asarray(t, dtype=float)) if breathing else 0.0 * np.asarray(t, dtype=float)
    off = scene.clip_offsets_mm[clip]
    dy = breath + scene.drift_mm_per_s[0] * t + off[0]
    dx = 0.25 * breath + scene.drift_mm_per_s[1] * t + off[1]
    return np.stack([dy, dx], axis=-1)


def breathing_mm(scene: Scene, t: np.ndarray) -> np.ndarray:
    """Craniocaudal breathing displacement (mm) at exam times ``t`` (s).

    Regular (``breathing_irregularity`` 0): ``amp sin(2 pi t / period + phase)``. Otherwise the
    rate and the amplitude wander: each is its mean times ``1 + irregularity g(t)``, with ``g`` a
    sum of three sinusoids of unit standard deviation and periods of 8-40 s (from breath to breath
    to slow changes of rhythm), drawn from a generator seeded by the scene's own phase, so the
    motion is a closed-form function of time (the same in every render block and clip) and the
    scene's other draws are unchanged.
    """
    amp, period, phase = scene.breathing
    irregular = scene.breathing_irregularity
    if irregular <= 0:
        return amp * np.sin(2 * np.pi * t / period + phase)
    rng = np.random.default_rng(int(phase * 1e9))
    nu = rng.uniform(1 / 40, 1 / 8, size=(2, 3))  # Hz: rate, amplitude
    psi = rng.uniform(0, 2 * np.pi, size=(2, 3))
    c = irregular * np.sqrt(2 / 3)  # three unit sinusoids: standard deviation sqrt(3/2)
    tt = t[..., None]
    wander = -np.sum(np.cos(2 * np.pi * nu[0] * tt + psi[0]) / (2 * np.pi * nu[0]), axis=-1)  # integral of g
    angle = 2 * np.pi / period * (t + c * wander) + phase
    return amp * (1 + c * np.sum(np.sin(2 * np.pi * nu[1] * tt + psi[1]), axis=-1)) * np.sin(angle)


def frame_times(scene: Scene, clip: int) -> np.ndarray:
    """Acquisition times (s after injection) of the frames of ``clip``."""
    n = int(round(scene.clip_lengths_s[clip] * scene.fps))
    return scene.clip_starts_s[clip] + np.arange(n) / scene.fps
