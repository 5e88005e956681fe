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

import contextlib
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ceusflow.conventions import INTENSITY, TIME
from ceusflow.errors import InputError, StoreError

LAYOUT = "ceusflow-cohort/1"
PATIENTS = "patients"
#: Frames per shard (and per dask task when writing): one frame per chunk inside it.
SHARD_FRAMES = 128


#: Lossless codecs offered for the cines (Blosc, level 1, no shuffle: uint8 speckle gains nothing
#: from higher levels). lz4 encodes ~7x and decodes ~1.8x faster; zstd stores 15-33 % fewer bytes.
#: The default is lz4: JPEG exports converted at 0.74x their decode-only speed with lz4, 0.55x with
#: zstd (``docs/store.md``, session 4). ``none`` stores the frames uncompressed (2-3x the bytes of
#: lz4) for a user whose disk is cheaper than conversion time (``docs/store.md``, session 10).
CODECS = ("zstd", "lz4", "none")
DEFAULT_CODEC = "lz4"


def compressor(name: str = DEFAULT_CODEC, chunk_bytes: int = 0) -> BloscCodec | None:
    """Blosc ``name`` (zstd or lz4) level 1: speckle compresses ~2-2.9x losslessly whatever the level.

    ``none`` returns None: the frames are stored as they are.

    For zstd, a ``chunk_bytes`` > 0 makes the whole chunk (one frame) one Blosc block: Blosc's
    automatic block of level 1 is small, and zstd restarted on each small block encoded frames
    1.3-2x slower for no better ratio (``docs/store.md``). lz4 keeps the automatic block, which
    was as fast or faster. Readers need not know: the block size is in each chunk's header.
    """
    if name not in CODECS:
        raise InputError("codec", f"{name!r} is not a known codec", f"choose one of {', '.join(CODECS)}")
    if name == "none":
        return None
    blocksize = chunk_bytes if name == "zstd" else 0
    return BloscCodec(cname=name, clevel=1, shuffle="noshuffle", blocksize=blocksize)


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


def cine_encoding(cine: xr.DataArray, *, shard_frames: int = SHARD_FRAMES,
                  codec: str = DEFAULT_CODEC) -> dict[str, dict[str, Any]]:
    """Zarr encoding of a cine: one frame per chunk, ``shard_frames`` frames per shard.

    Parameters
    ----------
    cine : DataArray (time, y, x[, channel])
    shard_frames : int
    codec : {"zstd", "lz4", "none"}

    Returns
    -------
    dict
        For ``Dataset.to_zarr(encoding=...)``.
    """
    frame = tuple(cine.shape[1:])
    shard = (max(min(shard_frames, cine.sizes[TIME]), 1), *frame)
    chunk_bytes = int(np.prod(frame)) * cine.dtype.itemsize
    blosc = compressor(codec, chunk_bytes)
    return {INTENSITY: {"chunks": (1, *frame), "shards": shard, "compressors": () if blosc is None else (blosc,)}}


def write_patient(path: str | os.PathLike[str], key: str, cine: xr.DataArray,
                  *, shard_frames: int = SHARD_FRAMES, codec: str = DEFAULT_CODEC) -> int:
    """Write one patient's cine atomically (staging folder, then rename).

    xarray writes the group's metadata and coordinates (pixels as a never-computed placeholder);
    :func:`write_shards` then streams the pixels: each dask block of the cine is decoded once, in
    time order, and every full shard is encoded and written before more is decoded, so memory holds
    about one shard whatever the cine length.

    Parameters
    ----------
    path : path-like
        The store.
    key : str
        Patient pseudonym.
    cine : DataArray (time, y, x[, channel])
        Lazy (dask) or in memory; any chunking along time.
    shard_frames : int
    codec : {"zstd", "lz4", "none"}

    Returns
    -------
    int
        Bytes written.
    """
    import dask.array as da

    tmp = staging_dir(path) / f"{key}.{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    encoding = cine_encoding(cine, shard_frames=shard_frames, codec=codec)
    with dask.config.set(scheduler="synchronous"):
        coords = {k: v.load() for k, v in cine.coords.items()}  # per-frame metadata: small
        shard = encoding[INTENSITY]["shards"]
        placeholder = cine.copy(data=da.zeros(cine.shape, dtype=cine.dtype, chunks=shard)).assign_coords(coords)
        placeholder.to_dataset().to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False, compute=False,
                                         encoding=encoding)
        write_shards(tmp / INTENSITY, cine.data)
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    target = Path(path) / PATIENTS / key
    try:
        os.rename(tmp, target)
    except OSError:  # another writer finished this patient first
        shutil.rmtree(tmp, ignore_errors=True)
    return size


