"""Split a resampled cine into the contrast phases (arterial, portal venous, late).

Defaults: :data:`ceusflow.conventions.PHASE_WINDOWS_S` = AP 0-45 s, PP 45-120 s, VP 120-180 s
after injection (EFSUMB 2020 liver CEUS guideline, Dietrich et al., Ultraschall Med 2020; 41: 562:
arterial 10-20 s to 30-45 s, portal venous to 120 s, late after 120 s; the AP starts at 0 so the
pre-contrast baseline is kept; Liu et al. 2020 analyse the first 3 minutes). The exam's first
frame is taken as the injection time (the protocol starts recording at injection).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ceusflow.conventions import INTENSITY, PHASE, PHASE_WINDOWS_S, TIME
from ceusflow.errors import InputError

Windows = Mapping[str, tuple[float, float]]


def check_phases(phases: Windows) -> dict[str, tuple[float, float]]:
    """Validate phase windows (s): each ``0 <= start < end``; returned in the given order."""
    out = {}
    for name, (start, end) in dict(phases).items():
        if not 0 <= float(start) < float(end):
            raise InputError("phases", f"{name} window ({start}, {end}) is empty or negative",
                             "give start < end in seconds after injection")
        out[str(name)] = (float(start), float(end))
    if not out:
        raise InputError("phases", "no phase given", "e.g. AP=0:45,PP=45:120,VP=120:180")
    return out


def phase_grid(phases: Windows, fps: float) -> np.ndarray:
    """Time since the phase start (s) of the padded phase axis: ``k / fps`` up to the longest phase."""
    longest = max(end - start for start, end in check_phases(phases).values())
    return np.arange(int(np.ceil(longest * fps - 1e-9))) / float(fps)


def split_phases(obj: xr.Dataset | xr.DataArray, phases: Windows = PHASE_WINDOWS_S, *,
                 fps: float | None = None) -> xr.Dataset | xr.DataArray:
    """Cut a resampled cine (or Dataset) into phases along a new ``phase`` dim, lazily.

    Parameters
    ----------
    obj : Dataset or DataArray (time, ...)
        On a regular grid (``time`` in s since injection), e.g. the output of ``resample``.
    phases : mapping name -> (start_s, end_s)
        Start inclusive, end exclusive, seconds after injection.
    fps : float, optional
        Grid rate; default from the ``time`` step.

    Returns
    -------
    Dataset or DataArray (phase, time, ...)
        ``time`` = s since the phase start, padded to the longest phase; non-dim coord ``t_exam``
        (phase, time) in s (NaN for padding). Padding: ``frame_ok`` False, ``intensity`` 0, other
        floats NaN, bools False.
    """
    windows = check_phases(phases)
    rate = fps or 1.0 / float(np.median(np.diff(obj[TIME].values)))
    grid = phase_grid(windows, rate)
    name = (obj.name or INTENSITY) if isinstance(obj, xr.DataArray) else None
    ds = obj.to_dataset(name=name) if name is not None else obj
    coords = [c for c in ds.coords if c != TIME and TIME in ds[c].dims] + ["t_exam"]
    parts = [_one_phase(ds.reset_coords(coords[:-1]), start, end, grid) for start, end in windows.values()]
    out = xr.concat(parts, dim=PHASE, join="outer").assign_coords({PHASE: list(windows)})
    out = out.set_coords([c for c in coords if c in out])
    return out[name] if name is not None else out


def _one_phase(ds: xr.Dataset, start: float, end: float, grid: np.ndarray) -> xr.Dataset:
    t = np.asarray(ds[TIME].values, dtype=float)
    inside = (t >= start - 1e-9) & (t < end - 1e-9)
    part = ds.isel({TIME: np.flatnonzero(inside)})
    part = part.assign({"t_exam": (TIME, t[inside], {"units": "s"})})
    part = part.assign_coords({TIME: (TIME, t[inside] - start)})
    fill = {name: _fill(name, part[name].dtype) for name in part.data_vars}
    out = part.reindex({TIME: grid}, method="nearest", tolerance=1e-6, fill_value=fill)
    out[TIME].attrs["units"] = "s"
    return out


def _fill(name: str, dtype: np.dtype) -> object:
    if np.issubdtype(dtype, np.bool_):
        return False
    if name == INTENSITY or np.issubdtype(dtype, np.integer):
        return 0
    return np.nan
