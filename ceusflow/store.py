"""The cohort store: one Zarr v3 group per patient, written atomically, read as an xarray DataTree.

Layout (see ``docs/store.md`` for the choice and the chunking measurements)::

    NAME.zarr/                    root attrs: layout, ceusflow version, counts, skipped inputs
      clinical/                   Dataset(patient): clinical.csv under pseudonymous keys
      rois/                       Dataset(roi): patient, t_s (s), x0, y0, x1, y1 (pixels)
      patients/<key>/             Dataset: intensity(time, y, x) uint8, coords time (s), y/x (mm),
                                  clip, frame; attrs spacing_mm, region, timing_source, flags

A patient is written into a staging folder beside the store (``.NAME.zarr.staging/``) and renamed
into ``patients/`` when complete: a rename within one file system is atomic, so a patient folder
either is complete or does not exist, whenever the writer is killed. Every patient has exactly one
writer, and every dask task writes whole shards (zarr-python #3514: two writers into one shard
lose data).
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ceusflow.conventions import INTENSITY, TIME
from ceusflow.errors import StoreError

LAYOUT = "ceusflow-cohort/1"
PATIENTS = "patients"
#: Frames per shard (and per dask task when writing): one frame per chunk inside it.
SHARD_FRAMES = 128


def compressor() -> BloscCodec:
    """Blosc-zstd level 1: speckle compresses ~2.6-2.9x losslessly whatever the level."""
    return BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")


def create_store(path: str | os.PathLike[str]) -> Path:
    """Create the store's root and ``patients`` groups when absent; clear stale staging.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    Path
    """
    path = Path(path)
    root = zarr.open_group(path, mode="a", zarr_format=3)
    if root.attrs.get("layout", LAYOUT) != LAYOUT:
        raise StoreError(f"{path}: not a ceusflow cohort store (layout {root.attrs.get('layout')!r})")
    root.attrs["layout"] = LAYOUT
    root.require_group(PATIENTS)
    shutil.rmtree(staging_dir(path), ignore_errors=True)
    return path


def staging_dir(path: str | os.PathLike[str]) -> Path:
    """Folder beside the store where patients are written before the atomic rename."""
    path = Path(path)
    return path.parent / f".{path.name}.staging"


def finished_patients(path: str | os.PathLike[str]) -> set[str]:
    """Keys of the patients completely written (their folder exists in ``patients/``)."""
    folder = Path(path) / PATIENTS
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if (p / "zarr.json").is_file()}


def cine_encoding(cine: xr.DataArray, *, shard_frames: int = SHARD_FRAMES) -> dict[str, dict[str, Any]]:
    """Zarr encoding of a cine: one frame per chunk, ``shard_frames`` frames per shard.

    Parameters
    ----------
    cine : DataArray (time, y, x[, channel])
    shard_frames : int

    Returns
    -------
    dict
        For ``Dataset.to_zarr(encoding=...)``.
    """
    frame = tuple(cine.shape[1:])
    shard = (max(min(shard_frames, cine.sizes[TIME]), 1), *frame)
    return {INTENSITY: {"chunks": (1, *frame), "shards": shard, "compressors": (compressor(),)}}


def write_patient(path: str | os.PathLike[str], key: str, cine: xr.DataArray,
                  *, shard_frames: int = SHARD_FRAMES) -> int:
    """Write one patient's cine atomically (staging folder, then rename).

    Parameters
    ----------
    path : path-like
        The store.
    key : str
        Patient pseudonym.
    cine : DataArray (time, y, x[, channel])
        Lazy; its dask chunks should hold ``shard_frames`` frames so each task writes whole shards.
    shard_frames : int

    Returns
    -------
    int
        Bytes written.
    """
    tmp = staging_dir(path) / f"{key}.{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    data = cine.chunk({TIME: max(min(shard_frames, cine.sizes[TIME]), 1)})  # dask chunk = one shard
    with dask.config.set(scheduler="synchronous"):
        data.to_dataset().to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False,
                                  encoding=cine_encoding(cine, shard_frames=shard_frames))
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    target = Path(path) / PATIENTS / key
    try:
        os.rename(tmp, target)
    except OSError:  # another writer finished this patient first
        shutil.rmtree(tmp, ignore_errors=True)
    return size


def write_table(path: str | os.PathLike[str], name: str, table: xr.Dataset) -> None:
    """Write (replace) a small table group such as ``clinical`` or ``rois``.

    Parameters
    ----------
    path : path-like
    name : str
    table : Dataset
    """
    table.to_zarr(path, group=name, mode="w", zarr_format=3, consolidated=False)


def finalize(path: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Set the root attrs (provenance, counts, skipped inputs) and consolidate metadata once.

    Parameters
    ----------
    path : path-like
    attrs : dict
        JSON-serialisable values.
    """
    root = zarr.open_group(path, mode="a", zarr_format=3)
    root.attrs.update(_jsonable(attrs))
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet: we know
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))
    shutil.rmtree(staging_dir(path), ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_store(path: str | os.PathLike[str]) -> xr.DataTree:
    """Open a cohort store lazily.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    DataTree
        ``tree["patients/<key>"].intensity`` (time, y, x) as dask arrays; ``tree["clinical"]``;
        provenance in ``tree.attrs``.

    Raises
    ------
    StoreError
        Missing store or another layout.
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no Zarr store here; create it with `ceusflow convert`")
    root = zarr.open_group(path, mode="r")
    if root.attrs.get("layout") != LAYOUT:
        raise StoreError(f"{path}: not a ceusflow cohort store (layout {root.attrs.get('layout')!r})")
    consolidated = root.metadata.consolidated_metadata is not None  # None while a run is unfinished
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return xr.open_datatree(path, engine="zarr", chunks={}, zarr_format=3, consolidated=consolidated)
