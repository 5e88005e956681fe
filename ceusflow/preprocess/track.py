"""Follow the ROI through breathing motion and drift: band-limited phase correlation.

Liu et al. 2020 corrected the box by hand on some frames. Here every frame is registered to the
*anchor* frame of the manual row in force (the frame the annotator drew on, or corrected): the
patch under the anchor's box (plus margin) in the anchor frame and in the frame at hand are
Hann-windowed, their normalised cross-power spectrum is weighted by a Gaussian low-pass of
``sigma_mm`` (speckle decorrelates within 0.15 s, so only the tissue structure is trackable) and
the correlation peak inside ``±search_mm`` gives the displacement, refined to sub-pixel precision by
a parabola through the peak. The peak height (1 = identical patches) is the confidence; frames
below ``min_score``, dropped or missing frames take the displacement interpolated in time from
their confident neighbours. Displacement is 0 at every anchor: the manual corrections are kept.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from ceusflow.conventions import FRAME_OK, TIME

AXES = ("y", "x")
#: Search radius (mm): breathing moves the liver 1.5-4 mm (up to ~10 mm peak to peak in deep
#: breathing) plus slow drift between manual corrections.
SEARCH_MM = 8.0
SIGMA_MM = 1.5
MIN_SCORE = 0.08


def phase_shift(ref: np.ndarray, img: np.ndarray, *, max_shift_px: tuple[float, float],
                sigma_px: tuple[float, float]) -> tuple[float, float, float]:
    """Displacement of ``img`` relative to ``ref`` (``img(p) ~ ref(p - d)``) by phase correlation.

    Parameters
    ----------
    ref, img : ndarray (y, x)
        Same-shape patches from the same pixel location.
    max_shift_px : (dy, dx)
        Search radius in pixels.
    sigma_px : (sy, sx)
        Gaussian low-pass weighting the cross-power spectrum, in pixels.

    Returns
    -------
    dy, dx : float
        Pixels (sub-pixel).
    score : float
        Peak of the band-limited phase correlation divided by its ideal value (1 = identical).
    """
    a, b = _prepare(ref), _prepare(img)
    cross = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    cross /= np.maximum(np.abs(cross), 1e-12)
    weight = _lowpass(a.shape, sigma_px)
    surface = np.real(np.fft.ifft2(cross * weight)) / max(float(weight.mean()), 1e-12)
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


def track_roi(windows: xr.DataArray, patch: np.ndarray, anchor: np.ndarray, *, spacing_mm: tuple[float, float],
              search_mm: float = SEARCH_MM, sigma_mm: float = SIGMA_MM, min_score: float = MIN_SCORE
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
    search_mm, sigma_mm : float
        Search radius and low-pass sigma in mm.
    min_score : float
        Frames whose correlation peak is lower take the interpolated displacement.

    Returns
    -------
    Dataset (time)
        ``displacement`` (time, axis) in pixels (y = rows, x = columns), ``track_score`` (time),
        ``tracked`` (time): True where the displacement was measured rather than interpolated.
    """
    dy, dx = (float(s) for s in spacing_mm)
    frames = da.asarray(windows.data).rechunk({1: -1, 2: -1})
    refs = frames[np.asarray(anchor, dtype=int)].rechunk({0: frames.chunks[0]})
    boxes = da.from_array(np.asarray(patch, dtype=np.int64), chunks=(frames.chunks[0], 4))
    opts = {"max_shift_px": (search_mm / dy, search_mm / dx), "sigma_px": (sigma_mm / dy, sigma_mm / dx)}
    raw = da.blockwise(_track_block, "tj", frames, "tyx", refs, "tyx", boxes, "tk", new_axes={"j": 4},
                       concatenate=True, dtype=np.float64, meta=np.empty((0, 0)), **opts)
    ok = windows[FRAME_OK].data if FRAME_OK in windows.coords else np.ones(windows.sizes[TIME], bool)
    filled = da.map_blocks(_fill, raw.rechunk({0: -1}), da.asarray(ok).rechunk(-1), np.asarray(anchor, dtype=int),
                           min_score=min_score, dtype=np.float64, chunks=(raw.shape[0], 4), meta=np.empty((0, 0)))
    coords = {TIME: windows[TIME].values}
    return xr.Dataset({"displacement": ((TIME, "axis"), filled[:, :2].astype(np.float32), {"units": "pixel"}),
                       "track_score": (TIME, filled[:, 2].astype(np.float32)),
                       "tracked": (TIME, filled[:, 3] > 0)}, coords={**coords, "axis": list(AXES)})


def _track_block(frames: np.ndarray, refs: np.ndarray, boxes: np.ndarray, *, max_shift_px: tuple[float, float],
                 sigma_px: tuple[float, float]) -> np.ndarray:
    out = np.empty((frames.shape[0], 4))
    for i, (frame, ref, box) in enumerate(zip(frames, refs, boxes, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        patch = frame[y0:y1, x0:x1]
        out[i, :3] = phase_shift(ref[y0:y1, x0:x1], patch, max_shift_px=max_shift_px, sigma_px=sigma_px)
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


def _fill(raw: np.ndarray, ok: np.ndarray, anchor: np.ndarray, *, min_score: float) -> np.ndarray:
    """Anchors: 0; confident enhanced frames: measured; others: interpolated within their anchor's segment."""
    ok = np.asarray(ok, dtype=bool)
    t = np.arange(raw.shape[0])
    is_anchor = anchor == t
    usable = enhanced(raw[:, 3], ok)
    floor = max(min_score, 0.5 * float(np.median(raw[usable, 2]))) if usable.any() else min_score
    good = (usable & (raw[:, 2] >= floor)) | is_anchor
    measured = np.where(is_anchor[:, None], 0.0, raw[:, :2])
    disp = np.zeros_like(measured)
    good &= ~_outliers(measured, good, is_anchor)
    for a in np.unique(anchor):
        seg, use = anchor == a, (anchor == a) & good
        if use.any():
            disp[seg] = np.stack([np.interp(t[seg], t[use], measured[use, k]) for k in range(2)], axis=1)
    return np.column_stack([disp, np.where(ok, raw[:, 2], np.nan), good & ok])
