"""ROI store in, training patients selected, signatures out: the file side of the model CLI.

The ROI store (preprocessing, issue #4) is a Zarr store whose root is the ROI-cohort Dataset of
:func:`ceusflow.model.batches.check_roi`, with per-patient ``treatment`` and optionally ``split``
("train" / "val"). The validation cohort is excluded *before* anything reaches
:func:`ceusflow.model.train`: the training patients come from a list or from ``split``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ceusflow.conventions import PATIENT, TREATMENT, TREATMENTS, as_text
from ceusflow.errors import InputError
from ceusflow.model.batches import check_roi
from ceusflow.preprocess.cohort import open_rois

SPLIT = "split"
TRAIN_LABELS = ("train", "training")

__all__ = ["SPLIT", "open_roi", "read_patient_list", "signature_name", "training_cohort",
           "write_signatures"]


def open_roi(path: str | Path, *, outcomes: bool = True) -> xr.Dataset:
    """Open an ROI store lazily (dask-backed, one chunk per read) and check its contract.

    Parameters
    ----------
    path : str or Path
        Zarr store written by the preprocessing (Dataset at its root).
    outcomes : bool
        Whether ``duration`` and ``event`` are required.

    Returns
    -------
    Dataset
    """
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), "does not exist", "run `ceusflow preprocess` first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            roi = open_rois(path)
    except Exception as err:  # zarr/xarray raise many types for a folder that is not a store
        raise InputError(str(path), f"is not a readable Zarr store ({type(err).__name__})",
                         "pass the ROI store written by the preprocessing") from None
    check_roi(roi, outcomes=outcomes)
    return roi


def read_patient_list(path: str | Path) -> list[str]:
    """Read training patient keys from a file.

    Parameters
    ----------
    path : str or Path
        Either a text file with one key per line (``#`` comments allowed), or a CSV with a
        ``patient`` column; if it also has a ``split`` column, only rows labelled "train" count
        (the ``split.csv`` of ``ceusflow run``).

    Returns
    -------
    list of str
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "is not a file", "pass a list of training patients")
    text = path.read_text().strip()
    first = text.splitlines()[0] if text else ""
    if "," in first and PATIENT in [c.strip() for c in first.split(",")]:
        table = pd.read_csv(path, dtype=str)
        if SPLIT in table:
            table = table[table[SPLIT].str.lower().isin(TRAIN_LABELS)]
        keys = table[PATIENT].str.strip().tolist()
    else:
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not keys:
        raise InputError(str(path), "lists no training patients", "one key per line")
    return keys


def training_cohort(roi: xr.Dataset, treatment: str, *,
                    train_patients: Sequence[str] | None = None) -> tuple[xr.Dataset, str]:
    """Select the training patients of one treatment arm.

    Parameters
    ----------
    roi : Dataset
        ROI cohort with ``treatment`` (patient).
    treatment : {"RFA", "SR"}
        Arm whose model is trained.
    train_patients : sequence of str, optional
        Keys of the training cohort (any arm; the arm is selected here). Without it, the store's
        ``split`` variable must say which patients are "train".

    Returns
    -------
    tuple of (Dataset, str)
        The training patients of the arm, and a one-line description of the selection.

    Raises
    ------
    InputError
        Unknown treatment, no ``treatment`` variable, no way to tell the training cohort, keys
        missing from the store, or fewer than 4 patients left.
    """
    if treatment not in TREATMENTS:
        raise InputError("--treatment", f"{treatment!r} is not supported", f"use one of {TREATMENTS}")
    if TREATMENT not in roi:
        raise InputError("roi", "has no 'treatment' variable", "re-run the preprocessing")
    keys = as_text(roi[PATIENT].values)
    in_arm = as_text(roi[TREATMENT].values) == treatment
    if train_patients is not None:
        wanted = {str(k) for k in train_patients}
        unknown = sorted(wanted - set(keys))
        if unknown:
            raise InputError("--train-patients", f"{len(unknown)} key(s) not in the ROI store "
                             f"(e.g. {unknown[0]})", "use the store's pseudonymous keys")
        chosen, source = np.isin(keys, sorted(wanted)), "the given patient list"
    elif SPLIT in roi:
        labels = np.char.lower(as_text(roi[SPLIT].values))
        chosen, source = np.isin(labels, TRAIN_LABELS), "the store's 'split' variable"
    else:
        raise InputError("roi", "has no 'split' variable and no training list was given",
                         "pass --train-patients FILE so the validation cohort stays unseen")
    pick = chosen & in_arm
    if pick.sum() < 4:
        raise InputError("--treatment", f"{int(pick.sum())} training patients treated by "
                         f"{treatment}", "train on at least 4 patients")
    text = (f"{int(pick.sum())} training patients treated by {treatment} (from {source}; "
            f"{int((~chosen).sum())} non-training patients left out)")
    return roi.isel({PATIENT: np.flatnonzero(pick)}), text


def signature_name(treatment: str | None) -> str:
    """Variable name of a model's signature: ``signature_rfa`` / ``signature_sr``."""
    return f"signature_{treatment.lower()}" if treatment else "signature"


def write_signatures(risk: xr.DataArray, out: str | Path, *, name: str) -> tuple[Path, Path]:
    """Add a signature to a Zarr store and rewrite the CSV beside it.

    Parameters
    ----------
    risk : DataArray (patient)
        Output of :func:`ceusflow.model.predict_risk`.
    out : str or Path
        Zarr store (``signatures.zarr``); variables already there are kept, ``name`` replaced.
    name : str
        Variable name, e.g. ``signature_rfa``.

    Returns
    -------
    tuple of Path
        The Zarr store and the CSV (``out`` with suffix ``.csv``) holding every signature.
    """
    out = Path(out)
    ds = risk.rename(name).to_dataset()
    if out.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = xr.open_zarr(out).load()
        ds = xr.merge([old.drop_vars(name, errors="ignore"), ds], join="outer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(out, mode="w")
    csv = out.with_suffix(".csv")
    ds.to_dataframe().rename_axis(PATIENT).to_csv(csv)
    return out, csv
