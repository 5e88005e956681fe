"""Follow the ROI through breathing motion and drift: band-limited phase correlation.

Liu et al. 2020 corrected the box by hand on some frames. Here every frame is registered to the
*anchor* frame of the manual row in force (the frame the annotator drew on, or corrected): the
patch under the anchor's box (plus margin) in the anchor frame and in the frame at hand are
Hann-windowed and cross-correlated with a Gaussian low-pass weighting of the spectrum; the peak
inside ``±search_mm`` gives the displacement, refined to sub-pixel precision by a parabola.

Two channels:

* **contrast** (every exam): phase correlation (whitened cross-power spectrum), low-pass
  ``sigma_mm``. Before the bolus arrives a contrast-mode image is noise: only enhanced frames count.
* **B-mode** (dual displays, B-mode | contrast side by side): the same box in the B-mode panel,
  plain (unwhitened) band-limited cross-correlation, low-pass ``bmode_sigma_mm``. Tissue is visible
  from the first frame and its appearance does not change with the contrast kinetics.

Frames whose peak is low, or far from the running median of their confident neighbours, are not
trusted. The confident displacements (the mean of both channels where both are confident) are
interpolated over short gaps and smoothed by a quadratic Savitzky-Golay filter over
``smooth_s`` (keeps >= 95 % of a breathing cycle of 3.5 s at 2 frames/s, noise x 0.7); frames
more than ``max_gap_s`` from any confident frame (e.g. before contrast arrival on a single display,
or an iso-enhancing tumour) take the *local centre* -- the median of the nearest confident
displacements over ``centre_s`` -- which bounds their error by the breathing amplitude instead of
twice it. Displacement is 0 at every anchor: the manual corrections are kept.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage, signal

from ceusflow.conventions import FRAME_OK, TIME

AXES = ("y", "x")
#: Search radius (mm): breathing moves the liver 1.5-4 mm (up to ~10 mm peak to peak in deep
#: breathing) plus slow drift between manual corrections.
SEARCH_MM = 8.0
SIGMA_MM = 1.5
BMODE_SIGMA_MM = 2.0
MIN_SCORE = 0.08
SMOOTH_S = 2.5
MAX_GAP_S = 2.0
CENTRE_S = 8.0


def phase_shift(ref: np.ndarray, img: np.ndarray, *, max_shift_px: tuple[float, float],
                sigma_px: tuple[float, float], whiten: bool = True) -> tuple[float, float, float]:
    """Displacement of ``img`` relative to ``ref`` (``img(p) ~ ref(p - d)``) by band-limited correlation.

    Parameters
    ----------
    ref, img : ndarray (y, x)
        Same-shape patches from the same pixel location.
    max_shift_px : (dy, dx)
        Search radius in pixels.
    sigma_px : (sy, sx)
        Gaussian low-pass weighting the cross-power spectrum, in pixels.
    whiten : bool
        True: phase correlation (cross-power spectrum normalised to unit magnitude); False:
        normalised cross-correlation of the low-passed patches (better for faint, smooth targets).

    Returns
    -------
    dy, dx : float
        Pixels (sub-pixel).
    score : float
        Correlation peak divided by its ideal value (1 = identical patches).
    """
    a, b = _prepare(ref), _prepare(img)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    cross, weight = fb * np.conj(fa), _lowpass(a.shape, sigma_px)
    if whiten:
        cross /= np.maximum(np.abs(cross), 1e-12)
        norm = max(float(weight.sum()), 1e-12)
    else:
        weight = weight**2
        norm = max(float(np.sqrt(np.sum(np.abs(fa) ** 2 * weight) * np.sum(np.abs(fb) ** 2 * weight))), 1e-12)
    surface = np.real(np.fft.ifft2(cross * weight)) * (a.size / norm)
    return _peak(np.fft.fftshift(surface), max_shift_px)


def _prepare(patch: np.ndarray) -> np.ndarray:
    p = np.asarray(patch, dtype=np.float64)
    p = p - p.mean()
    return p * np.outer(np.hanning(p.shape[0]), np.hanning(p.shape[1]))


def _lowpass(shape: tuple[int, ...], sigma_px: tuple[float, float]) -> np.ndarray:
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2 * np.pi**2 * ((sigma_px[0] * fy) ** 2 + (sigma_px[1] * fx) ** 2))


def _peak(surface: np.ndarray, max_shift_px: tuple[float, float]) -> tuple[float, float, float]:
    cy, cx = surface.shape[0] // 2, surface.shape[1] // 2
    ry, rx = (int(min(np.floor(m), c - 1)) for m, c in zip(max_shift_px, (cy, cx), strict=True))
    local = surface[cy - ry:cy + ry + 1, cx - rx:cx + rx + 1]
    iy, ix = np.unravel_index(int(np.argmax(local)), local.shape)
    dy = iy - ry + _parabola(local[:, ix], iy)
    dx = ix - rx + _parabola(local[iy, :], ix)
    return float(dy), float(dx), float(local[iy, ix])


def _parabola(line: np.ndarray, i: int) -> float:
    if i == 0 or i == line.size - 1:
        return 0.0
    left, mid, right = line[i - 1], line[i], line[i + 1]
    denom = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5)) if denom < 0 else 0.0


def twin_offset(bounds: tuple[float, float, float, float], width: int) -> int | None:
    """Column offset from the contrast panel to the B-mode panel of a dual display, else None.

    A dual display shows B-mode | contrast side by side at the same scale: the contrast region
    (``bounds`` = x0, y0, x1, y1, x1 exclusive) spans at most half the frame and an equally wide
    strip lies beside it (left preferred, the usual layout). A few pixels of error only move the
    registered patch: displacements are measured relative to the same patch in the anchor frame.

    Parameters
    ----------
    bounds : (x0, y0, x1, y1)
        Contrast region, pixels.
    width : int
        Frame width, pixels.

    Returns
    -------
    int or None
        Add to contrast-panel columns to get B-mode-panel columns (negative: panel on the left).
    """
    x0, _, x1, _ = bounds
    w = int(round(x1 - x0))
    if w <= 0 or w > width // 2 + 1:
        return None
    if x0 >= w:
        return -w
    return w if x1 + w <= width else None


def track_roi(windows: xr.DataArray, patch: np.ndarray, anchor: np.ndarray, *, spacing_mm: tuple[float, float],
              bmode: xr.DataArray | None = None, search_mm: float = SEARCH_MM, sigma_mm: float = SIGMA_MM,
              bmode_sigma_mm: float = BMODE_SIGMA_MM, min_score: float = MIN_SCORE, fps: float = 2.0
              ) -> xr.Dataset:
    """Displacement of the ROI in each frame relative to its anchor frame (lazy).

    Parameters
    ----------
    windows : DataArray (time, y, x)
        The frames' pixels around the ROI (a fixed window of the whole frame), with a boolean coord
        ``frame_ok`` (time) when some frames are missing or dark.
    patch : ndarray (time, 4) int
        Per frame, the region registered ``(x0, y0, x1, y1)`` in *window* pixels (the anchor's box
        plus margin, shrunk by the search radius where the window is too small).
    anchor : ndarray (time,) int
        Per frame, the index of its anchor frame (a valid frame).
    spacing_mm : (dy, dx)
    bmode : DataArray (time, y, x), optional
        The same window in the B-mode panel of a dual display (see :func:`twin_offset`).
    search_mm, sigma_mm, bmode_sigma_mm : float
        Search radius and low-pass sigmas (contrast, B-mode) in mm.
    min_score : float
        Frames whose correlation peak is lower are not trusted.
    fps : float
        Frame rate of ``windows`` (frames/s): sets the smoothing and gap lengths in frames.

    Returns
    -------
    Dataset (time)
        ``displacement`` (time, axis) in pixels (y = rows, x = columns), ``track_score`` (time,
        the contrast channel's peak), ``tracked`` (time): True where measured with confidence
        rather than filled.
    """
    dy, dx = (float(s) for s in spacing_mm)
    shift = (search_mm / dy, search_mm / dx)
    raw = _measure(windows, patch, anchor, max_shift_px=shift, sigma_px=(sigma_mm / dy, sigma_mm / dx), whiten=True)
    if bmode is not None:
        side = _measure(bmode, patch, anchor, max_shift_px=shift, sigma_px=(bmode_sigma_mm / dy, bmode_sigma_mm / dx),
                        whiten=False)
        raw = da.concatenate([raw, side[:, :3]], axis=1)
    ok = windows[FRAME_OK].data if FRAME_OK in windows.coords else np.ones(windows.sizes[TIME], bool)
    filled = da.map_blocks(_fill, raw.rechunk({0: -1, 1: -1}), da.asarray(ok).rechunk(-1),
                           np.asarray(anchor, dtype=int), min_score=min_score, fps=float(fps), dtype=np.float64,
                           chunks=(raw.shape[0], 4), meta=np.empty((0, 0)))
    coords = {TIME: windows[TIME].values}
    return xr.Dataset({"displacement": ((TIME, "axis"), filled[:, :2].astype(np.float32), {"units": "pixel"}),
                       "track_score": (TIME, filled[:, 2].astype(np.float32)),
                       "tracked": (TIME, filled[:, 3] > 0)}, coords={**coords, "axis": list(AXES)})


def _measure(windows: xr.DataArray, patch: np.ndarray, anchor: np.ndarray, **opts: object) -> da.Array:
    """Per frame ``(dy, dx, score, patch mean)`` against the anchor frame (lazy, (time, 4))."""
    frames = da.asarray(windows.data).rechunk({1: -1, 2: -1})
    refs = frames[np.asarray(anchor, dtype=int)].rechunk({0: frames.chunks[0]})
    boxes = da.from_array(np.asarray(patch, dtype=np.int64), chunks=(frames.chunks[0], 4))
    return da.blockwise(_track_block, "tj", frames, "tyx", refs, "tyx", boxes, "tk", new_axes={"j": 4},
                        concatenate=True, dtype=np.float64, meta=np.empty((0, 0)), **opts)


def _track_block(frames: np.ndarray, refs: np.ndarray, boxes: np.ndarray, *, max_shift_px: tuple[float, float],
                 sigma_px: tuple[float, float], whiten: bool) -> np.ndarray:
    out = np.empty((frames.shape[0], 4))
    for i, (frame, ref, box) in enumerate(zip(frames, refs, boxes, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        patch = frame[y0:y1, x0:x1]
        out[i, :3] = phase_shift(ref[y0:y1, x0:x1], patch, max_shift_px=max_shift_px, sigma_px=sigma_px,
                                 whiten=whiten)
        out[i, 3] = float(np.mean(patch, dtype=np.float64))
    return out


def enhanced(level: np.ndarray, ok: np.ndarray, *, fraction: float = 0.2, n_baseline: int = 5) -> np.ndarray:
    """Frames whose patch mean grey has risen ``fraction`` of the way from baseline to peak.

    Before the bolus arrives a contrast-mode image is noise: there is nothing to register.
    """
    valid = np.flatnonzero(ok)
    if valid.size == 0:
        return np.zeros(level.shape, bool)
    base, peak = float(np.median(level[valid[:n_baseline]])), float(level[valid].max())
    return ok & (level >= base + fraction * (peak - base))


def _outliers(measured: np.ndarray, good: np.ndarray, is_anchor: np.ndarray, *, width: int = 3,
              limit_px: float = 3.0) -> np.ndarray:
    """Measurements further than ``limit_px`` from the running median of their confident neighbours.

    Breathing (period 3.5-5.5 s = 7-11 samples at 2 fps) survives a 3-sample median; a lone
    false peak of the correlation does not.
    """
    idx = np.flatnonzero(good)
    out = np.zeros(good.shape, bool)
    if idx.size < width:
        return out
    med = np.stack([ndimage.median_filter(measured[idx, k], size=width, mode="nearest") for k in range(2)], axis=1)
    far = np.hypot(*(measured[idx] - med).T) > limit_px
    out[idx[far]] = True
    return out & ~is_anchor


def _confident(shift: np.ndarray, score: np.ndarray, usable: np.ndarray, is_anchor: np.ndarray,
               min_score: float) -> np.ndarray:
    """Usable frames whose peak reaches half the median peak (and ``min_score``), outliers removed."""
    floor = max(min_score, 0.5 * float(np.median(score[usable]))) if usable.any() else min_score
    good = (usable & (score >= floor)) | is_anchor
    return good & ~_outliers(shift, good, is_anchor)


def _combine(raw: np.ndarray, ok: np.ndarray, is_anchor: np.ndarray, min_score: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Confident displacement per frame (time, 2) and its mask: contrast, B-mode, or their mean."""
    shift = np.where(is_anchor[:, None], 0.0, raw[:, :2])
    good = _confident(shift, raw[:, 2], enhanced(raw[:, 3], ok), is_anchor, min_score)
    if raw.shape[1] < 7:
        return shift, good
    side = np.where(is_anchor[:, None], 0.0, raw[:, 4:6])
    good_b = _confident(side, raw[:, 6], ok, is_anchor, min_score)
    w_c, w_b = 1 / _noise(shift, good) ** 2, 1 / _noise(side, good_b) ** 2
    both = (good & good_b)[:, None]
    merged = np.where(both, (w_c * shift + w_b * side) / (w_c + w_b), np.where(good[:, None], shift, side))
    return merged, good | good_b


def _noise(values: np.ndarray, good: np.ndarray) -> float:
    """Robust scatter (px) of a channel's confident measurements about their 3-frame running mean."""
    v = values[good]
    if v.shape[0] < 5:
        return np.inf
    resid = v[1:-1] - 0.5 * (v[:-2] + v[2:])  # breathing is near linear over 3 frames
    return max(float(np.median(np.abs(resid))) * 1.4826 / np.sqrt(1.5), 1e-3)


def _fill(raw: np.ndarray, ok: np.ndarray, anchor: np.ndarray, *, min_score: float, fps: float) -> np.ndarray:
    """Per frame ``(dy, dx, contrast score, confident)``: anchors 0, the rest smoothed or filled per segment."""
    ok = np.asarray(ok, dtype=bool)
    t = np.arange(raw.shape[0])
    is_anchor = anchor == t
    measured, good = _combine(raw, ok, is_anchor, min_score)
    good &= ok | is_anchor
    disp = np.zeros_like(measured)
    for a in np.unique(anchor):
        seg = np.flatnonzero(anchor == a)
        use = seg[good[seg]]
        if use.size:
            disp[seg] = _segment(seg, use, measured, fps)
    disp[is_anchor] = 0.0
    return np.column_stack([disp, np.where(ok, raw[:, 2], np.nan), good & ok])


def _segment(seg: np.ndarray, use: np.ndarray, measured: np.ndarray, fps: float) -> np.ndarray:
    """One anchor's frames: interpolate, smooth, and hold the local centre far from any measurement."""
    inner = np.stack([np.interp(seg, use, measured[use, k]) for k in range(2)], axis=1)
    window = 2 * int(round(SMOOTH_S * fps / 2)) + 1
    if seg.size >= window and use.size >= 3:
        inner = signal.savgol_filter(inner, window, 2, axis=0, mode="interp")
    centre = _centre(measured[use], max(int(round(CENTRE_S * fps)), 1))
    held = np.stack([np.interp(seg, use, centre[:, k]) for k in range(2)], axis=1)
    nearest = np.abs(seg[:, None] - use[None, :]).min(axis=1)
    return np.where((nearest > MAX_GAP_S * fps)[:, None], held, inner)


def _centre(values: np.ndarray, n: int) -> np.ndarray:
    """Median of each run of ``n`` consecutive values (k, 2) around each one, shifted inside at the ends."""
    start = np.clip(np.arange(values.shape[0]) - n // 2, 0, max(values.shape[0] - n, 0))
    return np.stack([np.median(values[s:s + n], axis=0) for s in start])
