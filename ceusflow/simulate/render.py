"""Rendering of a scene into 8-bit CEUS frames: anatomy maps, speckle, log compression.

Physics, in order: per-pixel contrast concentration from the tissue time–intensity curves and
soft (partial-volume) tissue maps that move with breathing and drift; a small residual tissue
signal; multiplicative speckle with the statistics of fully developed speckle (exponential
intensity), spatially correlated (resolution cell ~0.5 × 1 mm) and decorrelating over ~0.15 s;
additive electronic noise; log compression of a 42 dB dynamic range to 8 bits; a fan-shaped
sector with a black background. Frames are produced in blocks (vectorised over frames), so
memory stays flat whatever the cine length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, signal

from ceusflow.simulate.perfusion import supply, tissue_curve
from ceusflow.simulate.scene import Scene, displacement_mm, frame_times

DYNAMIC_RANGE_DB = 42.0
TISSUE_FLOOR = 0.0004
_TOP_DB = 0.0  # level (dB re concentration 1) mapped to grey 255 at 0 dB gain
_BLOCK = 32


def fan_mask(shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Sector (fan) of a curvilinear probe: apex above the top centre, ±36°."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    ay, ax = -0.12 * rows, (cols - 1) / 2
    r = np.hypot(y - ay, x - ax)
    angle = np.arctan2(x - ax, y - ay)
    return (np.abs(angle) < np.deg2rad(36)) & (r > 0.2 * rows) & (r < 1.1 * rows - 1)


def _soft(d: NDArray[np.float32], width: float) -> NDArray[np.float32]:
    """Partial-volume edge: 1 inside (d < 0), 0 outside, over ~``width`` mm."""
    return np.float32(0.5) * (1 - np.tanh(d / np.float32(max(width, 1e-3))))


def _window(scene: Scene) -> tuple[slice, slice]:
    """Pixel window holding the tumour, its rim and satellites wherever the motion takes them."""
    reach = max(scene.radius_mm) + scene.rim_width_mm + 14.0 + 8.0  # satellites + motion
    rows, cols = scene.panel_shape
    cy, cx = (c / scene.spacing_mm for c in scene.centre_mm)
    r = reach / scene.spacing_mm
    return (slice(max(int(cy - r), 0), min(int(cy + r) + 1, rows)),
            slice(max(int(cx - r), 0), min(int(cx + r) + 1, cols)))


def tissue_maps(scene: Scene, shift_mm: NDArray[np.float64]) -> dict[str, NDArray[np.float32]]:
    """Soft maps of each tissue class inside the tumour window, for a block of displacements.

    Parameters
    ----------
    scene : Scene
    shift_mm : ndarray (B, 2)
        Displacement (dy, dx) of the tissue in mm for each frame.

    Returns
    -------
    dict of ndarray (B, h, w)
        Weights of ``tumour``, ``core``, ``rim``, ``satellite`` on the window of ``_window``;
        ``parenchyma`` is the rest (and everything outside the window).
    """
    wy, wx = _window(scene)
    yy = ((np.arange(wy.start, wy.stop) + 0.5) * scene.spacing_mm).astype(np.float32)
    xx = ((np.arange(wx.start, wx.stop) + 0.5) * scene.spacing_mm).astype(np.float32)
    cy = (scene.centre_mm[0] + shift_mm[:, 0]).astype(np.float32)[:, None, None]
    cx = (scene.centre_mm[1] + shift_mm[:, 1]).astype(np.float32)[:, None, None]
    dy, dx = yy[None, :, None] - cy, xx[None, None, :] - cx
    ry, rx = scene.radius_mm
    rho = np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)  # 1 on the tumour margin
    edge = 0.6
    tumour = _soft((rho - 1) * ry, edge)
    core = _soft((rho - scene.core_fraction) * ry, edge) if scene.core_fraction > 0.05 else 0 * rho
    rim = _soft((rho - 1) * ry - scene.rim_width_mm, edge) - tumour
    sat = np.zeros_like(rho)
    for sy, sx, sr in scene.satellites_mm:
        sat = np.maximum(sat, _soft(np.hypot(dy - sy, dx - sx) - sr, 0.4))
    sat = sat * (1 - tumour)
    return {"tumour": tumour - core, "core": core, "rim": np.clip(rim - sat, 0, 1), "satellite": sat}


def tissue_curves(scene: Scene, t: NDArray[np.float64]) -> dict[str, NDArray[np.float32]]:
    """Time–intensity curve of every tissue class of the scene at times ``t`` (s)."""
    inputs = supply(scene.aif)
    return {k: tissue_curve(t, v, inputs).astype(np.float32) for k, v in scene.tissues.items()}


def concentration(scene: Scene, curves: dict[str, NDArray[np.float32]],
                  shift_mm: NDArray[np.float64]) -> NDArray[np.float32]:
    """Contrast concentration (linear units) per pixel: (B, rows, cols).

    ``curves`` are ``tissue_curves`` at the B frame times; ``shift_mm`` their displacements.
    """
    curves = {k: v[:, None, None] for k, v in curves.items()}
    out = np.broadcast_to(curves["parenchyma"], (shift_mm.shape[0], *scene.panel_shape)).copy()
    maps = tissue_maps(scene, shift_mm)
    wy, wx = _window(scene)
    out[:, wy, wx] += sum((curves[k] - curves["parenchyma"]) * maps[k] for k in maps)
    return out


class Speckle:
    """Correlated speckle generator: complex Gaussian field, spatial low-pass, temporal AR(1).

    The intensity ``|z|²`` has unit mean and exponential marginal (fully developed speckle).
    """

    def __init__(self, shape: tuple[int, int], spacing_mm: float, fps: float, rng: np.random.Generator,
                 *, cell_mm: tuple[float, float] = (0.5, 1.0), decorrelation_s: float = 0.15) -> None:
        self.shape, self.rng = shape, rng
        self.sigma = tuple(max(c / spacing_mm, 0.5) / 2 for c in cell_mm)
        delta = np.zeros((1, 31, 31), np.float32)
        delta[0, 15, 15] = 1
        energy = float(np.sum(ndimage.gaussian_filter(delta, (0, *self.sigma), truncate=3.0) ** 2))
        self.norm = 1.0 / np.sqrt(2.0 * energy)  # unit mean intensity after filtering
        self.rho = float(np.exp(-1.0 / (fps * decorrelation_s)))
        self.state: NDArray[np.complex128] | None = None

    def _field(self, n: int) -> NDArray[np.complex64]:
        shape = (n, *self.shape)
        field = np.empty(shape, np.complex64)
        for part in ("real", "imag"):
            white = self.rng.standard_normal(shape, dtype=np.float32)
            setattr(field, part, ndimage.gaussian_filter(white, (0, *self.sigma), truncate=3.0))
        return field * np.float32(self.norm)

    def next(self, n: int) -> NDArray[np.float32]:
        """Speckle intensity for the next ``n`` frames: (n, rows, cols)."""
        innov = self._field(n) * np.sqrt(1 - self.rho**2)
        if self.state is None:
            innov[0] /= np.sqrt(1 - self.rho**2)
            zi = np.zeros((1, *self.shape), np.complex64)
        else:
            zi = (self.rho * self.state)[None]
        z, _ = signal.lfilter([1.0], [1.0, -self.rho], innov, axis=0, zi=zi)
        self.state = z[-1]
        return (z.real**2 + z.imag**2).astype(np.float32)


def log_compress(power: NDArray[np.floating], gain_db: float) -> NDArray[np.uint8]:
    """Map linear power to 8-bit grey over ``DYNAMIC_RANGE_DB`` (top = ``_TOP_DB`` - gain)."""
    level = np.float32(10) * np.log10(np.maximum(power, np.float32(1e-12)))
    grey = (level + np.float32(gain_db - (_TOP_DB - DYNAMIC_RANGE_DB))) * np.float32(255 / DYNAMIC_RANGE_DB)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _bmode(scene: Scene, shift: NDArray[np.float64], speckle: NDArray[np.float64]) -> NDArray[np.uint8]:
    """Fundamental B-mode reference panel: echogenic parenchyma, hypoechoic tumour."""
    maps = tissue_maps(scene, shift)
    echo = np.full(speckle.shape, 0.02, np.float32)
    wy, wx = _window(scene)
    echo[:, wy, wx] *= (1 - 0.5 * (maps["tumour"] + maps["core"])) * (1 + 0.3 * maps["rim"])
    return log_compress(echo * speckle, scene.gain_db)


def render_clip(scene: Scene, clip: int, rng: np.random.Generator) -> Iterator[NDArray[np.uint8]]:
    """Render the frames of one clip, block by block.

    Parameters
    ----------
    scene : Scene
    clip : int
        Index of the clip in ``scene.clip_starts_s``.
    rng : numpy.random.Generator
        Speckle and noise generator (consumed in frame order).

    Yields
    ------
    ndarray uint8 (B, rows, cols)
        Whole frames: the contrast panel, with the B-mode panel on its left on a dual display.
    """
    t_all = frame_times(scene, clip)
    curves_all = tissue_curves(scene, t_all)
    fan = fan_mask(scene.panel_shape)
    ceus = Speckle(scene.panel_shape, scene.spacing_mm, scene.fps, rng)
    tissue = Speckle(scene.panel_shape, scene.spacing_mm, scene.fps, rng, decorrelation_s=2.0)
    for start in range(0, t_all.size, _BLOCK):
        t = t_all[start:start + _BLOCK]
        shift = displacement_mm(scene, t, clip)
        curves = {k: v[start:start + _BLOCK] for k, v in curves_all.items()}
        power = (concentration(scene, curves, shift) + TISSUE_FLOOR) * ceus.next(t.size)
        power += np.float32(10 ** ((_TOP_DB - DYNAMIC_RANGE_DB - 3) / 10)) * rng.standard_exponential(
            power.shape, dtype=np.float32)
        frames = log_compress(power, scene.gain_db) * fan
        for i in range(t.size):
            if (clip, start + i) in scene.dropped:
                frames[i] = (rng.random(scene.panel_shape) < 0.01) * fan * 8
        if scene.dual:
            left = _bmode(scene, shift, tissue.next(t.size)) * fan
            frames = np.concatenate([left, frames], axis=2)
        yield frames.astype(np.uint8)


def tumour_centre_px(scene: Scene, clip: int, *, breathing: bool = True) -> NDArray[np.float64]:
    """True tumour centre (row, column) in whole-frame pixels for each frame of ``clip``."""
    t = frame_times(scene, clip)
    pos = np.asarray(scene.centre_mm) + displacement_mm(scene, t, clip, breathing=breathing)
    px = pos / scene.spacing_mm - 0.5
    if scene.dual:
        px[:, 1] += scene.panel_shape[1]
    return px
