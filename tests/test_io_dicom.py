from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, pixel_array

import ceusflow.io.pixels as pixels_module
from ceusflow.errors import InputError
from ceusflow.io.dicom import read_cine, read_clip, read_frames, read_header
from ceusflow.io.pixels import luminance
from ceusflow.io.regions import choose_region
from ceusflow.io.synthetic import speckle, write_cine_dicom

PUBLIC = Path("/work/shared/data/dicom-public")
needs_public = pytest.mark.skipif(not PUBLIC.is_dir(), reason="public DICOM files not available")
T0 = dt.datetime(2020, 3, 4, 10, 0, 0)

SNAPSHOT, NO_TIMING, STALE = "single frame", "no frame timing", "no valid 2-D ultrasound region"
# file: (frames, rows, columns, spacing (dy, dx) mm of the chosen region or None, read_cine outcome)
EXPECTED = {
    "color3d_jpeg_baseline.dcm": (120, 480, 640, 0.5104970559477806, None),
    "examples_ybr_color.dcm": (30, 240, 320, None, STALE),
    "OBXXXX1A_rle_2frame.dcm": (2, 600, 800, 0.2622878766196998, NO_TIMING),
    "OBXXXX1A_2frame.dcm": (2, 600, 800, 0.2622878766196998, NO_TIMING),
    "OBXXXX1A_expb_2frame.dcm": (2, 600, 800, 0.2622878766196998, NO_TIMING),
    "OBXXXX1A.dcm": (1, 600, 800, 0.2622878766196998, SNAPSHOT),
    "OBXXXX1A_expb.dcm": (1, 600, 800, 0.2622878766196998, SNAPSHOT),
    "OBXXXX1A_rle.dcm": (1, 600, 800, 0.2622878766196998, SNAPSHOT),
    "examples_palette.dcm": (1, 350, 800, None, SNAPSHOT),
    "gdcm-US-ALOKA-16.dcm": (1, 480, 640, 0.3826530650258064, SNAPSHOT),
    "gdcm-US-ALOKA-16_big.dcm": (1, 480, 640, 0.3826530650258064, SNAPSHOT),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (1, 768, 1024, 0.25476696592378157, SNAPSHOT),
    "US1_J2KI.dcm": (1, 480, 640, None, SNAPSHOT),
    "US1_J2KR.dcm": (1, 480, 640, None, SNAPSHOT),
    "examples_jpeg2k.dcm": (1, 480, 640, None, SNAPSHOT),
    "US1_UNCI.dcm": (1, 480, 640, None, SNAPSHOT),
    "US1_UNCR.dcm": (1, 480, 640, None, SNAPSHOT),
    "examples_rgb_color.dcm": (1, 240, 320, None, SNAPSHOT),
    "color-px.dcm": (1, 120, 256, None, SNAPSHOT),
    "color-pl.dcm": (1, 120, 256, None, SNAPSHOT),
    "ExplVR_BigEnd.dcm": (1, 60, 80, None, SNAPSHOT),
    "emri_small_RLE.dcm": (10, 64, 64, None, NO_TIMING),
    "emri_small_jpeg_2k_lossless.dcm": (10, 64, 64, None, NO_TIMING),
    "emri_small_jpeg_ls_lossless.dcm": (10, 64, 64, None, NO_TIMING),
    "SC_rgb_rle_2frame.dcm": (2, 100, 100, None, NO_TIMING),
    "SC_rgb_dcmtk_+eb+cy+np.dcm": (1, 100, 100, None, SNAPSHOT),
    "SC_ybr_full_422_uncompressed.dcm": (1, 100, 100, None, SNAPSHOT),
}


@needs_public
def test_every_public_file_is_listed():
    assert {p.name for p in PUBLIC.glob("*.dcm")} == set(EXPECTED)


