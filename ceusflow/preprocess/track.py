"""Follow the ROI through breathing motion and drift: correlation channels and a breathing model.

Liu et al. 2020 corrected the box by hand on some frames. Here every frame is registered to the
*anchor* frame of the manual row in force (the frame the annotator drew on, or corrected): the
patch under the anchor's box (plus margin) in the anchor frame against the frame at hand, the
peak inside ``±search_mm`` giving the displacement, refined to sub-pixel precision by a parabola.

Three channels:

* **contrast, phase correlation** (every exam): Hann-windowed patches, whitened cross-power
  spectrum with a Gaussian low-pass ``sigma_mm`` (:func:`phase_shift`). Before the bolus arrives
  a contrast-mode image is noise: only enhanced frames count.
* **contrast, template matching** (every exam, ``template=True``): the anchor's low-passed patch
  moved over the frame, normalised cross-correlation with a light taper, the black outside the
  sector flattened (:func:`template_shift`). It matches a smooth enhancing tumour whole where
  phase correlation is noisy; phase correlation is better where the appearance changes. Frame
  by frame, the locally more self-consistent of the two is taken (averaged where they agree):
  :func:`_fuse`.
* **B-mode** (dual displays, B-mode | contrast side by side): the same box in the B-mode panel,
  plain (unwhitened) band-limited cross-correlation, low-pass ``bmode_sigma_mm``. Tissue is visible
  from the first frame and its appearance does not change with the contrast kinetics.

Frames whose peak is low, or far from the running median of their confident neighbours, are not
trusted. The confident displacements are then smoothed and filled, per anchor segment and clip:

* by the **breathing model** (``model=True``) where it predicts the measurements better than a
  short local quadratic does (leave-one-out): local sinusoid at the patient's breathing rate
  (:func:`breathing_frequency`) plus local drift, robust to false peaks (:func:`breathing_fit`).
  It also carries the breathing into the pre-contrast seconds of a single display, where it
  predicted held-out measurements better than the centre hold did, and it removes the anchor
  frame's own registration error, common to every measurement of the segment;
* else (irregular breathing, short clips, ``model=False``) by a quadratic Savitzky-Golay filter
  over ``SMOOTH_S``; frames more than ``MAX_GAP_S`` from any confident frame take the *local
  centre* (the median of the nearest confident displacements over ``CENTRE_S``), which bounds their
  error by the breathing amplitude instead of twice it.

Then, ``refine`` times (:func:`refine_shift`), every frame is registered again, no longer to the
anchor frame but to the mean of its neighbours in time, all moved back by the last estimate
(motion-compensated), searched close to that estimate; the neighbourhoods' means are registered to
each other and chained back to the anchor. Late frames of a tumour that washed out look like
their neighbours, not like the arterial-phase anchor, and a mean of a dozen frames is cleaner than
the anchor frame alone. The contrast measurement is replaced by the refined one and smoothed and
filled as above.

Displacement is 0 at every anchor: the manual corrections are kept.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage, signal

from ceusflow.conventions import CLIP, FRAME_OK, TIME

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
#: Breathing model: periods searched (s), the periodogram peak needed (x median power), the local
#: fit's half-width (s, ~3 cycles in all), extrapolation before the first measurement (s: the
#: pre-contrast seconds of a single display), measurements needed per clip, and the half-width
#: of the local quadratic it competes with (s: ~5 frames at 2 fps, like SMOOTH_S's filter).
BREATH_S = (2.5, 8.0)
MIN_PEAK = 8.0
LOCAL_S = 7.0
EXTRAPOLATE_S = 25.0
MIN_FIT_POINTS = 8
LOCAL_POLY_S = 1.6
#: Two contrast measurements closer than this (px) are averaged rather than chosen between.
AGREE_PX = 1.5
#: Template matching's Tukey taper (0: box, 1: Hann). Tuned on 4 simulated 12-patient cohorts
#: (0, 0.25, 0.5, 1): 0.25 was best or tied on each; a wider taper misses whole-tumour matches.
TAPER = 0.25
#: Refinement (``refine`` passes): frames are registered again, each to the motion-compensated
#: mean of its neighbours (bins of ``BIN_S`` around the anchor, at least ``MIN_BIN_FRAMES``), searched
#: within ``REFINE_MM`` of the last pass's displacement; adjacent bins' templates are registered to
#: each other (within ``LINK_MM``) and chained back to the anchor. Tuned on 3 simulated 12-patient
#: cohorts (bins 3/4/6/8 s, search 3/4/6 mm, links to 1/2/4 bins back, 1-3 passes).
REFINE_PASSES = 2
BIN_S = 6.0
MIN_BIN_FRAMES = 3
REFINE_MM = 4.0
LINK_MM = 4.0
LINK_BINS = (1, 2)
#: Weight (relative to a perfect link's 1) pulling each bin's offset toward the last pass: keeps a
#: chain without links (a clip without the anchor, an isolated bin) where the last pass put it.
PRIOR_WEIGHT = 0.01


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


def template_shift(ref: np.ndarray, search: np.ndarray, origin: tuple[int, int], *,
                   sigma_px: tuple[float, float]) -> tuple[float, float, float]:
    """Displacement of ``ref`` inside ``search`` by normalised cross-correlation (template matching).

    Unlike :func:`phase_shift`, the template moves over the frame instead of the frame moving under
    a fixed, tapered window: a smooth enhancing blob (a tumour in the arterial phase) is matched
    whole, where phase correlation whitens its few low frequencies up to the level of the speckle.
    Both are Gaussian low-passed first (speckle decorrelates between frames; structure does not).

    Parameters
    ----------
    ref : ndarray (h, w)
        The template (the anchor frame's patch).
    search : ndarray (H, W)
        The frame around the same place, larger by the search radius on each side (less where it
        meets the window's edge).
    origin : (row, column)
        Where the template's corner lies in ``search`` at zero displacement.
    sigma_px : (sy, sx)
        Gaussian low-pass (pixels).

    Returns
    -------
    dy, dx : float
        Pixels (sub-pixel).
    score : float
        Peak normalised correlation (1 = identical up to gain and offset).
    """
    return _Template(ref, sigma_px).match(search, origin)


class _Template:
    """A low-passed, tapered template and its spectra per search size (reused for every frame of an anchor)."""

    def __init__(self, ref: np.ndarray, sigma_px: tuple[float, float]) -> None:
        t = ndimage.gaussian_filter(_flatten_outside(ref), sigma_px)
        # tapered correlation: the ROI's centre counts, the patch's border (where static things such
        # as the sector's edge sit) fades out
        w = np.outer(*(signal.windows.tukey(n + 2, TAPER)[1:-1] for n in t.shape))
        self.t = w * (t - np.sum(w * t) / w.sum())
        self.w, self.sigma_px = w, sigma_px
        self.norm = float(np.sqrt(np.sum(self.t * self.t / np.maximum(w, 1e-12))))
        self._spectra: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def match(self, search: np.ndarray, origin: tuple[int, int]) -> tuple[float, float, float]:
        img = ndimage.gaussian_filter(_flatten_outside(search), self.sigma_px)
        shape = img.shape
        if shape not in self._spectra:  # circular correlation at the search's size: no wrap in the valid part
            self._spectra[shape] = tuple(np.conj(np.fft.rfft2(a, s=shape)) for a in (self.t, self.w))
        f_t, f_w = self._spectra[shape]
        f_img, f_sq = np.fft.rfft2(img), np.fft.rfft2(img * img)
        valid = (slice(0, shape[0] - self.t.shape[0] + 1), slice(0, shape[1] - self.t.shape[1] + 1))
        num, total, energy = (np.fft.irfft2(a * b, s=shape)[valid] for a, b in ((f_img, f_t), (f_img, f_w),
                                                                               (f_sq, f_w)))
        spread = np.sqrt(np.maximum(energy - total * total / self.w.sum(), 0.0))
        ncc = num / np.maximum(self.norm * spread, 1e-9)
        iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        dy = iy + _parabola(ncc[:, ix], iy) - origin[0]
        dx = ix + _parabola(ncc[iy, :], ix) - origin[1]
        return float(dy), float(dx), float(ncc[iy, ix])


def _flatten_outside(image: np.ndarray) -> np.ndarray:
    """The image with the black outside the sector set to the mean grey inside it.

    The sector's edge does not move with the liver: left black, it pulls a correlation toward
    zero displacement. Outside = exactly 0 over most of a 5-pixel neighbourhood (dark speckle
    inside the sector is rarely 0 over so many pixels).
    """
    img = np.asarray(image, dtype=np.float64)
    zero = img == 0
    if np.count_nonzero(zero) < 0.02 * img.size:  # inside the sector, or nearly: nothing to flatten
        return img
    outside = ndimage.uniform_filter(zero.astype(np.float64), 5) > 0.8
    if not outside.any() or outside.all():
        return img
    out = img.copy()
    out[outside] = img[~outside].mean()
    return out


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
              bmode_sigma_mm: float = BMODE_SIGMA_MM, min_score: float = MIN_SCORE, fps: float = 2.0,
              model: bool = True, template: bool = True, refine: int = REFINE_PASSES) -> xr.Dataset:
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
    model : bool
        Smooth and fill with the local breathing model (:func:`breathing_fit`, per clip when
        ``windows`` has a ``clip`` coord); False: Savitzky-Golay smoothing and centre hold.
    template : bool
        Also register the contrast panel by template matching (:func:`template_shift`) and take,
        frame by frame, the contrast measurement (phase correlation or template) that is locally
        the more self-consistent (:func:`_fuse`); False: phase correlation only.
    refine : int
        Passes of :func:`refine_shift` after the first: each frame registered again to the
        motion-compensated mean of its neighbours, chained back to the anchor (0: the tracker of
        session 10, every frame registered to its anchor frame only).

    Returns
    -------
    Dataset (time)
        ``displacement`` (time, axis) in pixels (y = rows, x = columns), ``track_score`` (time,
        the contrast channel's peak), ``tracked`` (time): True where measured with confidence
        rather than filled.
    """
    dy, dx = (float(s) for s in spacing_mm)
    shift = (search_mm / dy, search_mm / dx)
    sigma = (sigma_mm / dy, sigma_mm / dx)
    raw = _measure(windows, patch, anchor, max_shift_px=shift, sigma_px=sigma, method="phase")
    if template:
        matched = _measure(windows, patch, anchor, max_shift_px=shift, sigma_px=sigma, method="template")
        raw = da.concatenate([raw, matched[:, :3]], axis=1)
    if bmode is not None:
        side = _measure(bmode, patch, anchor, max_shift_px=shift, sigma_px=(bmode_sigma_mm / dy, bmode_sigma_mm / dx),
                        method="plain")
        raw = da.concatenate([raw, side[:, :3]], axis=1)
    ok = windows[FRAME_OK].data if FRAME_OK in windows.coords else np.ones(windows.sizes[TIME], bool)
    clips = windows[CLIP].data if CLIP in windows.coords else np.zeros(windows.sizes[TIME], int)
    raw, ok, clips = raw.rechunk({0: -1, 1: -1}), da.asarray(ok).rechunk(-1), da.asarray(clips).rechunk(-1)
    filled = da.map_blocks(_fill, raw, ok, np.asarray(anchor, dtype=int), clips, min_score=min_score,
                           fps=float(fps), model=model, template=template, dtype=np.float64,
                           chunks=(raw.shape[0], 4), meta=np.empty((0, 0)))
    if refine:
        whole = da.asarray(windows.data).rechunk(-1)  # one patient's windows: a few MB
        opts = {"anchor": np.asarray(anchor, dtype=int), "patch": np.asarray(patch), "spacing_mm": (dy, dx),
                "sigma_mm": sigma_mm, "min_score": min_score, "fps": float(fps), "model": model,
                "bmode": bmode is not None}
        for _ in range(int(refine)):  # blockwise, not delayed: a delayed call would re-read the windows
            filled = da.blockwise(_refined, "tk", whole, "tyx", raw, "tc", filled, "tj", ok, "t", clips, "t",
                                  new_axes={"k": 4}, concatenate=True, dtype=np.float64, meta=np.empty((0, 0)),
                                  **opts)
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
                 sigma_px: tuple[float, float], method: str) -> np.ndarray:
    """``method``: "phase" (:func:`phase_shift`, whitened), "plain" (unwhitened) or "template"."""
    out = np.empty((frames.shape[0], 4))
    ry, rx = (int(np.floor(m)) for m in max_shift_px)
    templates: dict[tuple[int, ...], _Template] = {}
    for i, (frame, ref, box) in enumerate(zip(frames, refs, boxes, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        patch = frame[y0:y1, x0:x1]
        if method == "template":
            key = (x0, y0, x1, y1, hash(ref[y0:y1, x0:x1].tobytes()))  # one template per anchor frame
            if key not in templates:
                templates[key] = _Template(ref[y0:y1, x0:x1], sigma_px)
            out[i, :3] = templates[key].match(*_search_region(frame, (x0, y0, x1, y1), (ry, rx)))
        else:
            out[i, :3] = phase_shift(ref[y0:y1, x0:x1], patch, max_shift_px=max_shift_px, sigma_px=sigma_px,
                                     whiten=method == "phase")
        out[i, 3] = float(np.mean(patch, dtype=np.float64))
    return out


def refine_shift(frames: np.ndarray, patch: np.ndarray, anchor: np.ndarray, clips: np.ndarray, use: np.ndarray,
                 displacement: np.ndarray, *, spacing_mm: tuple[float, float], fps: float,
                 sigma_mm: float = SIGMA_MM) -> np.ndarray:
    """Displacement per frame against the motion-compensated mean of its neighbours, chained to the anchor.

    Registering every frame to the anchor frame fails where the appearance has changed since (a
    tumour that washed out is dark where the anchor showed it bright) and shares the anchor
    frame's own noise. Here, given a displacement estimate (the last pass), per anchor segment
    and clip:

    1. each frame is moved back by its estimate, so that all show the anchor frame's geometry;
    2. frames are grouped in bins of ``BIN_S`` (the anchor at the centre of bin 0); each frame
       is registered to the mean of the other frames of its bin (:func:`template_shift`, within
       ``REFINE_MM``): the residual of its estimate relative to the bin's common error;
    3. each bin's common error is found by registering bin means to each other (``LINK_BINS``
       back, within ``LINK_MM``): neighbours in time look alike, and means are clean. A weighted
       least-squares fit of those links (weight: squared peak correlation), tied to the anchor
       frame's own residual (its displacement is 0 by definition) and weakly to the estimate
       (``PRIOR_WEIGHT``), gives every bin's offset.

    Parameters
    ----------
    frames : ndarray (time, y, x)
        The windows around the ROI (one patient).
    patch : ndarray (time, 4) int
        Per frame, the registered region ``(x0, y0, x1, y1)`` (the anchor's box plus margin).
    anchor, clips : ndarray (time,) int
        Per frame, its anchor frame and clip.
    use : ndarray (time,) bool
        Frames to average and measure (enhanced, valid frames for a contrast panel).
    displacement : ndarray (time, 2)
        The estimate to refine (pixels, y then x).
    spacing_mm : (dy, dx)
    fps : float
        Frame rate of ``frames``.
    sigma_mm : float
        Gaussian low-pass of the matching (mm).

    Returns
    -------
    ndarray (time, 3)
        ``dy, dx`` (pixels) and the peak normalised correlation per frame; NaN where not measured
        (frames not in ``use``, bins with fewer than ``MIN_BIN_FRAMES``).
    """
    n = frames.shape[0]
    out = np.full((n, 3), np.nan)
    sigma = tuple(sigma_mm / s for s in spacing_mm)
    radius = tuple(max(int(np.ceil(REFINE_MM / s)), 2) for s in spacing_mm)
    link = tuple(max(int(np.ceil(LINK_MM / s)), 2) for s in spacing_mm)
    moved = _moved_back(frames, displacement, use)
    t = np.arange(n) / fps
    for piece in _pieces(np.ones(n, bool), anchor, clips):
        idx = np.flatnonzero(piece)
        a = int(anchor[idx[0]])
        box = tuple(int(v) for v in patch[a])
        bins = np.floor((t[idx] - t[a]) / BIN_S + 0.5).astype(int)
        members = {int(k): idx[(bins == k) & use[idx]] for k in np.unique(bins)}
        members = {k: m for k, m in members.items() if m.size >= MIN_BIN_FRAMES}
        if not members:
            continue
        sums = {k: moved[m].sum(axis=0) for k, m in members.items()}
        for k, m in members.items():
            for i in m:
                out[i] = _match((sums[k] - moved[i]) / (m.size - 1), moved[i], box, radius, sigma)
        at_anchor = out[a, :2] if 0 in members and a in members[0] else None
        offsets = _chain({k: sums[k] / members[k].size for k in members}, box, link, sigma, at_anchor)
        for k, m in members.items():
            out[m, :2] += displacement[m] - offsets[k]
    return out


def _moved_back(frames: np.ndarray, displacement: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Frames in ``use`` moved by minus their displacement (bilinear; the rest left 0)."""
    out = np.zeros(frames.shape, np.float64)
    for i in np.flatnonzero(use):
        out[i] = ndimage.shift(_flatten_outside(frames[i]), -np.asarray(displacement[i], float), order=1,
                               mode="nearest")
    return out


def _match(ref: np.ndarray, img: np.ndarray, box: tuple[int, ...], radius: tuple[int, ...],
           sigma: tuple[float, ...]) -> tuple[float, float, float]:
    """:func:`template_shift` of ``ref``'s patch inside ``img`` around the same box, ``radius`` pixels out."""
    x0, y0, x1, y1 = box
    return _Template(ref[y0:y1, x0:x1], sigma).match(*_search_region(img, box, radius))


def _search_region(img: np.ndarray, box: tuple[int, ...], radius: tuple[int, ...]
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """The box ``(x0, y0, x1, y1)`` grown by ``radius`` (dy, dx) pixels, clipped to ``img``; the box's corner in it."""
    x0, y0, x1, y1 = box
    sy0, sx0 = max(y0 - radius[0], 0), max(x0 - radius[1], 0)
    return img[sy0:min(y1 + radius[0], img.shape[0]), sx0:min(x1 + radius[1], img.shape[1])], (y0 - sy0, x0 - sx0)


def _chain(means: dict[int, np.ndarray], box: tuple[int, ...], link: tuple[int, ...], sigma: tuple[float, ...],
           at_anchor: np.ndarray | None) -> dict[int, np.ndarray]:
    """Each bin mean's offset (dy, dx) from the anchor frame's geometry: least squares over the links."""
    keys = sorted(means)
    col = {k: j for j, k in enumerate(keys)}
    rows, rhs, weights = [], [], []

    def equation(coefs: dict[int, float], value: tuple[float, float], weight: float) -> None:
        row = np.zeros(len(keys))
        for k, c in coefs.items():
            row[col[k]] = c
        rows.append(row)
        rhs.append(value)
        weights.append(weight)

    for k in keys:
        for step in LINK_BINS:
            if k - step in col:  # the later mean is the earlier moved by -(offset_k - offset_{k-step})
                dy, dx, score = _match(means[k - step], means[k], box, link, sigma)
                equation({k: 1.0, k - step: -1.0}, (-dy, -dx), max(score, 0.0) ** 2)
        equation({k: 1.0}, (0.0, 0.0), PRIOR_WEIGHT)
    if at_anchor is not None:  # the anchor frame's residual is its bin's offset (its displacement is 0)
        equation({0: 1.0}, (float(at_anchor[0]), float(at_anchor[1])), 1 / PRIOR_WEIGHT)
    root = np.sqrt(np.asarray(weights))[:, None]
    solution = np.linalg.lstsq(np.asarray(rows) * root, np.asarray(rhs) * root, rcond=None)[0]
    return {k: solution[col[k]] for k in keys}


def _refined(frames: np.ndarray, raw: np.ndarray, filled: np.ndarray, ok: np.ndarray, clips: np.ndarray, *,
             anchor: np.ndarray, patch: np.ndarray, spacing_mm: tuple[float, float], sigma_mm: float,
             min_score: float, fps: float, model: bool, bmode: bool) -> np.ndarray:
    """One refinement pass: :func:`refine_shift` of the contrast panel, then :func:`_fill` with it.

    The contrast measurement is replaced by the refined one; the B-mode panel's (the last three
    columns of ``raw`` when ``bmode``) is kept: its appearance does not change with the contrast.
    """
    ok = np.asarray(ok, dtype=bool)
    level = raw[:, 3]
    refined = refine_shift(frames, patch, anchor, np.asarray(clips), enhanced(level, ok), filled[:, :2],
                           spacing_mm=spacing_mm, fps=fps, sigma_mm=sigma_mm)
    found = np.isfinite(refined[:, 2])
    cols = [np.where(found[:, None], refined[:, :2], 0.0), np.where(found, refined[:, 2], 0.0), level]
    if bmode:
        cols.append(raw[:, -3:])
    return _fill(np.column_stack(cols), ok, anchor, clips, min_score=min_score, fps=fps, model=model)


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


def _combine(raw: np.ndarray, ok: np.ndarray, is_anchor: np.ndarray, min_score: float, *, template: bool,
             anchor: np.ndarray, clips: np.ndarray, fps: float, model: bool) -> tuple[np.ndarray, np.ndarray]:
    """Confident displacement per frame (time, 2) and its mask: contrast, B-mode, or their mean.

    ``raw`` columns: phase correlation ``(dy, dx, score, patch mean)``, then ``(dy, dx, score)`` of
    the template channel when ``template``, then of the B-mode panel when present.
    """
    usable = enhanced(raw[:, 3], ok)
    shift = np.where(is_anchor[:, None], 0.0, raw[:, :2])
    good = _confident(shift, raw[:, 2], usable, is_anchor, min_score)
    col = 4
    if template:
        matched = np.where(is_anchor[:, None], 0.0, raw[:, 4:6])
        good_m = _confident(matched, raw[:, 6], usable, is_anchor, min_score)
        shift, good = _fuse([shift, matched], [good, good_m], anchor, clips, fps, model)
        col = 7
    if raw.shape[1] < col + 3:
        return shift, good
    side = np.where(is_anchor[:, None], 0.0, raw[:, col:col + 2])
    good_b = _confident(side, raw[:, col + 2], ok, is_anchor, min_score)
    w_c, w_b = 1 / _noise(shift, good) ** 2, 1 / _noise(side, good_b) ** 2
    both = (good & good_b)[:, None]
    merged = np.where(both, (w_c * shift + w_b * side) / (w_c + w_b), np.where(good[:, None], shift, side))
    return merged, good | good_b


def _fuse(values: list[np.ndarray], goods: list[np.ndarray], anchor: np.ndarray, clips: np.ndarray, fps: float,
          model: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two measurements of the same motion, merged frame by frame by their local self-consistency.

    Each channel's confident measurements are predicted leave-one-out by the smoother of
    :func:`breathing_fit` (the breathing model when a breathing rate shows, else a local
    quadratic), clip by clip; the squared prediction errors, averaged over ``LOCAL_S`` around each
    frame (tricube), estimate the channel's local error variance. A channel locked on a wrong peak
    (inverted or iso-enhancing contrast, speckle) jumps around and predicts itself badly. Where
    both are confident and agree within ``AGREE_PX`` they are averaged (inverse variance), where
    they disagree the locally better one is taken, else whichever is confident. Without the model
    or local evidence (short clips), the first channel wins a disagreement.
    """
    n = values[0].shape[0]
    t = np.arange(n) / fps
    variance = [np.full(n, np.inf) for _ in values]
    pieces = [(t[m], v[m]) for v, g in zip(values, goods, strict=True)
              for m in _pieces(g & (anchor != np.arange(n)), anchor, clips)]
    omega = breathing_frequency(pieces) if model else None
    if model:
        for k, (v, g) in enumerate(zip(values, goods, strict=True)):
            for a in np.unique(anchor):
                seg = anchor == a
                pts, errs = [], []
                for m in _pieces(g & seg & (np.arange(n) != a), anchor, clips):
                    if m.sum() < MIN_FIT_POINTS:
                        continue
                    pts.append(t[m])
                    errs.append(_loo_errors(t[m], v[m], omega))
                if pts:
                    variance[k][seg] = _local_mean(np.concatenate(pts), np.concatenate(errs), t[seg], LOCAL_S)
    first, second = values
    g1, g2 = goods
    agree = np.hypot(*(first - second).T) <= AGREE_PX
    finite = np.isfinite(variance[0]) & np.isfinite(variance[1])
    w1, w2 = (np.where(finite, 1 / np.maximum(v, 1e-6), 1.0) for v in variance)
    mean = (w1[:, None] * first + w2[:, None] * second) / (w1 + w2)[:, None]
    pick_second = variance[1] < variance[0]
    both = np.where(agree[:, None], mean, np.where(pick_second[:, None], second, first))
    out = np.where((g1 & g2)[:, None], both, np.where(g1[:, None], first, second))
    return out, g1 | g2


def _loo_errors(t: np.ndarray, values: np.ndarray, omega: float | None) -> np.ndarray:
    """Squared leave-one-out prediction errors of the breathing model (``omega`` None: the local quadratic)."""
    opts = {"omega": omega} if omega is not None else {"omega": None, "half_s": LOCAL_POLY_S, "degree": 2}
    return np.sum((values - breathing_fit(t, values, t, leave_out=True, **opts)) ** 2, axis=1)


def _pieces(mask: np.ndarray, anchor: np.ndarray, clips: np.ndarray) -> list[np.ndarray]:
    """``mask`` split by anchor segment and clip (boolean masks)."""
    return [mask & (anchor == a) & (clips == c) for a in np.unique(anchor) for c in np.unique(clips)
            if (mask & (anchor == a) & (clips == c)).any()]


def _local_mean(t: np.ndarray, values: np.ndarray, at: np.ndarray, half_s: float) -> np.ndarray:
    """Tricube-weighted mean of ``values`` (at times ``t``) around each time in ``at``; inf without any."""
    w = np.clip(1 - np.abs((at[:, None] - t[None, :]) / half_s) ** 3, 0, None) ** 3
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * values[None, :]).sum(axis=1) / total, np.inf)


def _noise(values: np.ndarray, good: np.ndarray) -> float:
    """Robust scatter (px) of a channel's confident measurements about their 3-frame running mean."""
    v = values[good]
    if v.shape[0] < 5:
        return np.inf
    resid = v[1:-1] - 0.5 * (v[:-2] + v[2:])  # breathing is near linear over 3 frames
    return max(float(np.median(np.abs(resid))) * 1.4826 / np.sqrt(1.5), 1e-3)


def _fill(raw: np.ndarray, ok: np.ndarray, anchor: np.ndarray, clips: np.ndarray | None = None, *,
          min_score: float, fps: float, model: bool = True, template: bool = False) -> np.ndarray:
    """Per frame ``(dy, dx, contrast score, confident)``: anchors 0, the rest smoothed or filled per segment.

    ``model``: the local breathing model (:func:`breathing_fit`) per anchor segment and clip; False:
    the Savitzky-Golay smoothing and centre hold of :func:`_segment` (the tracker of sessions 2-9).
    """
    ok = np.asarray(ok, dtype=bool)
    t = np.arange(raw.shape[0])
    is_anchor = anchor == t
    clips = np.zeros(t.size, int) if clips is None else np.asarray(clips)
    measured, good = _combine(raw, ok, is_anchor, min_score, template=template, anchor=anchor, clips=clips, fps=fps,
                              model=model)
    good &= ok | is_anchor
    disp = np.zeros_like(measured)
    omega = breathing_frequency([(t[m] / fps, measured[m]) for m in _pieces(good & ~is_anchor, anchor, clips)]
                                ) if model else None
    for a in np.unique(anchor):
        seg = np.flatnonzero(anchor == a)
        use = seg[good[seg]]
        if not use.size:
            continue
        disp[seg] = _segment(seg, use, measured, fps)
        if model:
            disp[seg] = _modelled(seg, use[use != a], a, measured, clips, fps, omega, disp[seg])
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


def breathing_frequency(pieces: list[tuple[np.ndarray, np.ndarray]], *, periods_s: tuple[float, float] = BREATH_S,
                        min_points: int = 12, min_peak: float = MIN_PEAK) -> float | None:
    """Breathing angular frequency (rad/s) of confident displacements, or None when no clear peak.

    Lomb-Scargle periodogram (uneven sampling, gaps) of each piece's detrended displacement (both
    axes), summed over the pieces weighted by their length; the peak must carry ``min_peak`` times
    the median power and lie inside the band (the search runs to twice its longest period, where
    a random walk or a slow drift peaks instead).

    Parameters
    ----------
    pieces : list of (t (n,), values (n, 2))
        Times (s) and displacements (px) of one anchor segment and clip each.
    periods_s : (shortest, longest)
        Breathing periods searched (adults at rest: 12-20 breaths/min; sedated or deep: up to 8 s).
    """
    # searched up to twice the longest period: a random walk or slow drift rises toward long
    # periods and peaks there, out of the breathing band
    freqs = 2 * np.pi / np.linspace(2 * periods_s[1], periods_s[0], 360)
    power, total = np.zeros(freqs.size), 0
    for t, v in pieces:
        if t.size < min_points:
            continue
        design = np.c_[np.ones(t.size), t - t.mean()]
        resid = v - design @ np.linalg.lstsq(design, v, rcond=None)[0]
        for k in range(2):
            if np.ptp(resid[:, k]) > 0:
                power += t.size * signal.lombscargle(t, resid[:, k], freqs, normalize=True)
        total += t.size
    i = int(np.argmax(power))
    if (total == 0 or power[i] < min_peak * np.median(power) or not 0 < i < freqs.size - 1
            or freqs[i] < 2 * np.pi / periods_s[1]):
        return None
    left, mid, right = power[i - 1:i + 2]  # parabolic refinement of the peak
    denom = left - 2 * mid + right
    step = 0.5 * (left - right) / denom if denom < 0 else 0.0
    return float(np.interp(i + step, np.arange(freqs.size), freqs))


def breathing_fit(t: np.ndarray, values: np.ndarray, at: np.ndarray, omega: float | None, *,
                  half_s: float = LOCAL_S, degree: int = 1, extrapolate_s: float = EXTRAPOLATE_S,
                  iterations: int = 3, leave_out: bool = False) -> np.ndarray:
    """Local breathing model of displacements, evaluated at times ``at``.

    Around each time, a weighted least-squares fit (tricube weights over ``half_s``) of
    ``c + e (t - tc) + a sin(omega (t - tc)) + b cos(omega (t - tc))`` per axis (``omega`` None: a
    local polynomial of ``degree``), with Tukey biweights against the fit's residuals
    (``iterations``): a smoother that knows breathing is quasi-periodic, so it averages noise over
    several cycles without flattening them, and a false correlation peak carries no weight.
    Amplitude, phase and drift are local; ``omega`` is one per patient. Times outside the
    measurements take the fit of the nearest full window, extrapolated up to ``extrapolate_s``
    (the drift term held at the window's edge); beyond that, the window's centre.

    Parameters
    ----------
    t : ndarray (n,)
        Times of the measurements (s).
    values : ndarray (n, 2)
        Measured displacements (px).
    at : ndarray (m,)
        Times to evaluate (s).
    omega : float or None
        Breathing angular frequency (rad/s), :func:`breathing_frequency`.
    half_s, degree : float, int
        Half-width of the local window (s); polynomial degree when ``omega`` is None.
    leave_out : bool
        ``at`` is ``t`` and each value is predicted without its own measurement (cross-validation).

    Returns
    -------
    ndarray (m, 2)
    """
    weights = np.ones(t.size)
    for _ in range(iterations):
        resid = np.hypot(*(values - _local_fit(t, values, weights, t, omega, half_s, degree, extrapolate_s)).T)
        scale = max(1.4826 * float(np.median(resid)), 0.1) * 4.685
        weights = np.clip(1 - (resid / scale) ** 2, 0, None) ** 2
    return _local_fit(t, values, weights, at, omega, half_s, degree, extrapolate_s, leave_out=leave_out)


def _local_fit(t: np.ndarray, values: np.ndarray, weights: np.ndarray, at: np.ndarray, omega: float | None,
               half_s: float, degree: int, extrapolate_s: float, *, leave_out: bool = False) -> np.ndarray:
    """All the local weighted least-squares fits of :func:`breathing_fit` at once (batched normal equations)."""
    first, last = float(t.min()), float(t.max())
    span_half = min(half_s, 0.5 * (last - first))
    centre = np.clip(at, first + span_half, last - span_half)
    when = np.where(np.abs(at - centre) > extrapolate_s, centre, at)
    u = t[None, :] - centre[:, None]
    w = weights[None, :] * np.clip(1 - np.abs(u / half_s) ** 3, 0, None) ** 3
    if leave_out:
        w[np.arange(at.size), np.arange(at.size)] = 0.0
    design = _design(u, omega, degree)
    weighted = design * w[..., None]
    normal = np.einsum("mnp,mnq->mpq", weighted, design)
    rhs = np.einsum("mnp,nk->mpk", weighted, values)
    coef = np.linalg.pinv(normal, rcond=1e-10) @ rhs
    lag = when - centre
    row = _design(lag, omega, degree)
    if omega is not None:
        row[:, 1] = np.clip(lag, -half_s, half_s)  # drift held at the window's edge
    out = np.einsum("mp,mpk->mk", row, coef)
    total = w.sum(axis=1)
    few = np.count_nonzero(w > 0, axis=1) < design.shape[-1] + 2  # too few for the model: the local mean
    mean = (w @ values) / np.where(total > 0, total, 1.0)[:, None]
    return np.where(few[:, None], mean, out)


def _design(u: np.ndarray, omega: float | None, degree: int) -> np.ndarray:
    if omega is None:
        return np.stack([u**k for k in range(degree + 1)], axis=-1)
    return np.stack([np.ones_like(u), u, np.sin(omega * u), np.cos(omega * u)], axis=-1)


def _modelled(seg: np.ndarray, use: np.ndarray, a: int, measured: np.ndarray, clips: np.ndarray, fps: float,
              omega: float | None, fallback: np.ndarray) -> np.ndarray:
    """One anchor's frames, clip by clip: the breathing model where it predicts better, re-zeroed at the anchor.

    Per clip, the breathing model (:func:`breathing_fit`) competes with a local quadratic over
    ``LOCAL_POLY_S`` (the short smoothing of ``fallback``, no breathing assumed): where the model's
    leave-one-out prediction of the measurements is better (median squared error), it smooths the
    clip, else the clip keeps ``fallback``. Frames more than ``MAX_GAP_S`` from any measurement
    (before contrast arrival on a single display) take the model's extrapolation only where it
    predicted held-out measurements better than the centre hold did (:func:`_extrapolation_wins`).
    Each measurement is relative to the one anchor frame, whose own noise is common to all of
    them; where the anchor's clip is modelled, the model's value at the anchor (not itself
    fitted: it is exactly 0) estimates that noise and is subtracted from the whole segment.
    """
    out = fallback.copy()
    zero = np.zeros(2)
    if omega is None:
        return out
    for c in np.unique(clips[seg]):
        frames = seg[clips[seg] == c]
        pts = use[clips[use] == c]
        if pts.size < MIN_FIT_POINTS:
            continue
        tp, vp = pts / fps, measured[pts]
        if np.median(_loo_errors(tp, vp, omega)) >= np.median(_loo_errors(tp, vp, None)):
            continue
        want = np.append(frames, a) if clips[a] == c else frames
        fit = breathing_fit(tp, vp, want / fps, omega)
        far = np.abs(frames[:, None] - pts[None, :]).min(axis=1) > MAX_GAP_S * fps
        far &= ~_extrapolation_wins(tp, vp, frames / fps, omega)
        keep = np.searchsorted(seg, frames)
        out[keep] = np.where(far[:, None], out[keep], fit[:frames.size])
        if clips[a] == c:
            zero = fit[-1]
    return out - zero


def _extrapolation_wins(t: np.ndarray, values: np.ndarray, at: np.ndarray, omega: float) -> np.ndarray:
    """Per time in ``at``: whether the model's extrapolation beat the centre hold on held-out data.

    For the frames before the first measurement (and, mirrored, after the last), the gap's
    length of measurements at that end is held out; the model fitted on the rest predicts them,
    and so does the median of the first ``CENTRE_S`` of the rest (the hold). The model
    extrapolates only where its error was the smaller.
    """
    wins = np.zeros(at.size, bool)
    for side, gap in ((-1, t.min() - at.min()), (1, at.max() - t.max())):
        if gap <= MAX_GAP_S:
            continue
        span = min(gap, EXTRAPOLATE_S)
        test = t < t.min() + span if side < 0 else t > t.max() - span
        train = ~test
        if train.sum() < MIN_FIT_POINTS or np.ptp(t[train]) < 2 * LOCAL_S or test.sum() < 4:  # 2 windows to fit
            continue
        model = breathing_fit(t[train], values[train], t[test], omega)
        edge = t[train] <= t[train].min() + CENTRE_S if side < 0 else t[train] >= t[train].max() - CENTRE_S
        hold = np.median(values[train][edge], axis=0)
        better = np.sum((values[test] - model) ** 2) < np.sum((values[test] - hold) ** 2)
        wins |= better & ((at < t.min()) if side < 0 else (at > t.max()))
    return wins
