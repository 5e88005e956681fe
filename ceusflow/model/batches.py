"""The one seam between xarray and torch: a torch ``Dataset`` of patients from an ROI cohort.

Each item is one patient: ``(intensity (phase, time, y, x) float32, frame_ok (phase, time) bool,
duration float64, event bool)``. Dims are selected by name, phases put in the order AP, PP, VP.
The cohort is read lazily one patient at a time (a Zarr-backed dask array computes one chunk),
or loaded once into memory when it fits (:func:`cache_decision`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from torch.utils.data import Dataset

from ceusflow.conventions import (
    DURATION,
    EVENT,
    FRAME_OK,
    INTENSITY,
    PATIENT,
    PHASE,
    PHASES,
    TIME,
    X,
    Y,
    as_text,
)
from ceusflow.errors import InputError

__all__ = ["Augment", "CineBatches", "Draw", "augment_batch", "cache_decision", "check_roi", "cohort_hash",
           "describe_roi"]

Item = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class Augment:
    """Physics-respecting augmentation of one patient's cine (all drawn per item, seeded).

    Attributes
    ----------
    shift_px : int
        Largest spatial shift in pixels (edges replicated): ROI boxes are drawn by hand.
    flip_x : bool
        Random lateral (``x``) flip. Never ``y``: depth carries attenuation and shadowing.
    gain_sd : float
        SD of the log of a global intensity gain (one machine gain per exam), clipped to [0, 1].
    time_jitter_frames : int
        Largest shift of each phase along its own time axis (vacated frames become invalid):
        the phase boundaries are set on the injection clock to within a second.
    """

    shift_px: int = 2
    flip_x: bool = True
    gain_sd: float = 0.1
    time_jitter_frames: int = 1


def check_roi(roi: xr.Dataset, *, outcomes: bool = True) -> None:
    """Raise :class:`InputError` unless ``roi`` follows the ROI-cohort contract.

    Parameters
    ----------
    roi : Dataset
        ``intensity (patient, phase, time, y, x)``, ``frame_ok (patient, phase, time)`` and,
        when ``outcomes``, ``duration`` and ``event`` (patient).
    outcomes : bool
        Whether the outcome variables are required (training) or not (prediction).
    """
    if not isinstance(roi, xr.Dataset):
        raise InputError("roi", f"is a {type(roi).__name__}, not an xarray Dataset",
                         "open the ROI store with ceusflow.open_store")
    needed = (INTENSITY, FRAME_OK) + ((DURATION, EVENT) if outcomes else ())
    missing = [v for v in needed if v not in roi]
    if missing:
        raise InputError("roi", f"has no variable(s) {missing}", "run the preprocessing first")
    if set(roi[INTENSITY].dims) != {PATIENT, PHASE, TIME, Y, X}:
        raise InputError("intensity", f"has dims {roi[INTENSITY].dims}",
                         "expected (patient, phase, time, y, x)")
    phases = [str(p) for p in roi[PHASE].values]
    if sorted(phases) != sorted(PHASES):
        raise InputError("phase", f"coordinate is {phases}", f"expected {list(PHASES)}")


def cache_decision(roi: xr.Dataset, *, limit_bytes: int | None = None) -> tuple[bool, str]:
    """Decide whether the cohort's intensities are loaded into memory.

    Parameters
    ----------
    roi : Dataset
        The ROI cohort.
    limit_bytes : int, optional
        Largest cache in bytes (8-bit levels for the ROI store's own 8-bit intensities, else
        float32); default a quarter of the physical memory, at most 8 GiB.

    Returns
    -------
    tuple of (bool, str)
        The decision and a one-line explanation for the user.
    """
    return _decide(roi, _eight_bit(_ZarrReader.for_cohort(roi)), limit_bytes)


def _eight_bit(reader: _ZarrReader | None) -> bool:
    """Whether the intensities are the store's own 8-bit levels (cached and copied as such)."""
    return reader is not None and reader.scale is not None


def _decide(roi: xr.Dataset, eight_bit: bool, limit_bytes: int | None) -> tuple[bool, str]:
    size = int(np.prod([roi.sizes[d] for d in roi[INTENSITY].dims])) * (1 if eight_bit else 4)
    limit = _default_limit() if limit_bytes is None else int(limit_bytes)
    if size <= limit:
        kind = "8-bit levels" if eight_bit else "float32"
        return True, f"caching the ROI cohort in memory ({size / 2**20:.0f} MiB of {kind} <= {limit / 2**20:.0f} MiB)"
    return False, (f"reading the ROI cohort lazily, one patient at a time "
                   f"({size / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB memory limit)")


