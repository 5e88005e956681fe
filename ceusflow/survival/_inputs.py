"""Validation shared by the survival functions: one place that turns user input into arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceusflow.errors import InputError


def survival_arrays(
    time: Any, event: Any, *others: Any, names: tuple[str, ...] = ()
) -> tuple[NDArray[np.float64], NDArray[np.bool_], *tuple[NDArray[np.float64], ...]]:
    """Check and convert follow-up times, event indicators and aligned score columns.

    Parameters
    ----------
    time : array-like (n,)
        Follow-up time (any unit, e.g. months); finite and >= 0.
    event : array-like (n,)
        1/True where the event (progression) was observed, 0/False when censored.
    *others : array-like (n,)
        Further per-patient columns (risk scores, groups) of the same length.
    names : tuple of str
        Names of ``others`` for error messages.

    Returns
    -------
    tuple
        ``time`` as float64, ``event`` as bool and each of ``others`` as float64.

    Raises
    ------
    InputError
        On length mismatch, non-finite values, negative times or non-binary events.
    """
    t = np.asarray(time, dtype=float).ravel()
    e_raw = np.asarray(event).ravel()
    if t.size == 0:
        raise InputError("time", "no observations", "pass at least one patient")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError("time", "must be finite and >= 0", "drop or fix the bad rows")
    if e_raw.shape != t.shape:
        raise InputError("event", f"has {e_raw.size} values for {t.size} times", "align the columns")
    if not np.all(np.isin(e_raw.astype(float), (0.0, 1.0))):
        raise InputError("event", "must be 0/1 or boolean", "code progression as 1, censoring as 0")
    out: list[NDArray[np.float64]] = []
    for i, col in enumerate(others):
        name = names[i] if i < len(names) else f"argument {i + 3}"
        arr = np.asarray(col, dtype=float).ravel()
        if arr.shape != t.shape:
            raise InputError(name, f"has {arr.size} values for {t.size} times", "align the columns")
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "contains NaN or infinite values", "drop or impute those patients")
        out.append(arr)
    return (t, e_raw.astype(bool), *out)