@needs_public
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_file_shape_spacing_and_verdict(name):
    frames, rows, cols, spacing, verdict = EXPECTED[name]
    path = PUBLIC / name
    header = read_header(path, root=PUBLIC.parent)
    assert (header.n_frames, header.rows, header.columns) == (frames, rows, cols)
    assert header.source == f"dicom-public/{name}" and not header.truncated
    region = choose_region(header.regions)
    assert (region is None) if spacing is None else region.delta_x_mm == pytest.approx(spacing)
    if frames <= 30:
        decoded = read_frames(path)
        assert decoded.shape == (frames, rows, cols) and decoded.dtype == np.uint8
    if verdict is None:
        cine = read_cine(path, root=PUBLIC.parent)
        assert cine.shape == (frames, rows, cols)
        assert cine.attrs["spacing_mm"] == pytest.approx([spacing, spacing])
    else:
        with pytest.raises(InputError, match=verdict) as err:
            read_cine(path, root=PUBLIC.parent)
        assert str(err.value).startswith(f"dicom-public/{name}: ")


@needs_public
@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"])
def test_jpeg_luminance_is_the_pinned_pillow_y_plane(name):
    ours = read_frames(PUBLIC / name)
    ref = pixel_array(PUBLIC / name, decoding_plugin="pillow", as_rgb=False)[..., 0]
    np.testing.assert_array_equal(ours, ref.reshape(ours.shape))
    rgb = pixel_array(PUBLIC / name, decoding_plugin="pillow")
    np.testing.assert_array_equal(read_frames(PUBLIC / name, colour=True), rgb.reshape(ours.shape + (3,)))