def _default_limit() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(total // 4, 8 * 2**30))


class CineBatches(Dataset[Item]):
    """Torch dataset over the patients of an ROI cohort.

    Parameters
    ----------
    roi : Dataset
        ROI cohort (see :func:`check_roi`); may be dask-backed (opened from Zarr).
    augment : Augment, optional
        Augmentation for training; None for evaluation.
    seed : int
        Seed of the augmentation; the draw of item ``i`` in epoch ``e`` depends only on
        ``(seed, e, i)``, so results do not depend on the order or worker that loads it.
    cache : bool, optional
        Load all intensities into memory (True), read lazily (False), or decide by size (None).
    outcomes : bool
        Whether to read ``duration`` / ``event`` (False for prediction: NaN and False are given).

    Attributes
    ----------
    offset : Tensor (patient,) or None
        A fixed log-hazard added to the network's for each patient (the kinetic term of
        ``TrainConfig(kinetic=True)``); None for none.
    """

    offset: Tensor | None = None

    def __init__(self, roi: xr.Dataset, *, augment: Augment | None = None, seed: int = 0,
                 cache: bool | None = None, outcomes: bool = True) -> None:
        check_roi(roi, outcomes=outcomes)
        self.roi = roi.sel({PHASE: list(PHASES)})
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self._reader = _ZarrReader.for_cohort(self.roi)
        self.cached = _decide(roi, _eight_bit(self._reader), None)[0] if cache is None else bool(cache)
        self._mask = torch.from_numpy(np.asarray(
            self.roi[FRAME_OK].transpose(PATIENT, PHASE, TIME).values, dtype=bool))
        self._duration, self._event = _outcomes(self.roi, outcomes)
        # the cache: the store's 8-bit levels when it has them (4x smaller), else float intensities
        self._images: Tensor | None = None
        if self.cached and _eight_bit(self._reader):
            self._images = self._reader.read_levels(torch.arange(len(self)))  # type: ignore[union-attr]
        elif self.cached:
            self._images = _load_all(self.roi)

    def __len__(self) -> int:
        return int(self.roi.sizes[PATIENT])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used to seed the augmentation."""
        self.epoch = int(epoch)

    def batch(self, idx: Tensor, device: torch.device | str | None = None) -> Item:
        """Stack the items ``idx``, on ``device`` (default: where they are read, the CPU).

        The patients are read as one buffer (one gather from the cache, or one buffer filled from
        the store), moved to ``device``, decoded and augmented there. An 8-bit store's levels stay
        8-bit until then (a quarter of the bytes to gather and copy), and on a GPU the
        augmentation's gather costs nothing, while on one CPU thread it runs ~60 paper-scale
        patients/s, a quarter of what an H200 trains (``docs/model.md``).
        """
        mask = self._mask[idx]
        x = self._read(idx, mask)
        duration, event = self._duration[idx], self._event[idx]
        if device is not None:
            x, mask, duration, event = (t.to(device, non_blocking=True) for t in (x, mask, duration, event))
        decode = self._reader.to_grey if x.dtype == torch.uint8 else None  # type: ignore[union-attr]
        if self.augment is not None:  # 8-bit levels are gathered first, decoded after (same values)
            x, mask = augment_batch(x, mask, [self._draw(int(i)) for i in idx], self.augment, decode)
        elif decode is not None:  # 8-bit levels travel as such: decoded where the batch goes
            x = decode(x.to(torch.float32)).mul_(mask[:, :, :, None, None])
        return x, mask, duration, event

    def __getitem__(self, i: int) -> Item:
        x, mask, duration, event = self.batch(torch.tensor([int(i)]))
        return x[0], mask[0], duration[0], event[0]

    def _read(self, idx: Tensor, mask: Tensor) -> Tensor:
        """Patients ``idx`` on the CPU, not augmented: 8-bit levels, or zero-masked floats."""
        if self._images is not None:
            return self._images[idx]
        if self._reader is not None:
            if _eight_bit(self._reader):
                return self._reader.read_levels(idx)
            items = [self._reader.read(int(i)) for i in idx]
        else:
            items = [_load_one(self.roi, int(i)) for i in idx]
        return torch.stack(items).mul_(mask[:, :, :, None, None])  # finite, >= 0: exact zeros

    def _draw(self, i: int) -> Draw:
        """The augmentation of item ``i`` in the current epoch (a function of seed, epoch, i)."""
        assert self.augment is not None
        return Draw.sample(self.augment, len(PHASES), np.random.default_rng((self.seed, self.epoch, i)))


def _outcomes(roi: xr.Dataset, outcomes: bool) -> tuple[Tensor, Tensor]:
    n = roi.sizes[PATIENT]
    if not outcomes:
        return torch.full((n,), float("nan"), dtype=torch.float64), torch.zeros(n, dtype=torch.bool)
    duration = np.asarray(roi[DURATION].values, dtype=np.float64)
    event = np.asarray(roi[EVENT].values).astype(bool)
    if not np.all(np.isfinite(duration)) or np.any(duration < 0):
        raise InputError("duration", "must be finite and >= 0", "drop or fix those patients")
    return torch.from_numpy(duration), torch.from_numpy(event)


def _as_tensor(arr: np.ndarray) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return torch.nan_to_num(x, nan=0.0)


def _load_all(roi: xr.Dataset) -> Tensor:
    x = _as_tensor(roi[INTENSITY].transpose(PATIENT, PHASE, TIME, Y, X).values)
    ok = roi[FRAME_OK].transpose(PATIENT, PHASE, TIME).values
    x[torch.from_numpy(~np.asarray(ok, dtype=bool))] = 0.0  # invalid frames carry no signal
    return x


def _load_one(roi: xr.Dataset, i: int) -> Tensor:
    """Read one patient: basic indexing of one chunk, dask (if any) run in the calling thread.

    The synchronous scheduler avoids the thread-pool round trip of dask's default scheduler
    (about 10 ms of a 25 ms read of a paper-scale patient); the caller's prefetch thread is
    what overlaps reading with compute.
    """
    one = roi[INTENSITY].isel({PATIENT: int(i)}).transpose(PHASE, TIME, Y, X)
    return _as_tensor(one.compute(scheduler="synchronous").values)


class _ZarrReader:
    """Read one patient straight from the ROI store's Zarr array (one chunk, no dask graph).

    Through xarray and dask a lazy read costs ~10 ms of graph building and scheduling per
    patient on top of the ~2 ms of decompressing one 8-bit chunk, a third of a ``cpu``-profile
    training step; reading the chunk with zarr directly removes it. Used only when ``intensity``
    is the store's own variable as :func:`~ceusflow.preprocess.cohort.open_rois` opened it
    (indexed along ``patient`` and ``phase`` at most; any computed or replaced variable is read
    through xarray).
    """

    def __init__(self, array: object, rows: np.ndarray, phases: np.ndarray, scale: float | None) -> None:
        self.array, self.rows, self.phases, self.scale = array, rows, phases, scale
        self._chunk = _chunk_reader(array)

    def _raw(self, row: int) -> np.ndarray:
        """Stored values of one patient (one chunk).

        The chunk's file is decoded by numcodecs when the layout allows it (zarr's own read costs
        ~3 ms more per chunk), else zarr reads it.
        """
        raw = self._chunk(row) if self._chunk is not None else None
        return np.asarray(self.array[row]) if raw is None else raw  # type: ignore[index]

    @classmethod
    def for_cohort(cls, roi: xr.Dataset) -> _ZarrReader | None:
        import zarr

        from ceusflow.preprocess.cohort import STORE_SOURCE

        source = roi[INTENSITY].encoding.get(STORE_SOURCE)  # set by open_rois, dropped by arithmetic
        if not isinstance(source, str | os.PathLike) or not os.path.isdir(source):
            return None
        try:
            group = zarr.open_group(source, mode="r")
            array = group[INTENSITY]
            dims = tuple(array.metadata.dimension_names or ())
            stored = {d: as_text(group[d][...]).tolist() for d in (PATIENT, PHASE)}
            other = {d: group[d][...] for d in (TIME, Y, X)}
        except Exception:  # not a ceusflow ROI store: the xarray path reads it
            return None
        # whole chunks are read: time, y and x must be the stored ones in the stored order
        # (a reversed or reordered axis has the same size but other values here)
        if dims != (PATIENT, PHASE, TIME, Y, X) or not all(
                d in roi.coords and np.array_equal(roi[d].values, v) for d, v in other.items()):
            return None
        rows = _positions(stored[PATIENT], as_text(roi[PATIENT].values).tolist())
        phases = _positions(stored[PHASE], as_text(roi[PHASE].values).tolist())
        if rows is None or phases is None:
            return None
        scale = array.attrs.get("scale_factor")
        return cls(array, rows, phases, None if scale is None else float(scale))

    def read_levels(self, idx: Tensor) -> Tensor:
        """Stored 8-bit levels of patients ``idx`` as one ``uint8`` tensor (one chunk each).

        Decoded later by :meth:`to_grey` on the batch's device: the same values as decoding each
        patient here, with a quarter of the bytes to gather and copy.
        """
        shape = (len(self.phases), *self.array.shape[2:])  # type: ignore[attr-defined]
        out = torch.empty((len(idx), *shape), dtype=torch.uint8)
        for k, i in enumerate(idx.tolist()):
            out[k].copy_(torch.from_numpy(self._raw(int(self.rows[i]))[self.phases]))
        return out

    def read(self, i: int) -> Tensor:
        """One patient of a float store, as float intensities."""
        return _as_tensor(self._raw(int(self.rows[i]))[self.phases])

    def to_grey(self, x: Tensor) -> Tensor:
        """Stored 8-bit levels (as float) -> intensities in place: ``g / 255`` as open_rois decodes."""
        from ceusflow.preprocess.cohort import grey_levels

        levels = grey_levels(self.scale)  # type: ignore[arg-type]
        return x.div_(levels) if levels is not None else x.mul_(self.scale)  # type: ignore[arg-type]


def _chunk_reader(array: Any) -> Callable[[int], np.ndarray | None] | None:
    """Reader of chunk ``(row, 0, 0, 0, 0)`` of a simple local array, or None.

    Simple: a local, unsharded, 8-bit Zarr v3 array whose chunks are whole patients and whose
    codecs are bytes + zstd or bytes + Blosc.

    The reader returns None for an absent chunk (the caller asks zarr, which fills it).
    """
    from numcodecs import Zstd
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    from ceusflow.store import local_chunk_file, numcodecs_blosc

    codecs = getattr(getattr(array, "metadata", None), "codecs", None)
    if (codecs is None or local_chunk_file(array, 0) is None or len(codecs) != 2
            or not isinstance(codecs[0], BytesCodec) or tuple(array.chunks[1:]) != array.shape[1:]
            or array.chunks[0] != 1 or array.dtype.itemsize != 1):
        return None
    if isinstance(codecs[1], ZstdCodec):
        codec: Any = Zstd(level=codecs[1].level)
    elif isinstance(codecs[1], BloscCodec):
        codec = numcodecs_blosc(codecs[1])
    else:
        return None
    shape, dtype = tuple(array.chunks), array.dtype

    def read(row: int) -> np.ndarray | None:
        try:
            data = local_chunk_file(array, row).read_bytes()  # type: ignore[union-attr]
        except FileNotFoundError:
            return None
        return np.frombuffer(codec.decode(data), dtype=dtype).reshape(shape)[0]

    return read


def _positions(stored: list[str], wanted: list[str]) -> np.ndarray | None:
    """Index of each wanted label in ``stored``, or None if any is missing."""
    lookup = {v: k for k, v in enumerate(stored)}
    if any(w not in lookup for w in wanted):
        return None
    return np.array([lookup[w] for w in wanted], dtype=np.int64)


@dataclass(frozen=True)
class Draw:
    """One item's random augmentation: spatial shift, lateral flip, per-phase time shift, gain."""

    dy: int
    dx: int
    flip: bool
    shift: tuple[int, ...]
    gain: float

    @classmethod
    def sample(cls, aug: Augment, n_phases: int, rng: np.random.Generator) -> Draw:
        """Draw from ``rng`` (always in this order, so a seed gives the same augmentation)."""
        dy, dx = (int(v) for v in rng.integers(-aug.shift_px, aug.shift_px + 1, size=2))
        flip = bool(aug.flip_x and rng.random() < 0.5)
        shift = tuple(int(v) for v in rng.integers(-aug.time_jitter_frames, aug.time_jitter_frames + 1,
                                                   size=n_phases))
        gain = float(np.exp(rng.normal(0.0, aug.gain_sd))) if aug.gain_sd > 0 else 1.0
        return cls(dy, dx, flip, shift, gain)


