"""Read a DICOM clip's header: an explicit allow-list of non-identifying values.

The file is parsed up to the Pixel Data element only (``read_partial`` stops there); pixel bytes
are located, never read. Nothing outside :class:`ClipHeader`'s fields leaves this module: no name,
ID, UID, institution, accession number or private tag. The two absolute date-times it keeps are
excluded from ``repr`` and serve only to order clips and compute offsets between them.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import apply_color_lut
from pydicom.uid import UID

from ceusflow.errors import InputError
from ceusflow.io import layout
from ceusflow.io.pixels import DECODERS, NATIVE, PixelSpec
from ceusflow.io.regions import UltrasoundRegion, read_regions
from ceusflow.io.timing import TimingSource, bolus_start, clip_datetime, frame_times_s

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


@dataclass(frozen=True)
class ClipHeader:
    """Non-identifying header values of one clip (one DICOM file).

    Attributes
    ----------
    source : str
        Path relative to the export root (the file name when no root is given).
    rows, columns : int
        Image size in pixels.
    n_frames : int
        NumberOfFrames (1 when absent), whatever the SOP class says.
    n_frames_present : int
        Whole frames actually present in the file (fewer when truncated).
    samples_per_pixel : int
    photometric : str
        PhotometricInterpretation.
    transfer_syntax : str
        Transfer syntax UID (a standard UID, not an instance UID).
    transfer_syntax_name : str
    planar_configuration : int
    bits_allocated, bits_stored : int
    pixel_representation : int
    frame_times_s : tuple of float or None
        Frame times in s relative to the clip's first frame, for the frames present.
    timing_source : str or None
        Which element gave the frame times (see :mod:`ceusflow.io.timing`).
    regions : tuple of UltrasoundRegion
    manufacturer, model : str
    truncated : bool
        True when the pixel data hold fewer whole frames than NumberOfFrames.
    acquisition_datetime : datetime or None
        Clip start; only for ordering clips; never written anywhere.
    bolus_start : datetime or None
        Contrast Bolus Start Time, dated; only for relative offsets; never written anywhere.
    """

    source: str
    rows: int
    columns: int
    n_frames: int
    n_frames_present: int
    samples_per_pixel: int
    photometric: str
    transfer_syntax: str
    transfer_syntax_name: str
    planar_configuration: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    frame_times_s: tuple[float, ...] | None
    timing_source: TimingSource | None
    regions: tuple[UltrasoundRegion, ...]
    manufacturer: str
    model: str
    truncated: bool
    acquisition_datetime: dt.datetime | None = field(default=None, repr=False)
    bolus_start: dt.datetime | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Clip:
    """A clip ready to decode: its header, decoder spec and frame byte ranges (k, 2).

    ``keep`` selects frames (indices into the frames present), e.g. to decimate; None keeps all.
    """

    header: ClipHeader
    spec: PixelSpec
    ranges: np.ndarray
    keep: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        """Indices (within the clip) of the frames used."""
        return np.arange(len(self.ranges)) if self.keep is None else np.asarray(self.keep)

    @property
    def times_s(self) -> np.ndarray:
        """Times in s (relative to the clip's first frame) of the frames used."""
        return np.asarray(self.header.frame_times_s, dtype=float)[self.frames]


def read_header(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> ClipHeader:
    """Read the allow-listed header values of one DICOM file.

    Parameters
    ----------
    path : path-like
        The DICOM file (any extension).
    root : path-like, optional
        Export root; ``source`` and error messages name the file relative to it.

    Returns
    -------
    ClipHeader

    Raises
    ------
    InputError
        Not DICOM, no pixel data, or an undecodable transfer syntax or pixel format.
    """
    return open_clip(path, root=root).header


def relative_name(path: str | os.PathLike[str], root: str | os.PathLike[str] | None) -> str:
    """``path`` relative to ``root`` (POSIX separators), or its file name without a root."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def open_clip(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> Clip:
    """Header, decoder spec and frame locations of one file (no pixel decoding).

    Parameters
    ----------
    path : path-like
    root : path-like, optional

    Returns
    -------
    Clip

    Raises
    ------
    InputError
        As :func:`read_header`, and when not even one whole frame is present.
    """
    name = relative_name(path, root)
    with open(path, "rb") as fp:
        ds = _parse(fp, name)
        syntax = UID(str(ds.file_meta.TransferSyntaxUID))
        element = layout.read_pixel_element(
            fp, little_endian=syntax.is_little_endian, implicit=syntax.is_implicit_VR
        )
        if element is None:
            raise InputError(name, "no pixel data", "export the clip with its images")
        spec = _spec(ds, str(Path(path).resolve()), name)
        ranges = _ranges(fp, ds, element, spec)
    if len(ranges) == 0:
        raise InputError(name, "pixel data truncated before the first whole frame", "re-export the file")
    return Clip(_header(ds, spec, name, len(ranges)), spec, ranges)


def _parse(fp: BinaryIO, name: str) -> Dataset:
    try:
        ds = read_partial(fp, stop_when=lambda tag, vr, length: int(tag) in _PIXEL_TAGS)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(name, f"not a DICOM file ({type(err).__name__})", "remove it from the export") from None
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if syntax not in NATIVE and syntax not in DECODERS:
        label = syntax.name if syntax else "missing"
        raise InputError(name, f"undecodable transfer syntax {label}", "re-export uncompressed or as JPEG")
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(name, "no pixel data", "export the clip with its images")
    return ds


def _spec(ds: Dataset, path: str, name: str) -> PixelSpec:
    bits = int(ds.get("BitsAllocated", 8))
    samples = int(ds.get("SamplesPerPixel", 1))
    if bits not in (8, 16) or samples not in (1, 3):
        raise InputError(name, f"unsupported pixel format ({bits}-bit, {samples} samples)", "re-export as 8-bit")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    return PixelSpec(
        path=path, transfer_syntax=str(syntax), rows=int(ds.Rows), columns=int(ds.Columns),
        samples=samples, bits_allocated=bits, bits_stored=int(ds.get("BitsStored", bits)),
        signed=int(ds.get("PixelRepresentation", 0)) == 1, photometric=photometric,
        planar=int(ds.get("PlanarConfiguration", 0) or 0), little_endian=syntax.is_little_endian,
        palette=_palette(ds, bits, name) if photometric == "PALETTE COLOR" else None,
    )


def _palette(ds: Dataset, bits: int, name: str) -> np.ndarray:
    """RGB uint8 lookup table for every stored value (segmented LUTs included)."""
    try:
        rgb = apply_color_lut(np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16), ds)
    except (ValueError, AttributeError, KeyError) as err:
        raise InputError(name, f"unreadable palette colour lookup table ({err})", "re-export as RGB") from None
    return (rgb >> 8).astype(np.uint8) if rgb.dtype != np.uint8 else rgb


def _n_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _ranges(fp: BinaryIO, ds: Dataset, element: layout.PixelElement, spec: PixelSpec) -> np.ndarray:
    n = _n_frames(ds)
    if not spec.encapsulated:
        return layout.native_ranges(element, n, spec.frame_nbytes)
    extended = ds.get("ExtendedOffsetTable")
    offsets = None if extended is None else [int(o) for o in np.frombuffer(extended, "<u8")]
    rle = spec.transfer_syntax == "1.2.840.10008.1.2.5"
    return layout.encapsulated_ranges(fp, element, n, rle=rle, extended=offsets)


def _header(ds: Dataset, spec: PixelSpec, name: str, present: int) -> ClipHeader:
    n = _n_frames(ds)
    timing = frame_times_s(ds, n)
    times = None if timing is None else tuple(float(t) for t in timing[0][:present])
    return ClipHeader(
        source=name, rows=spec.rows, columns=spec.columns, n_frames=n, n_frames_present=present,
        samples_per_pixel=spec.samples, photometric=spec.photometric,
        transfer_syntax=spec.transfer_syntax, transfer_syntax_name=UID(spec.transfer_syntax).name,
        planar_configuration=spec.planar, bits_allocated=spec.bits_allocated,
        bits_stored=spec.bits_stored, pixel_representation=int(spec.signed),
        frame_times_s=times, timing_source=None if timing is None else timing[1],
        regions=read_regions(ds, spec.rows, spec.columns),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        model=str(ds.get("ManufacturerModelName", "") or ""),
        truncated=present < n, acquisition_datetime=clip_datetime(ds), bolus_start=bolus_start(ds),
    )