def write_shards(array_path: str | os.PathLike[str], data: Any) -> None:
    """Fill an existing Zarr v3 array, sharded along its first axis, one whole shard at a time.

    ``data``'s blocks are computed once each, in order, and buffered until a shard is full (one
    writer per shard: zarr-python #3514). Each shard is then encoded with numcodecs directly:
    zarr-python encodes every inner chunk through its async codec pipeline, which capped writes
    near 150 MB/s whatever the codec (one 300 kB frame per chunk), while the same Blosc codec
    called directly runs at its own speed. The bytes follow the Zarr v3 sharding specification
    (encoded inner chunks in C order, chunks equal to the fill value left out, then the index of
    ``(offset, nbytes)`` little-endian uint64 with its CRC32C) and equal zarr's own (tested).
    Arrays of another layout are written through zarr, shard by shard.

    Parameters
    ----------
    array_path : path-like
        The array's folder (its ``zarr.json`` already written).
    data : dask.array.Array or ndarray
        The whole array; any chunking along the first axis.
    """
    import dask.array as da

    array = zarr.open_array(array_path, mode="r+", zarr_format=3)
    per_shard = (array.shards or array.chunks)[0]
    blocks = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=per_shard)
    blocks = blocks.rechunk({k: -1 for k in range(1, blocks.ndim)})
    encode = _shard_encoder(array)
    # one Delayed per block, computed as it is: Array.blocks[i].compute() would copy each block
    # once more in dask's finalize step (a whole extra pass over the pixels)
    parts = blocks.to_delayed().ravel()
    with _single_threaded_blosc():
        _write_parts(parts, array, per_shard, encode)