def augment_batch(x: Tensor, mask: Tensor, draws: list[Draw], aug: Augment,
                  decode: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Apply each item's draw to a batch, on the batch's device: two gathers, then gain and mask.

    Parameters
    ----------
    x : Tensor (batch, phase, time, y, x)
        Intensities in [0, 1] with invalid frames zero; or, with ``decode``, stored levels (any
        value in invalid frames).
    mask : Tensor (batch, phase, time)
        Valid frames.
    draws : list of Draw
        One per item.
    aug : Augment
        The augmentation the draws come from (``gain_sd = 0``: no gain, no clipping).
    decode : callable, optional
        Maps gathered float32 levels to intensities (e.g. ``g / 255``). Gathering the 8-bit levels
        before decoding moves a quarter of the bytes and gives the same values: decoding is
        element-wise, and frames that were invalid are zeroed at the end either way.

    Returns
    -------
    tuple of Tensor
        Shifted (edges replicated), flipped, time-jittered intensities with the gain applied and
        clipped to [0, 1], frames made invalid by the jitter zeroed; and the new mask.

    Notes
    -----
    The time jitter picks whole frames (one index per item, phase and frame) and the shift and
    flip one index per item and pixel, applied by ``torch.gather`` along the flattened frame. A
    single 5-D advanced index did the same at twice the CPU time.
    """
    b, p, t, h, w = x.shape
    dev = x.device

    def column(values: list[Any], dtype: torch.dtype = torch.int64) -> Tensor:
        return torch.tensor(values, dtype=dtype).to(dev, non_blocking=True)

    dy, dx = column([d.dy for d in draws]), column([d.dx for d in draws])
    iy = (torch.arange(h, device=dev)[None] + dy[:, None]).clamp(0, h - 1)  # edges replicated
    ix = (torch.arange(w, device=dev)[None] + dx[:, None]).clamp(0, w - 1)
    ix = torch.where(column([d.flip for d in draws], torch.bool)[:, None], ix.flip(1), ix)
    it = torch.arange(t, device=dev)[None, None] - column([d.shift for d in draws])[:, :, None]
    inside = (it >= 0) & (it < t)  # frame k moves to k + shift; vacated frames become invalid
    it = it.clamp(0, t - 1)
    frames = x.reshape(b, p, t, h * w)[torch.arange(b, device=dev)[:, None, None],
                                       torch.arange(p, device=dev)[None, :, None], it]
    pixel = (iy[:, :, None] * w + ix[:, None, :]).reshape(b, 1, 1, h * w).expand(b, p, t, h * w)
    out = torch.gather(frames, 3, pixel).reshape(b, p, t, h, w)
    if decode is not None:
        out = decode(out.to(torch.float32))
    new_mask = mask.gather(2, it) & inside
    if aug.gain_sd > 0:
        gain = column([d.gain for d in draws], torch.float32)
        out.mul_(gain[:, None, None, None, None]).clamp_(0.0, 1.0)
    return out.mul_(new_mask[:, :, :, None, None]), new_mask  # invalid frames carry no signal


def cohort_hash(roi: xr.Dataset) -> str:
    """SHA-256 of the cohort's identity: patient keys, outcomes, intensity shape and attrs.

    The pixel values are not hashed (gigabytes at paper scale); the preprocessing parameters in
    the attrs and the patient keys identify the store.
    """
    h = hashlib.sha256()
    h.update(json.dumps([str(p) for p in roi[PATIENT].values]).encode())
    for name in (DURATION, EVENT):
        if name in roi:
            h.update(np.ascontiguousarray(roi[name].values, dtype=np.float64).tobytes())
    h.update(json.dumps([roi[INTENSITY].dims, list(roi[INTENSITY].shape)]).encode())
    h.update(json.dumps(describe_roi(roi), sort_keys=True, default=str).encode())
    return h.hexdigest()


def describe_roi(roi: xr.Dataset) -> dict[str, object]:
    """Preprocessing parameters of an ROI cohort, as JSON-ready values (for checkpoints)."""
    times = np.asarray(roi[TIME].values, dtype=float)
    step = float(np.median(np.diff(times))) if times.size > 1 else None
    attrs = {k: v for k, v in roi[INTENSITY].attrs.items() if isinstance(v, str | int | float)}
    return {"phases": [str(p) for p in roi[PHASE].values], "n_frames": int(times.size),
            "time_step_s": step, "grid": [int(roi.sizes[Y]), int(roi.sizes[X])],
            "intensity_attrs": attrs,
            "attrs": {k: v for k, v in roi.attrs.items() if isinstance(v, str | int | float)}}
