"""Pure functions of ceusflow.preprocess: boxes, resampling, phases, crop, phase correlation, TICs."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _lazy import raise_if_dask_computes
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ceusflow.errors import InputError
from ceusflow.preprocess.crop import crop_frame, crop_resize
from ceusflow.preprocess.phases import split_phases
from ceusflow.preprocess.resample import dark_frames, nearest_frames, resample
from ceusflow.preprocess.roi import BOX, CORNERS, box_from_mask, expand_box, mask_rois, roi_boxes
from ceusflow.preprocess.tic import contrast_curves, lognormal, part_masks, perfusion_parameters, plot_tic
from ceusflow.preprocess.track import phase_shift


def _box(values):
    return xr.DataArray(np.asarray(values, float), dims=BOX, coords={BOX: list(CORNERS)})


# ---- roi ---------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 40), st.integers(1, 40), st.integers(1, 30),
       st.floats(0, 30), st.floats(0.1, 3), st.floats(0.1, 3))
def test_expand_box_contains_input_and_stays_in_bounds(x0, y0, w, h, margin, dy, dx):
    bounds = (0.0, 0.0, 100.0, 80.0)
    box = _box([x0, y0, min(x0 + w, 100), min(y0 + h, 80)])
    out = expand_box(box, margin, (dy, dx), bounds=bounds).values
    assert out[0] <= box.values[0] and out[1] <= box.values[1]
    assert out[2] >= box.values[2] and out[3] >= box.values[3]
    assert out[0] >= 0 and out[1] >= 0 and out[2] <= 100 and out[3] <= 80
    free = expand_box(box, margin, (dy, dx)).values  # unclipped: exactly margin / spacing each side
    np.testing.assert_allclose(free - box.values, [-margin / dx, -margin / dy, margin / dx, margin / dy], atol=1e-9)


def test_expand_box_outside_image_is_one_line():
    with pytest.raises(InputError, match="outside the image region"):
        expand_box(_box([120, 10, 130, 20]), 10, (1, 1), bounds=(0, 0, 100, 80), source="P1")
    with pytest.raises(InputError, match="outside"):  # drawn on the B-mode panel of a dual display
        expand_box(_box([5, 10, 20, 20]), 10, (1, 1), bounds=(40, 0, 80, 64))


def test_roi_boxes_rows_hold_until_the_next_correction():
    rows = pd.DataFrame({"t_s": [25.0, 100.0], "x0": [1, 5], "y0": [2, 6], "x1": [10, 14], "y1": [12, 16]})
    boxes = roi_boxes(rows, [0, 24.9, 25, 99.9, 100, 170])
    np.testing.assert_array_equal(boxes.sel(box="x0").values, [1, 1, 1, 1, 5, 5])
    np.testing.assert_array_equal(boxes["anchor_s"].values, [25, 25, 25, 25, 100, 100])
    with pytest.raises(InputError, match="no ROI box"):
        roi_boxes(rows.iloc[:0], [0, 1], source="P1")


def test_box_from_mask_extreme_points_and_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    mask = np.zeros((20, 30), np.uint8)
    mask[4:9, 6:11] = 1
    mask[12, 20] = 1  # the bottommost / rightmost point
    assert box_from_mask(mask) == (6, 4, 21, 13)
    assert box_from_mask(np.zeros((3, 3))) is None
    volume = np.zeros((30, 20, 3), np.uint8)  # ITK-SNAP voxel axes (x, y, frame)
    volume[:, :, 1] = mask.T
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "P1.nii.gz")
    rows = mask_rois(tmp_path / "P1.nii.gz", np.array([0.0, 0.5, 1.0]), patient="P1")
    assert rows[["t_s", "x0", "y0", "x1", "y1"]].values.tolist() == [[0.5, 6, 4, 21, 13]]


# ---- resample ----------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.floats(4, 30), st.lists(st.tuples(st.floats(1, 150), st.floats(0.2, 12)), max_size=4))
def test_resample_never_invents_frames_in_gaps(src_fps, gaps):
    times = np.arange(0, 180, 1 / src_fps)
    for start, length in gaps:
        times = times[(times < start) | (times >= start + length)]
    index, ok = nearest_frames(times, np.arange(360) / 2)
    grid = np.arange(360) / 2
    dt = 1 / src_fps
    assert np.all(np.abs(times[index[ok]] - grid[ok]) <= 0.55 * min(dt, 0.5) + 1e-9)
    nearest = np.min(np.abs(times[:, None] - grid[None, :]), axis=0)
    assert not ok[nearest > 0.55 * min(dt, 0.5) + 1e-9].any()  # inside a gap: masked
    assert ok[nearest <= 0.45 * min(dt, 0.5)].all()  # recorded: kept


def _cine(times, shape=(8, 10), seed=0):
    rng = np.random.default_rng(seed)
    data = da.from_array(rng.integers(20, 255, (len(times), *shape), dtype=np.uint8), chunks=(1, *shape))
    return xr.DataArray(data, dims=("time", "y", "x"), name="intensity",
                        coords={"time": np.asarray(times, float), "y": np.arange(shape[0]) * 0.5,
                                "x": np.arange(shape[1]) * 0.5},
                        attrs={"spacing_mm": [0.5, 0.5], "region": []})


def test_resample_is_lazy_masks_gaps_and_zeroes_them():
    times = np.r_[np.arange(0, 20, 0.1), np.arange(30, 60, 0.1)]
    cine = _cine(times)
    with raise_if_dask_computes():
        out = resample(cine, 2.0, end_s=60)
        dark = dark_frames(out)
    assert out.sizes["time"] == 120
    gap = (out.time >= 20.0) & (out.time < 30.0)  # last frame 19.9 s: 20.0 is 0.1 s away, > 0.055 s
    assert not out.frame_ok.values[gap.values].any() and out.frame_ok.values[~gap.values].all()
    values = out.values
    assert (values[gap.values] == 0).all()
    ref = cine.sel(time=out.time[~gap.values].values, method="nearest").values
    np.testing.assert_array_equal(values[~gap.values], ref)
    assert not dark.values[~gap.values].any()


def test_dark_frames_flags_dropped_frames_not_precontrast():
    rng = np.random.default_rng(1)
    level = np.r_[np.full(20, 15.0), np.linspace(15, 120, 20), np.full(40, 120.0)]
    frames = rng.poisson(level[:, None, None], (80, 12, 12)).clip(0, 255).astype(np.uint8)
    frames[30] = 0
    frames[55] = (rng.random((12, 12)) < 0.01) * 8
    dark = dark_frames(xr.DataArray(frames, dims=("time", "y", "x"))).values
    assert dark[[30, 55]].all() and dark.sum() == 2


# ---- phases ------------------------------------------------------------------------------------

def test_split_phases_pads_and_keeps_exam_time():
    cine = resample(_cine(np.arange(0, 60, 0.25)), 2.0, end_s=60)
    out = split_phases(cine, {"A": (0, 10), "B": (10, 60)})
    assert out.sizes == {"phase": 2, "time": 100, "y": 8, "x": 10}
    assert out.frame_ok.sel(phase="A").values.sum() == 20 and out.frame_ok.sel(phase="B").values.all()
    np.testing.assert_allclose(out.t_exam.sel(phase="B").values, np.arange(10, 60, 0.5))
    np.testing.assert_array_equal(out.sel(phase="A").isel(time=slice(20, None)).values, 0)
    np.testing.assert_array_equal(out.sel(phase="B").values, cine.isel(time=slice(20, None)).values)


# ---- crop --------------------------------------------------------------------------------------

def test_crop_of_size_box_is_a_plain_slice_and_normalised():
    frame = np.random.default_rng(2).integers(0, 256, (100, 120), dtype=np.uint8)
    out = crop_frame(frame, np.array([10, 20, 74, 84]), size=64)
    np.testing.assert_array_equal(out, frame[20:84, 10:74].astype(np.float32) / 255)


def test_crop_downscale_matches_block_mean_on_smooth_images_and_stays_in_range():
    yy, xx = np.mgrid[0:128, 0:128]
    frame = (yy + xx).astype(np.uint8)  # a linear ramp: anti-aliasing and bilinear are exact
    out = crop_frame(frame, np.array([0, 0, 128, 128]), size=64)
    block = frame.reshape(64, 2, 64, 2).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(out[4:-4, 4:-4], block[4:-4, 4:-4], atol=1e-5)
    noisy = np.random.default_rng(3).integers(0, 256, (90, 90), dtype=np.uint8)
    res = crop_frame(noisy, np.array([3.3, 7.7, 80.1, 70.2]), size=16)
    assert res.dtype == np.float32 and 0 <= res.min() and res.max() <= 1


def test_crop_resize_is_lazy_and_uses_window_offsets():
    cine = _cine(np.arange(4) * 0.5, shape=(40, 50))
    window = cine.isel(y=slice(10, 40), x=slice(20, 50))
    boxes = xr.DataArray(np.tile([[24.0, 12.0, 40.0, 28.0]], (4, 1)), dims=("time", BOX),
                         coords={BOX: list(CORNERS)})
    with raise_if_dask_computes():
        out = crop_resize(window, boxes, size=16)
    np.testing.assert_array_equal(out.values, cine.values[:, 12:28, 24:40] / np.float32(255))


# ---- tracking kernel ---------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.0, -2.0), (1.5, 2.5), (-4.25, 0.75)])
def test_phase_shift_recovers_known_translation(shift):
    rng = np.random.default_rng(4)
    scene = ndimage.gaussian_filter(rng.normal(size=(120, 120)), 3)
    ref = scene[30:90, 30:90]
    moved = ndimage.shift(scene, shift, order=3, mode="nearest")[30:90, 30:90]
    noisy = moved + rng.normal(0, 0.02 * scene.std(), moved.shape)
    dy, dx, score = phase_shift(ref, noisy, max_shift_px=(8, 8), sigma_px=(1.5, 1.5))
    assert abs(dy - shift[0]) < 0.3 and abs(dx - shift[1]) < 0.3 and score > 0.3


# ---- TIC ---------------------------------------------------------------------------------------

def test_part_masks_are_disjoint_and_ordered():
    masks = part_masks((80, 80), np.array([30, 30, 50, 50]), (1.0, 1.0), rim_mm=5, context_mm=10)
    core, tumour, rim, paren = masks
    assert core.sum() < tumour.sum() and (core <= tumour).all()
    assert not (tumour & rim).any() and not (rim & paren).any() and not (tumour & paren).any()


def test_perfusion_parameters_recover_a_lognormal_bolus():
    t = np.arange(0, 180, 0.5)
    mu, sigma, t0 = np.log(12.0), 0.4, 8.0
    curve = 5.0 + lognormal(t, 500.0, t0, mu, sigma)
    p = perfusion_parameters(t, curve)
    mode = t0 + np.exp(mu - sigma**2)
    assert abs(p["time_to_peak"] - mode) <= 0.5
    assert p["mtt"] == pytest.approx(np.exp(mu + sigma**2 / 2), rel=0.05) and p["fit_r2"] > 0.99
    assert p["auc"] == pytest.approx(500.0, rel=0.02)
    assert 0 < p["rise_time"] < p["time_to_peak"] and p["washout_180"] == pytest.approx(1.0, abs=0.01)
    with_gaps = curve.copy()
    with_gaps[100:120] = np.nan  # missing frames are skipped, not zero
    assert perfusion_parameters(t, with_gaps)["peak_enhancement"] == pytest.approx(p["peak_enhancement"])


def test_plot_tic_returns_a_figure():
    from matplotlib.figure import Figure

    t = np.arange(0, 60, 0.5)
    curves = np.stack([5 + lognormal(t, a, 8, np.log(12), 0.4) for a in (300, 500, 200, 100)])
    curves[:, 30] = np.nan
    tic = xr.DataArray(curves, dims=("part", "exam_time"),
                       coords={"part": ["core", "tumour", "rim", "parenchyma"], "exam_time": t})
    fig = plot_tic(tic, phases={"AP": (0, 45), "PP": (45, 60)})
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 4


@settings(max_examples=30, deadline=None)
@given(gain_db=st.floats(-20, 20), scale=st.floats(0.1, 10.0))
def test_contrast_curves_are_in_db_and_gain_free(gain_db: float, scale: float) -> None:
    t = np.arange(0.0, 45.0, 0.5)
    rng = np.random.default_rng(0)
    power = rng.uniform(0.5, 20.0, (4, t.size))
    power[:, 7] = np.nan  # an invalid frame
    tic = xr.DataArray(power, dims=("part", "exam_time"),
                       coords={"part": ["core", "tumour", "rim", "parenchyma"], "exam_time": t})
    out = contrast_curves(tic)
    assert out.dims == ("part", "bin_start") and list(out["part"].values) == ["core", "tumour", "rim"]
    np.testing.assert_array_equal(out["bin_start"].values, [0.0, 15.0, 30.0])
    first = (t < 15) & np.isfinite(power[0])
    ref = 10 * np.log10(power[1, first].mean() / power[3, first].mean())
    assert out.attrs["units"] == "dB" and out.sel(part="tumour", bin_start=0.0).item() == pytest.approx(ref)
    # a machine gain multiplies every part's power alike: the contrast does not move
    gained = contrast_curves(tic * 10 ** (gain_db / 10) * scale)
    np.testing.assert_allclose(gained.values, out.values, atol=1e-9)


def test_contrast_curves_nan_without_frames_and_clear_errors() -> None:
    t = np.arange(0.0, 30.0, 1.0)
    power = np.ones((2, t.size))
    power[1, t >= 15] = np.nan  # the reference has no valid frame in the second bin
    tic = xr.DataArray(power, dims=("part", "time"), coords={"part": ["tumour", "parenchyma"], "time": t})
    out = contrast_curves(tic)
    assert out.sel(part="tumour", bin_start=0.0).item() == 0.0 and np.isnan(out.sel(part="tumour", bin_start=15.0))
    with pytest.raises(ValueError, match="no part 'liver'"):
        contrast_curves(tic, reference="liver")
    with pytest.raises(ValueError, match="must be positive"):
        contrast_curves(tic, bin_s=0)
