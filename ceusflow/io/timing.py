"""Frame timing and clip start times from DICOM headers, converted once to seconds.

Frame times follow the order the standard gives (PS3.3 C.7.6.5, C.8.5.6):

1. the element named by *Frame Increment Pointer* (0028,0009) when it is FrameTime (0018,1063) or
   FrameTimeVector (0018,1065) -> ``"frame_increment_pointer"``;
2. FrameTimeVector (ms between consecutive frames, first entry 0) -> ``"frame_time_vector"``;
3. FrameTime (ms per frame) -> ``"frame_time"``;
4. CineRate (0018,0040, frames/s) -> ``"cine_rate_fallback"`` (flagged);
5. RecommendedDisplayFrameRate (0008,2144, frames/s) ->
   ``"recommended_display_frame_rate_fallback"`` (flagged).

Absolute date-times are used only to order clips and to compute offsets between them; they never
leave this package's private objects.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

TimingSource = Literal[
    "frame_increment_pointer",
    "frame_time_vector",
    "frame_time",
    "cine_rate_fallback",
    "recommended_display_frame_rate_fallback",
]
FALLBACKS: tuple[str, ...] = ("cine_rate_fallback", "recommended_display_frame_rate_fallback")

_FRAME_TIME = 0x00181063
_FRAME_TIME_VECTOR = 0x00181065


def frame_times_s(ds: Dataset, n_frames: int) -> tuple[np.ndarray, TimingSource] | None:
    """Times of the frames of one clip, relative to its first frame.

    Parameters
    ----------
    ds : pydicom Dataset
        Header of the clip.
    n_frames : int
        Number of frames declared by NumberOfFrames.

    Returns
    -------
    (times, source) or None
        ``times`` float64 (n_frames,) in s, ``times[0] == 0``; ``source`` names the element used.
        None when the header holds no usable frame timing.
    """
    pointed = _pointed_timing(ds, n_frames)
    if pointed is not None:
        return pointed, "frame_increment_pointer"
    for source, reader in _READERS:
        times = reader(ds, n_frames)
        if times is not None:
            return times, source
    return None


def _pointed_timing(ds: Dataset, n_frames: int) -> np.ndarray | None:
    pointers = ds.get("FrameIncrementPointer")
    if pointers is None:
        return None
    pointers = pointers if isinstance(pointers, list | tuple) else [pointers]
    for tag in (int(p) for p in pointers):
        if tag == _FRAME_TIME_VECTOR:
            return _from_vector(ds, n_frames)
        if tag == _FRAME_TIME:
            return _from_frame_time(ds, n_frames)
    return None


def _from_vector(ds: Dataset, n_frames: int) -> np.ndarray | None:
    vector = ds.get("FrameTimeVector")
    if vector is None:
        return None
    steps = np.atleast_1d(np.asarray(vector, dtype=float))
    if steps.size == n_frames - 1:  # some writers omit the leading 0
        steps = np.concatenate([[0.0], steps])
    if steps.size != n_frames or np.any(steps[1:] <= 0) or not np.all(np.isfinite(steps)):
        return None
    steps[0] = 0.0
    return np.cumsum(steps) / 1000.0


def _from_frame_time(ds: Dataset, n_frames: int) -> np.ndarray | None:
    return _regular(ds.get("FrameTime"), n_frames, per_second=False)


def _from_cine_rate(ds: Dataset, n_frames: int) -> np.ndarray | None:
    return _regular(ds.get("CineRate"), n_frames, per_second=True)


def _from_display_rate(ds: Dataset, n_frames: int) -> np.ndarray | None:
    return _regular(ds.get("RecommendedDisplayFrameRate"), n_frames, per_second=True)


def _regular(value: object, n_frames: int, *, per_second: bool) -> np.ndarray | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not np.isfinite(number) or number <= 0:
        return None
    step_s = 1.0 / number if per_second else number / 1000.0
    return np.arange(n_frames, dtype=float) * step_s


_READERS = (
    ("frame_time_vector", _from_vector),
    ("frame_time", _from_frame_time),
    ("cine_rate_fallback", _from_cine_rate),
    ("recommended_display_frame_rate_fallback", _from_display_rate),
)


def clip_datetime(ds: Dataset) -> dt.datetime | None:
    """Start of the clip: AcquisitionDateTime, else ContentDate + ContentTime.

    Parameters
    ----------
    ds : pydicom Dataset

    Returns
    -------
    datetime or None
        Naive datetime (any UTC offset dropped: clips of one exam share the offset).
    """
    stamp = _parse_dt(ds.get("AcquisitionDateTime"))
    if stamp is not None:
        return stamp
    for date_kw, time_kw in (("ContentDate", "ContentTime"), ("AcquisitionDate", "AcquisitionTime")):
        stamp = _combine(ds.get(date_kw), ds.get(time_kw))
        if stamp is not None:
            return stamp
    return None


def bolus_start(ds: Dataset) -> dt.datetime | None:
    """Contrast Bolus Start Time (0018,1042), dated by the clip's own date.

    Parameters
    ----------
    ds : pydicom Dataset

    Returns
    -------
    datetime or None
    """
    start = ds.get("ContrastBolusStartTime")
    if not start:
        return None
    for date_kw in ("AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate"):
        stamp = _combine(ds.get(date_kw), start)
        if stamp is not None:
            return stamp
    clip = clip_datetime(ds)
    return None if clip is None else _combine(clip.strftime("%Y%m%d"), start)


def _parse_dt(value: object) -> dt.datetime | None:
    if not value:
        return None
    try:
        stamp = value if isinstance(value, dt.datetime) else DT(str(value).strip())
    except (TypeError, ValueError):
        return None
    return stamp.replace(tzinfo=None) if isinstance(stamp, dt.datetime) else None


def _combine(date: object, time: object) -> dt.datetime | None:
    if not date or not time:
        return None
    try:
        day = date if isinstance(date, dt.date) else DA(str(date).strip().replace(".", ""))
        clock = time if isinstance(time, dt.time) else TM(str(time).strip())
    except (TypeError, ValueError):
        return None
    if not isinstance(day, dt.date) or not isinstance(clock, dt.time):
        return None
    return dt.datetime.combine(day, clock.replace(tzinfo=None))
