"""Where each frame's bytes lie in a DICOM file, found without reading the pixel data.

A frame is located by a byte range ``(start, stop)`` in the file:

* native (uncompressed) data: the frame's raw bytes;
* encapsulated data: the item(s) holding the frame's fragment(s), item headers included.

Frames are split from fragments by the Basic Offset Table, else the Extended Offset Table, else one
fragment per frame when counts match (always for RLE), else by the codestream start markers (JPEG SOI
``FFD8``, JPEG 2000 SOC ``FF4F`` or JP2 signature). A fragment running past the end of the file is
dropped, and so is a trailing multi-fragment frame that lacks its end-of-image marker: what remains
are the whole frames present (truncated exports keep their first frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import unpack
from typing import BinaryIO

import numpy as np

_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
_STARTS = (b"\xff\xd8", b"\xff\x4f", b"\x00\x00\x00\x0c")
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class PixelElement:
    """The Pixel Data element: where its value starts and how long it claims to be.

    Attributes
    ----------
    offset : int
        File offset of the first byte of the value.
    length : int or None
        Declared length in bytes; None for undefined length (encapsulated).
    file_size : int
        Size of the file in bytes, to detect truncation.
    """

    offset: int
    length: int | None
    file_size: int


def read_pixel_element(fp: BinaryIO, *, little_endian: bool, implicit: bool) -> PixelElement | None:
    """Read the Pixel Data element header at the current position of ``fp``.

    Parameters
    ----------
    fp : binary file positioned at the element's tag (as left by ``read_partial``)
    little_endian, implicit : bool
        Encoding of the dataset.

    Returns
    -------
    PixelElement or None
        None when there is no (7FE0,0010) element.
    """
    end = "<" if little_endian else ">"
    head = fp.read(8)
    if len(head) < 8:
        return None
    group, elem = unpack(f"{end}HH", head[:4])
    if (group << 16 | elem) != _PIXEL_DATA:
        return None
    length = unpack(f"{end}L", head[4:] if implicit else fp.read(4))[0]
    offset = fp.tell()
    size = fp.seek(0, 2)
    return PixelElement(offset, None if length == 0xFFFFFFFF else length, size)


def native_ranges(element: PixelElement, n_frames: int, frame_nbytes: int) -> np.ndarray:
    """Byte ranges of the whole native frames present.

    Parameters
    ----------
    element : PixelElement
    n_frames : int
        NumberOfFrames.
    frame_nbytes : int
        Bytes per frame.

    Returns
    -------
    ndarray int64 (k, 2)
        ``k <= n_frames``; fewer when the data are truncated.
    """
    present = element.file_size - element.offset
    if element.length is not None:
        present = min(present, element.length)
    k = min(n_frames, max(present, 0) // frame_nbytes)
    starts = element.offset + np.arange(k, dtype=np.int64) * frame_nbytes
    return np.column_stack([starts, starts + frame_nbytes]).astype(np.int64).reshape(k, 2)


def encapsulated_ranges(
    fp: BinaryIO, element: PixelElement, n_frames: int, *, rle: bool, extended: list[int] | None
) -> np.ndarray:
    """Byte ranges (item headers included) of the whole encapsulated frames present.

    Parameters
    ----------
    fp : binary file
    element : PixelElement
    n_frames : int
        NumberOfFrames.
    rle : bool
        RLE Lossless: one fragment per frame by definition.
    extended : list of int or None
        ExtendedOffsetTable, if any.

    Returns
    -------
    ndarray int64 (k, 2)
    """
    bot, items, complete = _scan_items(fp, element)
    if not items:
        return np.zeros((0, 2), dtype=np.int64)
    starts = _frame_starts(fp, items, n_frames, bot=bot or extended or [], rle=rle)
    ranges = _group(items, starts)[:n_frames]
    if not complete and ranges and not _ends_whole(fp, ranges[-1], rle):
        ranges = ranges[:-1]
    return np.asarray(ranges, dtype=np.int64).reshape(len(ranges), 2)


def _scan_items(fp: BinaryIO, element: PixelElement) -> tuple[list[int], list[tuple[int, int]], bool]:
    """Basic Offset Table and (item start, item stop) of each whole fragment."""
    fp.seek(element.offset)
    bot = _read_item(fp, element.file_size)
    if bot is None:
        return [], [], False
    table = fp.read(bot[1] - bot[0] - 8)
    offsets = list(np.frombuffer(table[: len(table) // 4 * 4], dtype="<u4").astype(int))
    items: list[tuple[int, int]] = []
    while (item := _read_item(fp, element.file_size)) is not None:
        if item[1] < 0:
            return offsets, items, True
        items.append(item)
        fp.seek(item[1])
    return offsets, items, False


def _read_item(fp: BinaryIO, file_size: int) -> tuple[int, int] | None:
    """(start, stop) of the next item; stop -1 at the sequence delimiter; None if cut short."""
    start = fp.tell()
    head = fp.read(8)
    if len(head) < 8:
        return None
    tag = unpack("<HH", head[:4])
    length = unpack("<L", head[4:])[0]
    if (tag[0] << 16 | tag[1]) == _SEQ_END:
        return start, -1
    stop = start + 8 + length
    if (tag[0] << 16 | tag[1]) != _ITEM or length == 0xFFFFFFFF or stop > file_size:
        return None
    return start, stop


def _frame_starts(
    fp: BinaryIO, items: list[tuple[int, int]], n_frames: int, *, bot: list[int], rle: bool
) -> list[int]:
    """Item start offsets at which a new frame begins."""
    first = items[0][0]
    if len(bot) > 1 or (len(bot) == 1 and n_frames == 1):
        return [first + int(o) for o in bot]
    if n_frames == 1:
        return [first]
    if rle or len(items) == n_frames:
        return [start for start, _ in items]
    return [start for start, _ in items if _peek(fp, start + 8, 4).startswith(_STARTS)]


def _group(items: list[tuple[int, int]], starts: list[int]) -> list[tuple[int, int]]:
    """Merge consecutive items into frames beginning at ``starts``."""
    begin = set(starts)
    frames: list[list[int]] = []
    for start, stop in items:
        if start in begin or not frames:
            frames.append([start, stop])
        else:
            frames[-1][1] = stop
    return [(a, b) for a, b in frames]


def _ends_whole(fp: BinaryIO, frame: tuple[int, int], rle: bool) -> bool:
    """Whether the last frame of a truncated stream is whole.

    RLE frames are one fragment; the JPEG, JPEG-LS and JPEG 2000 codestreams end with the marker ``FFD9`` (EOI / EOC).
    """
    return rle or b"\xff\xd9" in _peek(fp, frame[1] - 3, 3)


def _peek(fp: BinaryIO, offset: int, size: int) -> bytes:
    fp.seek(offset)
    return fp.read(size)


def read_fragments(fp: BinaryIO, start: int, stop: int) -> bytes:
    """Concatenated fragment bytes of one encapsulated frame (item headers stripped).

    Parameters
    ----------
    fp : binary file
    start, stop : int
        Byte range of the frame's items.

    Returns
    -------
    bytes
    """
    fp.seek(start)
    raw = fp.read(stop - start)
    parts, pos = [], 0
    while pos + 8 <= len(raw):
        length = unpack("<L", raw[pos + 4 : pos + 8])[0]
        parts.append(raw[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return b"".join(parts)
