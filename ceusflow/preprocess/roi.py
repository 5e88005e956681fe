"""Tumour boxes: per-frame boxes from rois.csv rows or ITK-SNAP masks, expanded by a margin in mm.

A box is four numbers along a ``box`` dim ``(x0, y0, x1, y1)`` in whole-frame pixel coordinates
(x = column, y = row; x1/y1 exclusive): pixel ``i`` covers ``[i, i + 1)``, so its centre is at
``i + 0.5``. Boxes may be fractional once tracked or expanded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ceusflow.conventions import PATIENT, TIME
from ceusflow.errors import InputError

BOX = "box"
CORNERS = ("x0", "y0", "x1", "y1")
Bounds = tuple[float, float, float, float]


def image_bounds(cine: xr.DataArray) -> Bounds:
    """Pixel bounds ``(x0, y0, x1, y1)`` (x1/y1 exclusive) inside which a box may lie.

    The chosen ultrasound region (``attrs["region"]``, inclusive DICOM bounds: on a dual display the
    contrast panel) when the store recorded one, else the whole frame.

    Parameters
    ----------
    cine : DataArray (time, y, x)

    Returns
    -------
    tuple of float
    """
    region = list(cine.attrs.get("region") or [])
    if len(region) == 4:
        return float(region[0]), float(region[1]), float(region[2]) + 1, float(region[3]) + 1
    return 0.0, 0.0, float(cine.sizes["x"]), float(cine.sizes["y"])


def roi_boxes(rois: pd.DataFrame, times: Sequence[float] | np.ndarray, *, source: str = "rois") -> xr.DataArray:
    """Per-frame boxes: a row holds from its ``t_s`` until the patient's next row.

    Frames before the first row take the first row's box (the annotator draws on a frame with a
    distinct tumour, e.g. the arterial peak, and the box is meant for the whole cine).

    Parameters
    ----------
    rois : DataFrame
        One patient's rows: ``t_s`` (s since the exam's first frame), ``x0, y0, x1, y1`` (pixels).
    times : array of float
        Frame times, s since the exam's first frame.
    source : str
        Named in errors (the patient's pseudonym).

    Returns
    -------
    DataArray (time, box)
        Float pixels; coord ``anchor_s`` (time): ``t_s`` of the row in force (the tracking anchor).

    Raises
    ------
    InputError
        No row, or a degenerate box (x1 <= x0 or y1 <= y0).
    """
    rows = _checked_rows(rois, source)
    times = np.asarray(times, dtype=float)
    which = np.clip(np.searchsorted(rows["t_s"].to_numpy(), times, side="right") - 1, 0, None)
    values = rows[list(CORNERS)].to_numpy(dtype=float)[which]
    anchors = rows["t_s"].to_numpy(dtype=float)[which]
    return xr.DataArray(values, dims=(TIME, BOX), name=BOX,
                        coords={TIME: times, BOX: list(CORNERS), "anchor_s": (TIME, anchors)},
                        attrs={"units": "pixel", "convention": "whole-frame pixels, x1/y1 exclusive"})


def _checked_rows(rois: pd.DataFrame, source: str) -> pd.DataFrame:
    if rois is None or len(rois) == 0:
        raise InputError(source, "no ROI box for this patient", "add a rois.csv row or a mask")
    rows = rois.sort_values("t_s", kind="stable").reset_index(drop=True)
    bad = (rows["x1"] <= rows["x0"]) | (rows["y1"] <= rows["y0"])
    if bad.any():
        row = rows[bad].iloc[0]
        raise InputError(source, f"empty box at t={row.t_s:g} s ({row.x0:g}, {row.y0:g}, {row.x1:g}, {row.y1:g})",
                         "x1 must exceed x0 and y1 exceed y0")
    return rows


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Box through a 2-D mask's topmost, bottommost, leftmost and rightmost points (as Liu et al.).

    Parameters
    ----------
    mask : ndarray (y, x)
        Nonzero inside the annotation.

    Returns
    -------
    tuple (x0, y0, x1, y1) or None
        Pixels, x1/y1 exclusive; None for an empty mask.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def mask_rois(path: str | os.PathLike[str], times: Sequence[float] | np.ndarray, *, patient: str) -> pd.DataFrame:
    """Rois rows from an ITK-SNAP segmentation (NIfTI): one box per annotated frame.

    ITK-SNAP writes a cine loaded from DICOM as a volume with voxel axes ``(x, y, frame)``
    (a single 2-D annotation: ``(x, y)``, which then holds for the whole cine). The frame index is
    the position in the stored cine.

    Parameters
    ----------
    path : path-like
        ``masks/<patient>.nii.gz``.
    times : array of float
        The stored cine's frame times (s), to turn frame indices into ``t_s``.
    patient : str
        The pseudonym written in the ``patient`` column and named in errors.

    Returns
    -------
    DataFrame
        Columns patient, t_s, x0, y0, x1, y1.
    """
    import nibabel as nib

    try:
        volume = np.asanyarray(nib.load(os.fspath(path)).dataobj)
    except (OSError, ValueError) as err:
        raise InputError(patient, f"cannot read mask {Path(path).name} ({err})", "re-export it from ITK-SNAP") from err
    volume = volume.reshape(volume.shape[:2] + (-1,)) if volume.ndim >= 2 else volume
    rows = []
    for k in range(volume.shape[2]):
        box = box_from_mask(volume[:, :, k].T)
        if box is not None:
            t = 0.0 if volume.shape[2] == 1 else float(np.asarray(times)[min(k, len(times) - 1)])
            rows.append((patient, t, *box))
    return pd.DataFrame(rows, columns=[PATIENT, "t_s", *CORNERS])


def expand_box(boxes: xr.DataArray, margin_mm: float = 10.0, spacing_mm: Sequence[float] = (1.0, 1.0), *,
               bounds: Bounds | None = None, source: str = "box") -> xr.DataArray:
    """Expand boxes by ``margin_mm`` on every side and clip them to ``bounds``.

    Parameters
    ----------
    boxes : DataArray (..., box)
        Pixels (see the module docstring).
    margin_mm : float
        Margin in mm (Liu et al. 2020: 1 cm).
    spacing_mm : (dy, dx)
        Pixel spacing in mm (rows, columns).
    bounds : (x0, y0, x1, y1), optional
        Image or contrast-region bounds in pixels (x1/y1 exclusive); None: no clipping.
    source : str
        Named in errors.

    Returns
    -------
    DataArray (..., box)
        Float pixels; contains the input box wherever the input lies inside ``bounds``.

    Raises
    ------
    InputError
        A box does not overlap ``bounds`` (drawn outside the image or on the other panel).
    """
    if margin_mm < 0:
        raise InputError("margin_mm", f"is {margin_mm}", "give a margin >= 0 mm")
    dy, dx = (float(s) for s in spacing_mm)
    grow = xr.DataArray(np.array([-margin_mm / dx, -margin_mm / dy, margin_mm / dx, margin_mm / dy]),
                        dims=BOX, coords={BOX: list(CORNERS)})
    out = boxes + grow
    if bounds is None:
        return out.assign_attrs(boxes.attrs)
    _check_inside(boxes, bounds, source)
    return clip_box(out, bounds).assign_attrs(boxes.attrs)


def clip_box(boxes: xr.DataArray, bounds: Bounds) -> xr.DataArray:
    """Clip boxes to ``bounds`` (pixels, x1/y1 exclusive)."""
    lo = xr.DataArray(np.array(bounds[:2] * 2), dims=BOX, coords={BOX: list(CORNERS)})
    hi = xr.DataArray(np.array(bounds[2:] * 2), dims=BOX, coords={BOX: list(CORNERS)})
    return boxes.clip(lo, hi)


def _check_inside(boxes: xr.DataArray, bounds: Bounds, source: str) -> None:
    b = np.asarray(boxes.transpose(..., BOX).values, dtype=float).reshape(-1, 4)
    outside = (b[:, 0] >= bounds[2]) | (b[:, 2] <= bounds[0]) | (b[:, 1] >= bounds[3]) | (b[:, 3] <= bounds[1])
    if outside.any():
        box = ", ".join(f"{v:g}" for v in b[np.argmax(outside)])
        raise InputError(source, f"box ({box}) lies outside the image region "
                         f"({', '.join(f'{v:g}' for v in bounds)})",
                         "check the rois.csv row (whole-frame pixels, x = column) or the panel it was drawn on")