def _write_parts(parts: np.ndarray, array: zarr.Array, per_shard: int, encode: Any) -> None:
    """Compute ``parts`` in order in this thread, buffering frames into whole shards."""
    pending: list[np.ndarray] = []
    start = 0  # first frame of the pending shard
    for i, part in enumerate(parts):
        # synchronous: a conversion worker is one thread (a dask thread pool would only hand the
        # decode to another thread and wait for it)
        pending.append(np.asarray(part.compute(scheduler="synchronous"), dtype=array.dtype))
        while sum(len(p) for p in pending) >= per_shard or (i == len(parts) - 1 and pending):
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            shard, rest = buf[:per_shard], buf[per_shard:]
            if encode is None:
                array[start:start + len(shard)] = shard
            else:
                encode(start // per_shard, shard)
            start += len(shard)
            pending = [rest] if len(rest) else []


@contextlib.contextmanager
def _single_threaded_blosc() -> Iterator[None]:
    """Blosc without its own threads for the duration (numcodecs uses them from the main thread).

    A conversion worker is meant to use one core (workers scale by processes). Blosc's threads
    did not speed lz4 up on 480x640 frames either (0.28 vs 0.11 ms per simulated frame encoded
    alone; no measurable difference in whole conversions, ``docs/store.md``).
    """
    from numcodecs import blosc

    before = blosc.use_threads
    blosc.use_threads = False
    try:
        yield
    finally:
        blosc.use_threads = before


#: Only a chunk that compressed at least this much may be all zeros (lz4 reaches ~250x on zeros,
#: zstd far more; frames compress 2-3x), so only those frames, and small ones (Blosc copies tiny
#: buffers as they are), are scanned for the fill value.
_SCAN_RATIO, _SCAN_BELOW = 64, 65536


def local_chunk_file(array: Any, first: int) -> Path | None:
    """Local file of the chunk (or shard) ``(first, 0, ..., 0)`` of a Zarr v3 array, or None.

    The key comes from the array's own chunk-key encoding; None when the array is not in a local
    folder.
    """
    try:
        key = array.metadata.chunk_key_encoding.encode_chunk_key((first,) + (0,) * (array.ndim - 1))
        root = Path(array.store_path.store.root) / array.store_path.path
    except AttributeError:  # another store or format
        return None
    return root / key


def numcodecs_blosc(blosc: BloscCodec) -> Any:
    """The numcodecs ``Blosc`` that writes and reads the same bytes as zarr's ``BloscCodec``."""
    from numcodecs import Blosc

    return Blosc(cname=str(blosc.cname.value), clevel=int(blosc.clevel),
                 shuffle={"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
                          "bitshuffle": Blosc.BITSHUFFLE}[str(blosc.shuffle.value)], blocksize=int(blosc.blocksize))


def _all_zero(frame: np.ndarray) -> bool:
    """Whether a frame is all zeros; a strided sample rules most frames out before the full scan."""
    flat = frame.reshape(-1)
    return not flat[::997].any() and not flat.any()


def _direct_inner_codecs(array: zarr.Array) -> Any:
    """The inner codecs (bytes[, Blosc]) of a cine-layout array the direct writer handles, else None.

    The layout: 8-bit, sharded along the first axis with one frame per chunk, shard index at the
    end with bytes + CRC32C.
    """
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    codecs = array.metadata.codecs
    sharding = codecs[0] if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None
    if sharding is None:
        return None
    inner, index = sharding.codecs, sharding.index_codecs
    ok = (str(sharding.index_location.value) == "end" and array.dtype.itemsize == 1
          and 1 <= len(inner) <= 2 and isinstance(inner[0], BytesCodec)
          and (len(inner) == 1 or isinstance(inner[1], BloscCodec))
          and len(index) == 2 and isinstance(index[0], BytesCodec) and isinstance(index[1], Crc32cCodec)
          and sharding.chunk_shape[0] == 1 and tuple(sharding.chunk_shape[1:]) == array.shape[1:])
    return inner if ok else None


def _shard_encoder(array: zarr.Array) -> Any:
    """A function writing shard ``i`` from its frames with numcodecs, or None for other layouts."""
    from numcodecs import CRC32C

    inner = _direct_inner_codecs(array)
    if inner is None or local_chunk_file(array, 0) is None:
        return None
    codec = numcodecs_blosc(inner[1]) if len(inner) == 2 else None  # None: stored as they are
    crc, per_shard, empty = CRC32C(), array.shards[0], array.fill_value == 0

    def chunk(frame: np.ndarray) -> Any:
        # chunks equal to the fill value stay absent, as zarr writes them; only a frame that
        # compressed to almost nothing can be all zeros, so the others skip the full scan
        frame = np.ascontiguousarray(frame)
        if codec is None:  # the frame's own buffer: a copy costs ~0.2 ms per 480 x 640 frame
            return None if empty and _all_zero(frame) else memoryview(frame).cast("B")
        encoded = codec.encode(frame)
        scan = frame.nbytes <= _SCAN_BELOW or len(encoded) * _SCAN_RATIO <= frame.nbytes
        return None if empty and scan and not frame.any() else encoded

    def encode(i: int, frames: np.ndarray) -> None:
        parts = [chunk(frame) for frame in frames]
        table = np.full((per_shard, 2), np.iinfo(np.uint64).max, dtype="<u8")  # absent chunks
        offset = 0
        for k, part in enumerate(parts):
            if part is not None:
                table[k] = offset, part.nbytes if isinstance(part, memoryview) else len(part)
                offset += int(table[k, 1])
        target = local_chunk_file(array, i)
        assert target is not None  # checked above
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            for part in parts:
                if part is not None:
                    f.write(part)
            f.write(bytes(crc.encode(table.tobytes())))

    return encode


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
