"""The only module that touches patient identifiers.

A patient's key in every ceusflow output is ``"P" + HMAC-SHA256(secret, PatientID)[:16 hex]``: the
same PatientID gives the same key across exports of a project (so later exports join), nobody
without the secret can recompute or invert it, and the mapping back to PatientIDs is written to a
separate CSV readable by its owner only (0600), never into a store.

The secret is 32 random bytes (hex) in a file created with mode 0600; keep it out of the store and
out of version control. Losing it only means new exports get new keys.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ceusflow.errors import InputError

_OWNER_ONLY = 0o600
_KEY_HEX = 16


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """Read the project secret, creating it (mode 0600) when absent.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    bytes
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_hex(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise InputError(str(path), "secret file is readable by others", f"run chmod 600 {path}")
    return path.read_text().strip().encode()


def pseudonym(patient_id: str, secret: bytes) -> str:
    """The keyed pseudonym of one PatientID.

    Parameters
    ----------
    patient_id : str
    secret : bytes

    Returns
    -------
    str
        ``"P"`` followed by 16 hex digits.
    """
    digest = hmac.new(secret, patient_id.strip().encode(), hashlib.sha256).hexdigest()
    return "P" + digest[:_KEY_HEX]


def patient_key(path: str | os.PathLike[str], secret: bytes, *, source: str) -> str:
    """Pseudonym of the patient a DICOM file belongs to (PatientID read, hashed, dropped).

    Parameters
    ----------
    path : path-like
    secret : bytes
    source : str
        Name of the file for error messages (its path under the export).

    Returns
    -------
    str

    Raises
    ------
    InputError
        Not a DICOM file, or no PatientID.
    """
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as err:
        raise InputError(source, f"not a DICOM file ({type(err).__name__})", "remove it from the export") from None
    raw = str(ds.get("PatientID", "") or "").strip()
    if not raw:
        raise InputError(source, "no PatientID", "export the clip with its PatientID")
    _SEEN.setdefault(pseudonym(raw, secret), raw)
    return pseudonym(raw, secret)


#: pseudonym -> PatientID of the files seen by :func:`patient_key` in this process, for the mapping.
_SEEN: dict[str, str] = {}


def keys_for(patient_ids: Iterable[str], secret: bytes) -> list[str]:
    """Pseudonyms of PatientIDs given in a table (e.g. clinical.csv), in order.

    Parameters
    ----------
    patient_ids : iterable of str
    secret : bytes

    Returns
    -------
    list of str
    """
    keys = []
    for raw in patient_ids:
        key = pseudonym(str(raw), secret)
        _SEEN.setdefault(key, str(raw).strip())
        keys.append(key)
    return keys


def write_mapping(path: str | os.PathLike[str], keys: Iterable[str]) -> Path:
    """Write ``pseudonym,patient_id`` for ``keys`` (merged with an existing file), mode 0600.

    Parameters
    ----------
    path : path-like
        CSV outside the store.
    keys : iterable of str
        Pseudonyms seen by :func:`patient_key` / :func:`keys_for`.

    Returns
    -------
    Path
    """
    path = Path(path)
    rows = dict(_read_mapping(path))
    rows.update({k: _SEEN[k] for k in keys if k in _SEEN})
    lines = ["pseudonym,patient_id"] + [f"{k},{_csv_cell(v)}" for k, v in sorted(rows.items())]
    tmp = path.with_name(path.name + ".tmp")
    _write_private(tmp, "\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def _read_mapping(path: Path) -> Mapping[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {row["pseudonym"]: row["patient_id"] for row in csv.DictReader(fh)}


def _csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OWNER_ONLY)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, _OWNER_ONLY)
