"""Tracking on simulated cines with known motion (breathing + drift): the ROI follows the tumour."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ceusflow import SimulationConfig, write_synthetic_export
from ceusflow.convert import convert_cohort
from ceusflow.preprocess.patient import patient_rois, plan_patient
from ceusflow.preprocess.track import (
    _fill,
    _fuse,
    breathing_fit,
    breathing_frequency,
    phase_shift,
    template_shift,
    twin_offset,
)
from ceusflow.store import open_store

PHASES = {"AP": (0.0, 20.0), "PP": (20.0, 40.0), "VP": (40.0, 55.0)}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    write_synthetic_export(root / "T", SimulationConfig(n_patients=3, fps=4.0, duration_s=58.0,
                                                        image_size=(144, 180), seed=3, messy=False))
    convert_cohort(root / "T", root / "T.zarr", workers=0, progress=False)
    tree = open_store(root / "T.zarr")
    rois = tree["rois"].to_dataset().compute().to_dataframe()
    ids = pd.read_csv(root / "T.zarr.pseudonyms.csv").set_index("pseudonym")["patient_id"]
    truth = pd.read_csv(root / "T-truth" / "frames.csv.gz")
    dual = pd.read_csv(root / "T-truth" / "patients.csv").set_index("patient_id")["dual"]
    rows = []
    for key in sorted(tree["patients"].children):
        cine = tree["patients"][key].to_dataset()["intensity"]
        plan = plan_patient(cine, rois[rois.patient == key], key=key, phases=PHASES)
        with dask.config.set(scheduler="synchronous"):
            ds = patient_rois(cine, plan, size=16, phases=PHASES).compute()
        rows.append(_errors(ds, plan, truth[truth.patient_id == ids[key]]).assign(dual=dual[ids[key]]))
    return pd.concat(rows)


def _errors(ds, plan, truth) -> pd.DataFrame:  # noqa: ANN001
    flat = ds.stack(k=("phase", "time"))
    keep = np.isfinite(flat.t_exam.values) & flat.frame_ok.values
    t = flat.t_exam.values[keep]
    grid = np.rint(t * plan.fps).astype(int)
    idx = np.abs(truth.t_s.values[:, None] - t[None, :]).argmin(axis=0)
    true = truth[["tumour_row", "tumour_col"]].values[idx]
    anchor_true = true[np.searchsorted(t, plan.grid[plan.anchor[grid]])]
    motion = true - anchor_true  # the true motion since the annotated (anchor) frame
    disp = flat.displacement.values.T[keep]
    measured = flat.tracked.values[keep]
    arrival = t[measured & (t > 5)].min()  # the contrast channel's first confident frame
    return pd.DataFrame({"tracked_err": np.hypot(*(motion - disp).T), "static_err": np.hypot(*motion.T),
                         "enhanced": t >= arrival, "measured": measured, "t": t})


def test_roi_follows_the_tumour_within_2px_in_95pct_of_enhanced_frames(tracked):
    enhanced = tracked[tracked.enhanced]
    share = (enhanced.tracked_err <= 2).mean()
    static = (enhanced.static_err <= 2).mean()
    assert share >= 0.95, f"tracked {share:.3f} vs static {static:.3f}"
    assert share > static
    assert enhanced.tracked_err.median() < enhanced.static_err.median()


def test_dual_display_is_tracked_from_the_first_frame_on_the_b_mode_panel(tracked):
    dual = tracked[tracked.dual]
    assert len(dual) > 50
    assert dual.measured.mean() > 0.95  # B-mode tissue is visible before the contrast arrives
    assert (dual.tracked_err <= 2).mean() >= 0.9, (dual.tracked_err <= 2).mean()
    assert dual.tracked_err.median() < 1.0  # (this exam barely moves: static would pass too)


def test_before_the_bolus_a_single_display_is_filled_from_the_breathing_that_follows(tracked):
    single = tracked[~tracked.dual]
    pre = single[~single.enhanced]
    assert 0 < len(pre) < 0.45 * len(single) and pre.t.max() < 25.0
    assert not pre.measured.any()  # nothing to register in a dark contrast panel
    # The breathing model's extrapolation (or the centre hold, which bounds the error by the
    # amplitude) beats the static box.
    assert pre.tracked_err.median() < pre.static_err.median()
    assert (single.tracked_err <= 2).mean() >= 0.75


def _blob_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.5, mode="wrap")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(-4, 4), st.integers(-4, 4), st.booleans(), st.integers(0, 2**16))
def test_phase_shift_recovers_a_known_shift(dy, dx, whiten, seed):
    rng = np.random.default_rng(seed)
    field = _blob_field(rng, (96, 96))  # a real translation: both patches cut from one larger field
    ref = field[24:72, 24:72]
    img = field[24 - dy:72 - dy, 24 - dx:72 - dx]
    got = phase_shift(ref, img, max_shift_px=(6, 6), sigma_px=(1.0, 1.0), whiten=whiten)
    # Phase correlation: within 0.36 px over 30 seeds x 81 shifts. Plain correlation (the B-mode
    # channel) is pulled toward 0 by the Hann windows: up to 25 % of the shift on 48-px patches.
    tol_y, tol_x = (0.5, 0.5) if whiten else (0.2 + 0.3 * abs(dy), 0.2 + 0.3 * abs(dx))
    assert got[0] == pytest.approx(dy, abs=tol_y) and got[1] == pytest.approx(dx, abs=tol_x)
    assert got[2] > 0.5


def test_twin_offset_finds_the_b_mode_panel_beside_the_contrast_panel():
    assert twin_offset((100.0, 0.0, 200.0, 160.0), 200) == -100
    assert twin_offset((0.0, 0.0, 100.0, 160.0), 200) == 100
    assert twin_offset((0.0, 0.0, 200.0, 160.0), 200) is None


def test_without_the_model_fill_smooths_breathing_and_holds_the_centre_where_nothing_is_measured():
    n, fps = 80, 2.0
    t = np.arange(n) / fps
    truth = np.c_[3 * np.sin(2 * np.pi * t / 4.5), 0.5 * np.sin(2 * np.pi * t / 4.5)]
    rng = np.random.default_rng(0)
    raw = np.c_[truth + rng.normal(0, 0.4, (n, 2)), np.full(n, 0.5), np.where(t < 12, 10.0, 100.0)]
    anchor = np.full(n, 40)
    truth -= truth[40]  # measured relative to the anchor frame
    raw[:, :2] = truth + rng.normal(0, 0.4, (n, 2))
    out = _fill(raw, np.ones(n, bool), anchor, min_score=0.08, fps=fps, model=False)
    late = t >= 14
    assert np.sqrt(np.mean((out[late, :2] - truth[late]) ** 2)) < 0.4  # smoothing beats the 0.4 px noise x sqrt2
    assert not out[t < 10, 3].any() and out[late, 3].all()
    early = out[t < 10, :2]
    assert np.allclose(early, early[0]) and abs(early[0, 0] - np.median(truth[late][:16, 0])) < 0.6
    assert np.all(out[40, :2] == 0)  # the anchor (manual box) is kept


def _breathing_raw(truth: np.ndarray, t: np.ndarray, anchor: int, rng: np.random.Generator, *,
                   noise: float = 0.4, anchor_error: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """What ``_measure`` gives: motion since the anchor frame, seen through the anchor's own error."""
    raw = np.c_[truth - truth[anchor] - np.asarray(anchor_error) + rng.normal(0, noise, truth.shape),
                np.full(t.size, 0.5), np.where(t < 12, 10.0, 100.0)]  # no contrast before 12 s
    raw[anchor, :2] = 0.0  # the anchor registered to itself
    return raw