@needs_public
@pytest.mark.parametrize("name", ["color-pl.dcm", "color-px.dcm", "ExplVR_BigEnd.dcm", "US1_J2KR.dcm",
                                  "SC_rgb_rle_2frame.dcm", "OBXXXX1A_rle_2frame.dcm",
                                  "gdcm-US-ALOKA-16_big.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_colour_matches_pydicom_and_luminance_is_bt601(name):
    ds = pydicom.dcmread(PUBLIC / name)
    ref = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        ref = apply_color_lut(ref, ds)
        ref = (ref >> 8).astype(np.uint8) if ref.dtype != np.uint8 else ref
    ours = read_frames(PUBLIC / name, colour=True)
    np.testing.assert_array_equal(ours, ref.reshape(ours.shape))
    if ds.PhotometricInterpretation != "YBR_FULL_422":  # YBR keeps its own Y, not luma(RGB)
        np.testing.assert_array_equal(read_frames(PUBLIC / name), luminance(ours))


@needs_public
def test_grey_16_bit_keeps_the_8_most_significant_bits():
    ds = pydicom.dcmread(PUBLIC / "emri_small_RLE.dcm")
    expected = (ds.pixel_array >> (ds.BitsStored - 8)).astype(np.uint8)
    for name in ("emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_frames(PUBLIC / name), expected)


@needs_public
def test_aloka_dual_panel_choice():
    regions = read_header(PUBLIC / "gdcm-US-ALOKA-16.dcm").regions
    assert len(regions) == 3
    assert choose_region(regions).x0 == 32  # equal areas: the leftmost
    assert choose_region(regions, panel="right").x0 == 336
    assert choose_region(regions, roi=(400, 100, 500, 200)).x0 == 336
    assert choose_region(regions, roi=(300, 100, 400, 200)) is None  # straddles both panels


@needs_public
def test_stale_regions_are_flagged_and_not_used():
    header = read_header(PUBLIC / "examples_palette.dcm")
    assert header.regions[0].stale and choose_region(header.regions) is None
    cine = read_cine(PUBLIC / "examples_ybr_color.dcm", spacing_mm=(0.5, 0.5))
    assert cine.attrs["spacing_mm"] == [0.5, 0.5]
    assert any("stale region bounds" in f for f in cine.attrs["flags"])


@needs_public
def test_private_xml_never_reaches_the_cine():
    cine = read_cine(PUBLIC / "color3d_jpeg_baseline.dcm", frames_per_chunk=8)
    text = repr(cine) + repr(cine.attrs) + repr(cine.coords) + repr(read_header(PUBLIC / "color3d_jpeg_baseline.dcm"))
    assert "AcquisitionRate" not in text and "<" not in repr(cine.attrs)
    assert cine.time.values[1] == pytest.approx(0.033333)


# --- synthetic cines -------------------------------------------------------------------------


def _write(path, n=8, *, seed=0, **kwargs):
    frames = kwargs.pop("frames", None)
    frames = speckle(n, 64, 80, seed=seed) if frames is None else frames
    write_cine_dicom(path, frames, **kwargs)
    return frames


@pytest.mark.parametrize(("timing", "source"), [
    ("frame_time", "frame_increment_pointer"),
    ("frame_time_vector", "frame_time_vector"),
    ("cine_rate", "cine_rate_fallback"),
])
def test_timing_forms(tmp_path, timing, source):
    _write(tmp_path / "a.dcm", timing=timing, fps=20.0)
    cine = read_cine(tmp_path / "a.dcm")
    np.testing.assert_allclose(cine.time.values, np.arange(8) / 20.0, atol=1e-6)
    assert cine.attrs["timing_source"] == [source]
    assert cine.time.attrs["units"] == "s" and cine.x.attrs["units"] == "mm"
    fallback = [f for f in cine.attrs["flags"] if "timing from" in f]
    assert bool(fallback) == (source == "cine_rate_fallback")


def test_no_timing_single_frame_not_dicom_and_undecodable_are_one_line_errors(tmp_path):
    _write(tmp_path / "untimed.dcm", timing="none")
    _write(tmp_path / "snap.dcm", n=1)
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all" * 10)
    _write(tmp_path / "mpeg.dcm", encoding="jpeg")
    ds = pydicom.dcmread(tmp_path / "mpeg.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2
    ds.save_as(tmp_path / "mpeg.dcm")
    cases = {"untimed.dcm": "no frame timing", "snap.dcm": "single frame", "junk.dcm": "not a DICOM file",
             "mpeg.dcm": "undecodable transfer syntax"}
    for name, reason in cases.items():
        with pytest.raises(InputError, match=reason) as err:
            read_cine(tmp_path / name, root=tmp_path)
        assert str(err.value).startswith(f"{name}: ") and "\n" not in str(err.value)
    assert read_frames(tmp_path / "snap.dcm").shape == (1, 64, 80)
    assert read_clip(tmp_path / "untimed.dcm").header.timing_source is None


@pytest.mark.parametrize("encoding", ["native", "rle", "jpeg"])
def test_pixels_round_trip(tmp_path, encoding):
    frames = _write(tmp_path / "a.dcm", encoding=encoding)
    values = read_cine(tmp_path / "a.dcm").values
    tolerance = 12 if encoding == "jpeg" else 0
    assert np.abs(values.astype(int) - frames).mean() <= tolerance / 4
    assert np.abs(values.astype(int) - frames).max() <= (255 if encoding == "jpeg" else 0)


def test_rgb_cine_luminance_and_colour(tmp_path):
    frames = speckle(4, 32, 40, colour=True)
    frames[..., 0] = 200  # a red-ish overlay
    write_cine_dicom(tmp_path / "c.dcm", frames, encoding="rle")
    np.testing.assert_array_equal(read_cine(tmp_path / "c.dcm").values, luminance(frames))
    colour = read_cine(tmp_path / "c.dcm", colour=True)
    assert colour.dims == ("time", "y", "x", "channel")
    np.testing.assert_array_equal(colour.values, frames)


def test_split_clips_ordered_by_acquisition_time_with_gap(tmp_path):
    first = _write(tmp_path / "z_first.dcm", seed=1, start=T0, fps=10.0)
    _write(tmp_path / "a_second.dcm", n=4, seed=2, start=T0 + dt.timedelta(seconds=30), fps=10.0)
    cine = read_cine([tmp_path / "a_second.dcm", tmp_path / "z_first.dcm"], root=tmp_path)
    assert cine.sizes["time"] == 12
    np.testing.assert_allclose(cine.time.values[:8], np.arange(8) / 10.0, atol=1e-6)
    np.testing.assert_allclose(cine.time.values[8:], 30.0 + np.arange(4) / 10.0, atol=1e-6)
    assert cine["clip"].values.tolist() == [0] * 8 + [1] * 4
    assert cine["frame"].values.tolist() == list(range(8)) + list(range(4))
    assert cine.attrs["source"] == ["z_first.dcm", "a_second.dcm"]
    np.testing.assert_array_equal(cine.isel(time=slice(0, 8)).values, first)


def test_contrast_bolus_start_is_time_zero(tmp_path):
    _write(tmp_path / "a.dcm", start=T0, bolus_start=(T0 - dt.timedelta(seconds=5)).time())
    cine = read_cine(tmp_path / "a.dcm")
    assert cine.time.values[0] == pytest.approx(5.0)
    assert cine.time.attrs["reference"] == "contrast bolus start"


@pytest.mark.parametrize("encoding", ["native", "jpeg", "rle"])
def test_truncated_clip_keeps_whole_frames_and_is_flagged(tmp_path, encoding):
    frames = _write(tmp_path / "t.dcm", n=10, encoding=encoding)
    data = (tmp_path / "t.dcm").read_bytes()
    cut = 64 * 80 * 2 + 100 if encoding == "native" else len(data) // 3
    (tmp_path / "t.dcm").write_bytes(data[: len(data) - cut])
    cine = read_cine(tmp_path / "t.dcm")
    kept = cine.sizes["time"]
    assert 0 < kept < 10
    assert f"t.dcm: truncated: kept {kept} of 10 frames" in cine.attrs["flags"]
    if encoding != "jpeg":
        np.testing.assert_array_equal(cine.values, frames[:kept])
    assert read_header(tmp_path / "t.dcm").truncated


def test_declared_frames_beyond_the_data_are_truncation(tmp_path):
    _write(tmp_path / "t.dcm", n=6, n_frames_declared=9)
    header = read_header(tmp_path / "t.dcm")
    assert (header.n_frames, header.n_frames_present, header.truncated) == (9, 6, True)


def test_dual_display_spacing_follows_the_panel_or_roi(tmp_path):
    regions = [(0, 0, 39, 63, 0.01), (40, 0, 79, 63, 0.02)]
    _write(tmp_path / "d.dcm", regions=regions)
    assert read_cine(tmp_path / "d.dcm").attrs["spacing_mm"] == pytest.approx([0.1, 0.1])
    right = read_cine(tmp_path / "d.dcm", panel="right")
    assert right.attrs["spacing_mm"] == pytest.approx([0.2, 0.2]) and right.attrs["region"] == [40, 0, 79, 63]
    assert read_cine(tmp_path / "d.dcm", roi=(50, 10, 70, 30)).attrs["region"] == [40, 0, 79, 63]
    assert right.x.values[1] == pytest.approx(0.2)


def test_no_decoding_until_compute(tmp_path, monkeypatch):
    _write(tmp_path / "a.dcm", encoding="jpeg")
    calls = []
    original = pixels_module.decode_frame
    monkeypatch.setattr(pixels_module, "decode_frame", lambda *a, **k: calls.append(1) or original(*a, **k))
    cine = read_cine(tmp_path / "a.dcm")
    subset = cine.isel(time=slice(2, 4)).mean()
    assert calls == [] and cine.chunks[0] == (1,) * 8
    subset.compute()
    assert len(calls) == 2


def test_no_identifying_value_in_the_cine(tmp_path):
    _write(tmp_path / "a.dcm", patient_id="ZZ12345", patient_name="SMITH^JOHN", start=T0)
    cine = read_cine(tmp_path / "a.dcm")
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    secrets = ["ZZ12345", "SMITH", "JOHN", "19610203", "20200304", "100000", "Nowhere", "ACC778899",
               "D:/patients", ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "2020"]
    text = repr(cine) + repr(cine.attrs) + repr(cine.coords) + repr({k: v.attrs for k, v in cine.coords.items()})
    text += repr(read_header(tmp_path / "a.dcm"))
    for secret in secrets:
        assert secret not in text, secret
