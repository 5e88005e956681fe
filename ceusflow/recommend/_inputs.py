"""Turn per-patient inputs (arrays, Series, DataArrays) into aligned numpy vectors.

Labelled inputs (a pandas Series indexed by patient, an xarray DataArray with a ``patient``
dimension) are aligned on their labels, never on position; unlabelled inputs are taken in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ceusflow.conventions import PATIENT
from ceusflow.errors import InputError


def labels_of(x: Any) -> NDArray[Any] | None:
    """Patient labels of a Series (its index) or DataArray (its ``patient`` coord), else None."""
    if isinstance(x, pd.Series):
        return x.index.to_numpy()
    if isinstance(x, xr.DataArray) and PATIENT in x.dims:
        return x[PATIENT].to_numpy()
    return None


def vector(x: Any, name: str, *, finite: bool = True) -> NDArray[np.float64]:
    """Values of a one-dimensional numeric input as float64, checked for NaN/inf."""
    arr = np.asarray(x.to_numpy() if isinstance(x, pd.Series | xr.DataArray) else x, dtype=float)
    if arr.ndim != 1:
        raise InputError(name, f"must be one-dimensional, got shape {arr.shape}", "pass one value per patient")
    if finite and not np.all(np.isfinite(arr)):
        raise InputError(name, "contains NaN or infinite values", "drop or impute those patients")
    return arr


def aligned(named: dict[str, Any], *, reference: NDArray[Any] | None = None) -> tuple[NDArray[Any], list[Any]]:
    """Reorder every labelled input to one patient order; check lengths of the rest.

    Parameters
    ----------
    named : dict of str to array-like
        Per-patient inputs by argument name (for error messages).
    reference : ndarray, optional
        Patient order to use; default the labels of the first labelled input, else ``0..n-1``.

    Returns
    -------
    tuple
        The patient labels and the inputs, as Series/arrays in that patient order.
    """
    labels = reference
    for value in named.values():
        if labels is None:
            labels = labels_of(value)
    n = len(next(iter(named.values()))) if labels is None else len(labels)
    labels = np.arange(n) if labels is None else labels
    return labels, [_reorder(v, k, labels) for k, v in named.items()]


def _reorder(value: Any, name: str, labels: NDArray[Any]) -> Any:
    own = labels_of(value)
    if own is None:
        if len(value) != len(labels):
            raise InputError(name, f"has {len(value)} values for {len(labels)} patients", "align the inputs")
        return value
    if not pd.Index(own).is_unique:
        raise InputError(name, "has duplicate patient labels", "keep one row per patient")
    missing = pd.Index(labels).difference(pd.Index(own))
    extra = pd.Index(own).difference(pd.Index(labels))
    if len(missing) or len(extra) or len(own) != len(labels):
        bad = (missing if len(missing) else extra)[:5].tolist()
        raise InputError(name, f"patients do not match the others (e.g. {bad})", "pass the same patients")
    if isinstance(value, pd.Series):
        return value.loc[labels]
    return value.sel({PATIENT: labels})