def test_breathing_model_extrapolates_regular_breathing_and_removes_the_anchor_frames_error():
    fps, anchor = 2.0, 60
    t = np.arange(240) / fps
    truth = np.c_[3 * np.sin(2 * np.pi * t / 4.3 + 1), 0.75 * np.sin(2 * np.pi * t / 4.3 + 1)]
    motion = truth - truth[anchor]
    raw = _breathing_raw(truth, t, anchor, np.random.default_rng(1), anchor_error=(0.9, -0.6))
    ok, anchors = np.ones(t.size, bool), np.full(t.size, anchor)
    out = _fill(raw, ok, anchors, min_score=0.08, fps=fps)
    old = _fill(raw, ok, anchors, min_score=0.08, fps=fps, model=False)
    late, early = t >= 14, t < 12

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum(a**2, axis=1))))

    assert rms(out[late, :2] - motion[late]) < 0.3  # the anchor's 1.1 px error is gone, noise averaged
    assert rms(old[late, :2] - motion[late]) > 1.0  # the short smoother keeps it
    assert rms(out[early, :2] - motion[early]) < 0.5  # pre-contrast: the breathing carried back
    assert rms(old[early, :2] - motion[early]) > 1.5  # the centre hold: about the amplitude
    assert np.all(out[anchor, :2] == 0) and not out[early, 3].any()


