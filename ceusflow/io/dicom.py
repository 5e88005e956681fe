"""Read one patient's CEUS clips as one lazy cine ``intensity(time, y, x)`` in s and mm.

Headers are read eagerly (up to the Pixel Data element); pixels are decoded only when the dask
array is computed, one task per ``frames_per_chunk`` frames, each opening the file, seeking to its
frames and decoding them (:mod:`ceusflow.io.pixels`). Peak memory therefore does not grow with the
cine's length.

The returned object carries no identifier: attrs and coords come from the allow-list of
:class:`~ceusflow.io.header.ClipHeader`, absolute date-times only become offsets in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from ceusflow.conventions import CLIP, INTENSITY, TIME, X, Y
from ceusflow.errors import InputError
from ceusflow.io.header import Clip, ClipHeader, open_clip, read_header
from ceusflow.io.pixels import decode_block
from ceusflow.io.regions import Panel, UltrasoundRegion, choose_region
from ceusflow.io.timing import FALLBACKS

__all__ = ["ClipHeader", "read_cine", "read_clip", "read_frames", "read_header"]

PathLike = str | os.PathLike[str]
_SPACING_RTOL = 0.01


@dataclass(frozen=True)
class _Calibration:
    spacing_mm: tuple[float, float]  # (dy, dx)
    region: UltrasoundRegion | None
    flags: tuple[str, ...]


def read_cine(
    paths: PathLike | Iterable[PathLike],
    *,
    colour: bool = False,
    roi: Sequence[float] | None = None,
    root: PathLike | None = None,
    panel: Panel = "largest",
    spacing_mm: tuple[float, float] | None = None,
    frames_per_chunk: int = 1,
) -> xr.DataArray:
    """One patient's clips as one lazy cine on a single time axis.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        The patient's DICOM files, one clip each, in any order.
    colour : bool
        Keep RGB in a trailing ``channel`` dim (R, G, B) instead of luminance.
    roi : (x0, y0, x1, y1), optional
        A box in pixels (columns x, rows y); the spacing comes from the 2-D tissue region holding it.
    root : path-like, optional
        Export root: ``attrs["source"]`` and errors name files relative to it (file names otherwise).
    panel : {"largest", "left", "right"}
        Which 2-D region to use without ``roi`` (see :func:`~ceusflow.io.regions.choose_region`).
    spacing_mm : (dy, dx) in mm, optional
        Spacing to use when no valid ultrasound region calibrates the image.
    frames_per_chunk : int
        Frames per dask chunk (one decoding task each).

    Returns
    -------
    DataArray ``intensity`` uint8 (time, y, x[, channel])
        ``time`` in s since the first frame of the exam, or since the Contrast Bolus Start Time
        when a clip gives one (negative before injection); ``y``/``x`` in mm from the image's
        top-left pixel; non-dim coords ``clip`` and ``frame`` (time); attrs ``spacing_mm`` (dy, dx),
        ``region`` (x0, y0, x1, y1 in pixels), ``timing_source`` (per clip), ``flags``, ``source``.

    Raises
    ------
    InputError
        A file is not DICOM, has no pixel data, is a single-frame snapshot, has no frame timing,
        an undecodable transfer syntax, no spacing, or clips that do not share size and spacing.
    """
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not paths:
        raise InputError("paths", "no DICOM file given", "pass the patient's clip files")
    clips = order_clips([require_cine(open_clip(p, root=root)) for p in paths])
    return cine_from_clips(clips, colour=colour, roi=roi, panel=panel, spacing_mm=spacing_mm,
                           frames_per_chunk=frames_per_chunk)


def require_cine(clip: Clip) -> Clip:
    """Reject snapshots and clips without frame timing.

    Parameters
    ----------
    clip : Clip

    Returns
    -------
    Clip
        The same clip.
    """
    header = clip.header
    if header.n_frames < 2:
        raise InputError(header.source, "single frame (a snapshot, not a cine)", "export the cine loop")
    if header.frame_times_s is None:
        raise InputError(header.source, "no frame timing (FrameTime, FrameTimeVector, CineRate)",
                         "export the cine with its frame timing")
    return clip


def order_clips(clips: Sequence[Clip]) -> list[Clip]:
    """Clips by acquisition date-time (then file name); undated clips last, in file-name order."""
    return sorted(clips, key=lambda c: (c.header.acquisition_datetime is None,
                                        c.header.acquisition_datetime or 0, c.header.source))


def cine_from_clips(
    clips: Sequence[Clip],
    *,
    colour: bool = False,
    roi: Sequence[float] | None = None,
    panel: Panel = "largest",
    spacing_mm: tuple[float, float] | None = None,
    frames_per_chunk: int = 1,
) -> xr.DataArray:
    """Assemble ordered, validated clips into the cine (see :func:`read_cine`)."""
    first = clips[0].header
    calib = [_calibrate(c.header, roi=roi, panel=panel, spacing_mm=spacing_mm) for c in clips]
    for clip, cal in zip(clips[1:], calib[1:], strict=True):
        _check_same_geometry(first, calib[0], clip.header, cal)
    times, reference, time_flags = _time_axis(clips)
    data = da.concatenate([_lazy(c, colour, frames_per_chunk) for c in clips], axis=0)
    flags = [*_clip_flags(clips), *time_flags, *dict.fromkeys(f for c in calib for f in c.flags)]
    return _assemble(data, clips, times, calib[0], colour=colour, flags=flags, reference=reference)


def _calibrate(
    header: ClipHeader, *, roi: Sequence[float] | None, panel: Panel,
    spacing_mm: tuple[float, float] | None,
) -> _Calibration:
    region = choose_region(header.regions, roi=roi, panel=panel)
    stale = any(r.stale for r in header.regions)
    flags = (f"{header.source}: stale region bounds (beyond the image): not used",) if stale else ()
    if region is not None:
        return _Calibration((region.delta_y_mm, region.delta_x_mm), region, flags)
    if spacing_mm is not None:
        given = f"{header.source}: spacing given by the caller (no valid ultrasound region)"
        return _Calibration((float(spacing_mm[0]), float(spacing_mm[1])), None, (*flags, given))
    where = " holding the ROI" if roi is not None else ""
    reason = f"no valid 2-D ultrasound region{where} to give the pixel spacing"
    reason += " (stale region bounds beyond the image)" if stale else ""
    raise InputError(header.source, reason, "pass spacing_mm=(dy, dx) or fix the export")


def _check_same_geometry(first: ClipHeader, cal0: _Calibration, other: ClipHeader, cal: _Calibration) -> None:
    if (other.rows, other.columns) != (first.rows, first.columns):
        raise InputError(other.source, f"{other.rows}x{other.columns} pixels differ from the first clip's "
                         f"{first.rows}x{first.columns}", "convert the clips as separate exams")
    if not np.allclose(cal.spacing_mm, cal0.spacing_mm, rtol=_SPACING_RTOL):
        raise InputError(other.source, "pixel spacing differs from the first clip's (zoom changed)",
                         "convert the clips as separate exams")


def _time_axis(clips: Sequence[Clip]) -> tuple[np.ndarray, str, list[str]]:
    """Concatenated frame times in s, their reference and flags (offsets only, no dates)."""
    headers = [c.header for c in clips]
    starts = [h.acquisition_datetime for h in headers]
    boluses = [h.bolus_start for h in headers if h.bolus_start is not None]
    dated = [s for s in starts if s is not None]
    flags: list[str] = []
    if boluses and dated:
        origin, reference = min(boluses), "contrast bolus start"
    else:
        origin, reference = (dated[0] if dated else None), "first frame"
    pieces, end = [], 0.0
    for clip, header, start in zip(clips, headers, starts, strict=True):
        times = clip.times_s
        if start is None or origin is None:
            offset = end + (_step(times) if pieces else 0.0)
            if len(headers) > 1:
                flags.append(f"{header.source}: no acquisition time; placed after the previous clip")
        else:
            offset = (start - origin).total_seconds()
        pieces.append(offset + times)
        end = float(pieces[-1][-1])
    times = np.concatenate(pieces)
    if reference == "first frame" and times.size:
        times = times - times[0]
    if np.any(np.diff(times) <= 0):
        flags.append("clips overlap in time: time is not monotonic")
    return times, reference, flags


def _step(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if times.size > 1 else 0.0


def _clip_flags(clips: Sequence[Clip]) -> list[str]:
    flags = []
    for clip in clips:
        h = clip.header
        if h.truncated:
            flags.append(f"{h.source}: truncated: kept {h.n_frames_present} of {h.n_frames} frames")
        if h.timing_source in FALLBACKS:
            flags.append(f"{h.source}: timing from {h.timing_source.replace('_', ' ')}")
    return flags


def _lazy(clip: Clip, colour: bool, frames_per_chunk: int) -> da.Array:
    """Dask array of one clip: one task per ``frames_per_chunk`` frames, decoding at compute."""
    spec, ranges = clip.spec, clip.ranges[clip.frames]
    stat = os.stat(spec.path)
    name = "dicom-frames-" + tokenize(spec.path, stat.st_mtime_ns, stat.st_size, colour, frames_per_chunk, ranges)
    index = da.from_array(ranges, chunks=(max(int(frames_per_chunk), 1), 2), name=name + "-index")
    extra = ((3,),) if colour else ()
    return index.map_blocks(
        decode_block, spec=spec, colour=colour, name=name, dtype=np.uint8, drop_axis=1,
        new_axis=list(range(1, 3 + bool(colour))),
        chunks=(index.chunks[0], (spec.rows,), (spec.columns,), *extra),
        meta=np.empty((0,) * (3 + bool(colour)), dtype=np.uint8),
    )


def _assemble(
    data: da.Array, clips: Sequence[Clip], times: np.ndarray, cal: _Calibration, *,
    colour: bool, flags: list[str], reference: str,
) -> xr.DataArray:
    h = clips[0].header
    dy, dx = cal.spacing_mm
    coords = {
        TIME: (TIME, times, {"units": "s", "reference": reference}),
        Y: (Y, np.arange(h.rows) * dy, {"units": "mm"}),
        X: (X, np.arange(h.columns) * dx, {"units": "mm"}),
        CLIP: (TIME, np.concatenate([np.full(c.frames.size, i) for i, c in enumerate(clips)])),
        "frame": (TIME, np.concatenate([c.frames for c in clips])),
    }
    dims = (TIME, Y, X, "channel") if colour else (TIME, Y, X)
    if colour:
        coords["channel"] = ("channel", ["R", "G", "B"])
    region = cal.region
    attrs = {
        "units": "1", "long_name": "RGB intensity" if colour else "luminance (BT.601 Y)",
        "spacing_mm": [float(dy), float(dx)],
        "region": [] if region is None else [region.x0, region.y0, region.x1, region.y1],
        "timing_source": [str(c.header.timing_source) for c in clips],
        "flags": list(flags), "source": [c.header.source for c in clips],
        "manufacturer": h.manufacturer, "model": h.model,
    }
    return xr.DataArray(data, dims=dims, coords=coords, name=INTENSITY, attrs=attrs)


def read_clip(path: PathLike, *, root: PathLike | None = None) -> Clip:
    """Open one file without requiring a cine (snapshots and untimed clips accepted).

    Parameters
    ----------
    path : path-like
    root : path-like, optional

    Returns
    -------
    Clip
        Header, decoder spec and frame byte ranges; decode with :func:`read_frames`.
    """
    return open_clip(path, root=root)


def read_frames(path: PathLike, *, colour: bool = False, root: PathLike | None = None) -> np.ndarray:
    """Decode every whole frame of any supported file, eagerly (for tests and inspection).

    Parameters
    ----------
    path : path-like
    colour : bool
    root : path-like, optional

    Returns
    -------
    ndarray uint8
        (frames, rows, columns) luminance, or (frames, rows, columns, 3) RGB.
    """
    clip = open_clip(path, root=root)
    return decode_block(clip.ranges, spec=clip.spec, colour=colour)

