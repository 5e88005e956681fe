"""One patient: validate and plan (no pixel read), then the lazy ROI pipeline.

``plan_patient`` decides, from metadata only, which stored frames and which fixed pixel window
are needed: the frames nearest the ``fps`` grid up to the end of the last phase, and the union
over those frames of the box expanded by ``max(margin, TIC context) + search radius``. Bad input
(no box, a box outside the image, a cine shorter than the last phase) raises here, before any
pixel is read. ``patient_rois`` then builds the dask graph: resample -> window -> dark frames ->
tracking -> crop/resize -> phases, plus the time-intensity curves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ceusflow.conventions import CLIP, FRAME_OK, INTENSITY, TIME, X, Y
from ceusflow.errors import InputError
from ceusflow.preprocess.crop import crop_resize
from ceusflow.preprocess.phases import check_phases, split_phases
from ceusflow.preprocess.resample import dark_frames, grid_times, nearest_frames, resample, source_step
from ceusflow.preprocess.roi import BOX, CORNERS, clip_box, expand_box, image_bounds, roi_boxes
from ceusflow.preprocess.tic import CONTEXT_MM, tic_curves
from ceusflow.preprocess.track import SEARCH_MM, track_roi, twin_offset

#: Frames per dask task after the read (the read itself stays one stored frame per chunk).
FRAMES_PER_TASK = 32


@dataclass(frozen=True)
class PatientPlan:
    """What to read and where, for one patient (metadata only; picklable).

    Attributes
    ----------
    key : str
        Pseudonym.
    fps, end_s : float
        Grid rate (frames/s) and end (s, exclusive).
    window : (r0, r1, c0, c1)
        Whole-frame pixel window read from every needed frame.
    boxes : ndarray (time, 4)
        Manual box in force at each grid time (whole-frame pixels).
    anchor : ndarray (time,)
        Grid index of each frame's anchor (the frame nearest the manual row's ``t_s``).
    bounds : (x0, y0, x1, y1)
        Image or contrast-region bounds (pixels).
    spacing_mm : (dy, dx)
    """

    key: str
    fps: float
    end_s: float
    window: tuple[int, int, int, int]
    boxes: np.ndarray
    anchor: np.ndarray
    bounds: tuple[float, float, float, float]
    spacing_mm: tuple[float, float]
    margin_mm: float
    search_mm: float

    @property
    def grid(self) -> np.ndarray:
        """Exam grid times (s)."""
        return grid_times(self.end_s, self.fps)

    def local(self, boxes: np.ndarray) -> np.ndarray:
        """Whole-frame boxes to window pixels."""
        r0, _, c0, _ = self.window
        return np.asarray(boxes, dtype=float) - np.array([c0, r0, c0, r0], dtype=float)


def plan_patient(cine: xr.DataArray, rois: pd.DataFrame | None, *, key: str, fps: float = 2.0,
                 margin_mm: float = 10.0, phases: Mapping[str, tuple[float, float]] | None = None,
                 search_mm: float = SEARCH_MM, context_mm: float = CONTEXT_MM) -> PatientPlan:
    """Validate one patient's inputs and decide what to read (reads no pixel).

    Parameters
    ----------
    cine : DataArray (time, y, x)
        The stored cine (lazy); attrs ``spacing_mm`` (dy, dx) and ``region``.
    rois : DataFrame or None
        The patient's rows (t_s, x0, y0, x1, y1).
    key : str
    fps, margin_mm, search_mm, context_mm : float
    phases : mapping name -> (start_s, end_s)

    Returns
    -------
    PatientPlan

    Raises
    ------
    InputError
        No box; a box outside the image; the cine ends before the last phase.
    """
    from ceusflow.conventions import PHASE_WINDOWS_S

    end = max(e for _, e in check_phases(phases or PHASE_WINDOWS_S).values())
    times = np.asarray(cine[TIME].values, dtype=float)
    _check_length(times, end, fps, key)
    grid = grid_times(end, fps)
    spacing = tuple(float(s) for s in cine.attrs["spacing_mm"])
    bounds = image_bounds(cine)
    boxes = roi_boxes(rois, grid, source=key)
    expand_box(boxes, margin_mm, spacing, bounds=bounds, source=key)  # raises for a box outside
    ok = nearest_frames(times, grid)[1]
    return PatientPlan(key, float(fps), float(end), _window(boxes, spacing, bounds, margin_mm, search_mm, context_mm),
                       boxes.values, _anchors(boxes["anchor_s"].values, grid, ok), bounds, spacing,
                       float(margin_mm), float(search_mm))


def _check_length(times: np.ndarray, end: float, fps: float, key: str) -> None:
    last = float(times[-1]) if times.size else 0.0
    if last + 0.5 * max(source_step(times), 1.0 / fps) < end - 1.0 / fps:
        raise InputError(key, f"cine ends at {last:.1f} s, before the end of the last phase ({end:g} s)",
                         "shorten --phases or leave this patient out")


def _window(boxes: xr.DataArray, spacing: tuple[float, ...], bounds: tuple[float, ...], margin_mm: float,
            search_mm: float, context_mm: float) -> tuple[int, int, int, int]:
    outer = expand_box(boxes, max(margin_mm, context_mm) + search_mm, spacing, bounds=bounds).values
    c0, r0 = int(np.floor(outer[:, 0].min())), int(np.floor(outer[:, 1].min()))
    c1, r1 = int(np.ceil(outer[:, 2].max())), int(np.ceil(outer[:, 3].max()))
    return r0, r1, c0, c1


def _anchors(anchor_s: np.ndarray, grid: np.ndarray, ok: np.ndarray) -> np.ndarray:
    valid = np.flatnonzero(ok) if ok.any() else np.arange(grid.size)
    out = np.empty(grid.size, dtype=int)
    for t in np.unique(anchor_s):
        out[anchor_s == t] = valid[np.argmin(np.abs(grid[valid] - t))]
    return out


def patient_rois(cine: xr.DataArray, plan: PatientPlan, *, size: int = 64,
                 phases: Mapping[str, tuple[float, float]] | None = None, track: bool = True) -> xr.Dataset:
    """The lazy ROI dataset of one patient (nothing computed).

    Parameters
    ----------
    cine : DataArray (time, y, x)
        The stored cine (lazy).
    plan : PatientPlan
    size : int
        ROI side after resizing (pixels).
    phases : mapping name -> (start_s, end_s)
    track : bool
        Follow the ROI (False: the manual boxes as drawn).

    Returns
    -------
    Dataset
        (phase, time[, y, x]): ``intensity``, ``frame_ok``, ``box``, ``displacement``,
        ``track_score``, ``tracked``; coords ``t_exam``, ``t_source``; and ``tic`` (part, exam_time).
    """
    from ceusflow.conventions import PHASE_WINDOWS_S

    windows = _windows(cine, plan)
    motion = _motion(windows, plan, track, _twin(cine, plan) if track else None)
    manual = xr.DataArray(plan.boxes, dims=(TIME, BOX), coords={TIME: windows[TIME].values, BOX: list(CORNERS)})
    shift = xr.DataArray(motion["displacement"].data[:, [1, 0, 1, 0]], dims=(TIME, BOX), coords=manual.coords)
    roi = clip_box(expand_box(manual, plan.margin_mm, plan.spacing_mm) + shift, plan.bounds)
    tumour = manual + shift
    ds = xr.Dataset({INTENSITY: crop_resize(windows, roi, size).reset_coords(drop=True),
                     FRAME_OK: windows[FRAME_OK].reset_coords(drop=True),
                     "t_source": windows["t_source"].reset_coords(drop=True),
                     "roi_box": roi.astype(np.float32).reset_coords(drop=True), **motion.data_vars})
    ds["roi_box"].attrs.update(units="pixel", long_name="ROI box (tracked, expanded, clipped), whole-frame pixels")
    ds = ds.drop_vars([c for c in (CLIP, "frame") if c in ds.coords])
    out = split_phases(ds.set_coords(["t_source"]), phases or PHASE_WINDOWS_S, fps=plan.fps)
    out[FRAME_OK] = out[FRAME_OK].astype(bool)
    tic = tic_curves(windows, tumour, plan).rename({TIME: "exam_time"})
    return out.assign(tic=tic, tic_ok=windows[FRAME_OK].rename({TIME: "exam_time"}).reset_coords(drop=True))


def _windows(cine: xr.DataArray, plan: PatientPlan) -> xr.DataArray:
    r0, r1, c0, c1 = plan.window
    resampled = resample(cine, plan.fps, end_s=plan.end_s)
    windows = resampled.isel({Y: slice(r0, r1), X: slice(c0, c1)}).chunk({TIME: FRAMES_PER_TASK})
    ok = windows[FRAME_OK].data & ~dark_frames(windows.reset_coords(drop=True)).data
    return windows.assign_coords({FRAME_OK: (TIME, ok)})


def _twin(cine: xr.DataArray, plan: PatientPlan) -> xr.DataArray | None:
    """The same window in the B-mode panel of a dual display (None on a single display)."""
    off = twin_offset(plan.bounds, cine.sizes[X])
    r0, r1, c0, c1 = plan.window
    if off is None or c0 + off < 0 or c1 + off > cine.sizes[X]:
        return None
    resampled = resample(cine, plan.fps, end_s=plan.end_s)
    return resampled.isel({Y: slice(r0, r1), X: slice(c0 + off, c1 + off)}).chunk({TIME: FRAMES_PER_TASK})


def _motion(windows: xr.DataArray, plan: PatientPlan, track: bool, bmode: xr.DataArray | None = None
            ) -> xr.Dataset:
    if not track:
        n = windows.sizes[TIME]
        return xr.Dataset({"displacement": ((TIME, "axis"), np.zeros((n, 2), np.float32), {"units": "pixel"}),
                           "track_score": (TIME, np.full(n, np.nan, np.float32)), "tracked": (TIME, np.zeros(n, bool))},
                          coords={TIME: windows[TIME].values, "axis": ["y", "x"]})
    patch = plan.local(expand_box(xr.DataArray(plan.boxes, dims=(TIME, BOX), coords={BOX: list(CORNERS)}),
                                  plan.margin_mm, plan.spacing_mm, bounds=plan.bounds).values)
    patch = np.rint(patch[plan.anchor]).astype(int)
    return track_roi(windows, patch, plan.anchor, spacing_mm=plan.spacing_mm, search_mm=plan.search_mm,
                     bmode=bmode, fps=plan.fps)