def test_breathing_model_gives_way_where_the_motion_is_not_periodic():
    fps, anchor = 2.0, 60
    t = np.arange(240) / fps
    rng = np.random.default_rng(2)
    truth = ndimage.gaussian_filter1d(np.cumsum(rng.normal(0, 0.8, (t.size, 2)), axis=0), 2.0, axis=0)
    raw = _breathing_raw(truth, t, anchor, rng, noise=0.2)
    ok, anchors = np.ones(t.size, bool), np.full(t.size, anchor)
    assert breathing_frequency([(t[t >= 12], raw[t >= 12, :2])]) is None
    np.testing.assert_array_equal(_fill(raw, ok, anchors, min_score=0.08, fps=fps),
                                  _fill(raw, ok, anchors, min_score=0.08, fps=fps, model=False))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.floats(3.0, 6.5), st.floats(0.0, 2 * np.pi), st.floats(1.0, 5.0), st.integers(0, 2**16))
def test_breathing_frequency_finds_the_period_through_noise_and_gaps(period, phase, amp, seed):
    rng = np.random.default_rng(seed)
    pieces = []
    for start in (10.0, 70.0, 120.0):  # three clips with gaps between them, dropped frames inside
        t = np.arange(start, start + 40.0, 0.5)
        t = t[rng.random(t.size) > 0.15]
        v = np.c_[amp * np.sin(2 * np.pi * t / period + phase), 0.3 * amp * np.sin(2 * np.pi * t / period + phase)]
        pieces.append((t, v + 0.02 * (t - start)[:, None] + rng.normal(0, 0.4, v.shape)))
    omega = breathing_frequency(pieces)
    assert omega is not None and 2 * np.pi / omega == pytest.approx(period, rel=0.01)


def test_breathing_fit_ignores_false_correlation_peaks():
    rng = np.random.default_rng(3)
    t = np.arange(0, 60, 0.5)
    truth = np.c_[2.5 * np.sin(2 * np.pi * t / 4.8), 0.6 * np.sin(2 * np.pi * t / 4.8)]
    measured = truth + rng.normal(0, 0.3, truth.shape)
    wrong = rng.random(t.size) < 0.12
    measured[wrong] += rng.choice([-1, 1], (wrong.sum(), 2)) * 6.0  # confident but wrong
    fit = breathing_fit(t, measured, t, 2 * np.pi / 4.8)
    assert np.sqrt(np.mean(np.sum((fit - truth) ** 2, axis=1))) < 0.35
    assert np.abs(fit - truth)[wrong].max() < 1.0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(-6, 6), st.integers(-6, 6), st.integers(0, 2**16))
def test_template_shift_recovers_a_known_shift(dy, dx, seed):
    field = 100 + 400 * _blob_field(np.random.default_rng(seed), (96, 96))
    moved = np.roll(np.roll(field, dy, axis=0), dx, axis=1)  # the template moves over the frame: no taper bias
    got = template_shift(field[24:72, 24:72], moved[16:80, 16:80], (8, 8), sigma_px=(1.0, 1.0))
    assert got[0] == pytest.approx(dy, abs=0.1) and got[1] == pytest.approx(dx, abs=0.1)
    assert got[2] > 0.95


def test_template_shift_is_pulled_less_by_the_static_edge_of_the_sector(monkeypatch):
    import ceusflow.preprocess.track as track

    def errors() -> np.ndarray:
        out = []
        for seed in range(12):
            field = 100 + 400 * _blob_field(np.random.default_rng(seed), (96, 96))
            for dy, dx in ((0, -2), (3, 4), (-5, 1)):
                moved = np.roll(np.roll(field, dy, axis=0), dx, axis=1)
                ref, moved = field.copy(), moved.copy()
                ref[:, :30] = moved[:, :30] = 0  # black outside the sector, fixed to the probe
                got = template_shift(ref[24:72, 24:72], moved[16:80, 16:80], (8, 8), sigma_px=(1.0, 1.0))
                out.append(np.hypot(got[0] - dy, got[1] - dx))
        return np.array(out)

    flattened = errors()
    monkeypatch.setattr(track, "_flatten_outside", lambda image: np.asarray(image, dtype=np.float64))
    black = errors()
    assert flattened.max() < 0.6 * black.max() and np.median(flattened) < np.median(black)


