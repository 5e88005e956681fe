"""Read clinical.csv and rois.csv of an export, keyed by pseudonym, with one line per problem.

Problems are not errors here: duplicated rows (identical: one kept; conflicting: the patient's
row dropped), non-numeric covariates (set to NaN) and missing columns are reported as
``(source, reason)`` pairs naming the CSV row, never the PatientID.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ceusflow.conventions import CLINICAL_COLUMNS, PATIENT, ROI_COLUMNS
from ceusflow.errors import InputError
from ceusflow.io.pseudonyms import keys_for

TEXT_COLUMNS = ("patient_id", "treatment", "sex", "etiology")
Problem = tuple[str, str]


def read_clinical(path: str | os.PathLike[str], secret: bytes) -> tuple[xr.Dataset, list[Problem]]:
    """clinical.csv as ``Dataset(patient)`` keyed by pseudonym.

    Parameters
    ----------
    path : path-like
    secret : bytes
        Project secret for the pseudonyms.

    Returns
    -------
    (Dataset, problems)
        One variable per column of :data:`~ceusflow.conventions.CLINICAL_COLUMNS` but
        ``patient_id``; numeric covariates float64, others str.
    """
    name = Path(path).name
    table = _read_csv(path, CLINICAL_COLUMNS)
    table[PATIENT] = keys_for(table.pop("patient_id"), secret)
    table, problems = _deduplicate(table, name)
    problems += _coerce_numeric(table, name)
    ds = xr.Dataset.from_dataframe(table.set_index(PATIENT))
    for column in TEXT_COLUMNS[1:]:  # object: Zarr v3's stable variable-length string type
        ds[column] = ds[column].astype(str).astype(object)
    return ds.assign_coords({PATIENT: ds[PATIENT].astype(str).astype(object)}), problems


def read_rois(path: str | os.PathLike[str], secret: bytes) -> pd.DataFrame:
    """rois.csv keyed by pseudonym: columns patient, t_s, x0, y0, x1, y1 (s, pixels).

    Parameters
    ----------
    path : path-like
    secret : bytes

    Returns
    -------
    DataFrame
    """
    table = _read_csv(path, ROI_COLUMNS)
    table[PATIENT] = keys_for(table.pop("patient_id"), secret)
    for column in ROI_COLUMNS[1:]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table = table.dropna()[[PATIENT, *ROI_COLUMNS[1:]]]
    return table.astype({PATIENT: object})


def _read_csv(path: str | os.PathLike[str], columns: tuple[str, ...]) -> pd.DataFrame:
    name = Path(path).name
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(name, f"unreadable CSV ({type(err).__name__})", "check the file") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(name, f"missing columns {missing}", f"expected {list(columns)}")
    table = table[list(columns)].copy()
    table["patient_id"] = table["patient_id"].str.strip()
    table.index = pd.RangeIndex(2, len(table) + 2, name="row")  # line numbers in the file
    return table[table["patient_id"] != ""]


def _deduplicate(table: pd.DataFrame, name: str) -> tuple[pd.DataFrame, list[Problem]]:
    problems: list[Problem] = []
    exact = table.duplicated(keep="first")
    for row in table.index[exact]:
        problems.append((f"{name}:{row}", "duplicated row; the first copy is kept"))
    table = table[~exact]
    clash = table[PATIENT].duplicated(keep=False)
    for row in table.index[clash]:
        problems.append((f"{name}:{row}", "conflicting rows for one patient; the patient's clinical data dropped"))
    return table[~clash], problems


def _coerce_numeric(table: pd.DataFrame, name: str) -> list[Problem]:
    problems: list[Problem] = []
    for column in (c for c in CLINICAL_COLUMNS if c not in TEXT_COLUMNS):
        text = table[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        for row in table.index[values.isna() & (text != "") & (text.str.upper() != "NA")]:
            problems.append((f"{name}:{row}", f"non-numeric {column}; set to missing"))
        table[column] = values.astype(np.float64)
    return problems
