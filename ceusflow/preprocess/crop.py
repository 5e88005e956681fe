"""Crop each frame to its box and resize it to ``size x size``; intensity normalisation.

Resizing samples the box at the centres of a ``size x size`` grid with bilinear interpolation
after a Gaussian anti-aliasing prefilter of sigma ``(scale - 1) / 2`` pixels per axis when the
box is larger than the output (scikit-image's ``resize(anti_aliasing=True)`` rule). Boxes may be
fractional (tracked); a box of exactly ``size`` integer pixels is a plain slice.

Normalisation: the stored grey levels are the scanner's 8-bit log-compressed display values; they
are mapped linearly to [0, 1] by ``grey / 255``, the same for every patient. No per-patient
rescaling: between-patient differences in enhancement are part of the signal (the gain spread of
about 2 dB is left to augmentation).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from ceusflow.conventions import TIME, X, Y
from ceusflow.preprocess.roi import BOX, CORNERS

GREY_MAX = 255.0


def normalise(grey: np.ndarray) -> np.ndarray:
    """8-bit grey levels to float32 in [0, 1] (``grey / 255``)."""
    return (np.asarray(grey, dtype=np.float32) / np.float32(GREY_MAX)).astype(np.float32)


def pixel_offset(cine: xr.DataArray) -> tuple[int, int]:
    """Whole-frame pixel index ``(row, column)`` of the cine's first pixel (a window keeps mm coords)."""
    dy, dx = (float(s) for s in cine.attrs["spacing_mm"])
    return int(round(float(cine[Y].values[0]) / dy)), int(round(float(cine[X].values[0]) / dx))


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int = 64) -> np.ndarray:
    """Crop one frame to ``box`` (pixels of ``frame``; x0, y0, x1, y1) and resize to ``size``.

    Parameters
    ----------
    frame : ndarray (y, x)
        Grey levels.
    box : ndarray (4,)
        Float pixels, x1/y1 exclusive.
    size : int

    Returns
    -------
    ndarray (size, size) float32 in [0, 1]
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.all(np.isfinite(box)) or x1 <= x0 or y1 <= y0:
        return np.zeros((size, size), np.float32)
    sy, sx = (y1 - y0) / size, (x1 - x0) / size
    cy = y0 + (np.arange(size) + 0.5) * sy - 0.5
    cx = x0 + (np.arange(size) + 0.5) * sx - 0.5
    halo = int(np.ceil(4 * max(sy, sx, 1.0)))
    r0, c0 = max(int(np.floor(cy[0])) - halo, 0), max(int(np.floor(cx[0])) - halo, 0)
    r1, c1 = int(np.ceil(cy[-1])) + halo + 1, int(np.ceil(cx[-1])) + halo + 1
    patch = np.asarray(frame[r0:r1, c0:c1], dtype=np.float32)
    sigma = (max((sy - 1) / 2, 0.0), max((sx - 1) / 2, 0.0))
    if max(sigma) > 0:
        patch = ndimage.gaussian_filter(patch, sigma, mode="nearest")
    grid = np.meshgrid(cy - r0, cx - c0, indexing="ij")
    out = ndimage.map_coordinates(patch, grid, order=1, mode="nearest")
    return np.clip(out / np.float32(GREY_MAX), 0.0, 1.0).astype(np.float32)


def crop_resize(cine: xr.DataArray, boxes: xr.DataArray, size: int = 64) -> xr.DataArray:
    """Crop every frame to its box and resize it to ``size x size`` (lazy, one task per frame).

    Parameters
    ----------
    cine : DataArray (time, y, x)
        Grey levels; may be a spatial window of the whole frame (``y``/``x`` in mm, attrs
        ``spacing_mm``), e.g. a resampled cine restricted to the ROI's neighbourhood.
    boxes : DataArray (time, box)
        Whole-frame pixels (see :mod:`ceusflow.preprocess.roi`); numpy or dask.
    size : int
        Output side in pixels (default 64).

    Returns
    -------
    DataArray (time, y, x) float32 in [0, 1]
        ``y``/``x`` = index of the resized ROI; the cine's time coords kept.
    """
    oy, ox = pixel_offset(cine)
    local = boxes.transpose(TIME, BOX).sel({BOX: list(CORNERS)}) - xr.DataArray(
        np.array([ox, oy, ox, oy], float), dims=BOX, coords={BOX: list(CORNERS)})
    frames = da.asarray(cine.transpose(TIME, Y, X).data)
    frames = frames.rechunk({1: -1, 2: -1})
    box = da.asarray(local.data).astype(np.float64).rechunk({0: frames.chunks[0], 1: -1})
    data = da.blockwise(_crop_block, "tij", frames, "tyx", box, "tk", new_axes={"i": size, "j": size},
                        concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32), size=int(size))
    coords = {k: v for k, v in cine.coords.items() if v.dims == (TIME,)}
    coords.update({Y: np.arange(size), X: np.arange(size)})
    return xr.DataArray(data, dims=(TIME, Y, X), coords=coords, name=cine.name,
                        attrs={"units": "1", "normalisation": "grey / 255 (8-bit log-compressed display)"})


def _crop_block(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    return np.stack([crop_frame(f, b, size) for f, b in zip(frames, boxes, strict=True)])