def test_fusion_takes_the_channel_that_predicts_itself_and_averages_where_they_agree():
    fps, n = 2.0, 200
    t = np.arange(n) / fps
    rng = np.random.default_rng(4)
    truth = np.c_[3 * np.sin(2 * np.pi * t / 4.6), 0.8 * np.sin(2 * np.pi * t / 4.6)]
    steady = truth + rng.normal(0, 0.3, truth.shape)
    locked = steady.copy()
    wrong = (t > 40) & (t < 70)  # a channel locked on wrong peaks for 30 s
    locked[wrong] = rng.uniform(-6, 6, (wrong.sum(), 2))
    good = np.ones(n, bool)
    anchor, clips = np.zeros(n, int), np.zeros(n, int)
    for first, second in ((locked, steady), (steady, locked)):
        out, ok = _fuse([first, second], [good, good], anchor, clips, fps, model=True)
        assert ok.all()
        apart = wrong & (np.hypot(*(locked - steady).T) > 1.5)  # AGREE_PX
        assert apart.sum() > 40
        np.testing.assert_allclose(out[apart], steady[apart])  # the locked channel disagrees and loses
        same = ~wrong & (np.hypot(*(first - second).T) < 1e-9)
        np.testing.assert_allclose(out[same], steady[same])  # agreeing channels: their (equal) mean


def _washing_out_tumour(n: int = 120, fps: float = 2.0, seed: int = 0):
    """Frames of a tumour that enhances, then washes out (bright -> dark core, a constant rim) under
    independent speckle, moving with a known breathing motion; the true displacement since frame 20."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    phase = 2 * np.pi * (t - 10) / 4.5  # the tumour centred in the patch at the anchor (frame 20)
    true = np.c_[3.0 * np.sin(phase), 1.5 * np.sin(phase + 0.7) - 1.5 * np.sin(0.7)]
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    frames = np.empty((n, 64, 64))
    for i in range(n):
        r = np.hypot(yy - 32 - true[i, 0], xx - 32 - true[i, 1])
        core = np.cos(np.pi * i / (n - 1)) * np.exp(-(r / 4.0) ** 2)  # +1 (arterial) to -1 (washed out)
        rim = 0.6 * np.exp(-(((r - 8.0) / 1.5) ** 2))
        frames[i] = 110 + 60 * (core + rim) + 15 * ndimage.gaussian_filter(rng.standard_normal((64, 64)), 0.7)
    return frames, true - true[20]


def test_refinement_follows_a_tumour_that_washes_out_and_removes_a_drifting_estimate():
    from ceusflow.preprocess.track import refine_shift

    frames, motion = _washing_out_tumour()
    n = frames.shape[0]
    anchor, clips = np.full(n, 20), np.zeros(n, int)
    patch = np.tile([16, 16, 48, 48], (n, 1))
    t = np.arange(n) / 2.0
    drift = np.c_[-2.0 * (t - 10) / 50, 3.0 * (t - 10) / 50]  # the first pass drifted 3.6 px by the end
    estimate = motion + drift
    args = (frames, patch, anchor, clips, np.ones(n, bool))
    refined = refine_shift(*args, estimate, spacing_mm=(1.0, 1.0), fps=2.0)
    err = np.hypot(*(refined[:, :2] - motion).T)
    assert np.hypot(*drift.T).max() > 3.5
    # bins of fewer than 3 frames are not measured; the rest keep ~0.5 px of common error (the
    # anchor frame's own noise against its bin's mean), not the drift
    assert np.isnan(err[:2]).all() and np.isfinite(err[2:]).all()
    assert np.quantile(err[2:], 0.95) < 1.0, np.quantile(err[2:], [0.5, 0.95])
    assert np.abs(refined[20, :2]).max() < 0.3  # the anchor stays where it was drawn
    # a right estimate stays right, and frames outside `use` are not measured
    use = np.ones(n, bool)
    use[:4] = False
    again = refine_shift(frames, patch, anchor, clips, use, motion, spacing_mm=(1.0, 1.0), fps=2.0)
    assert np.isnan(again[:4]).all()
    assert np.quantile(np.hypot(*(again[4:, :2] - motion[4:]).T), 0.95) < 1.0

