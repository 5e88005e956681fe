"""Write simulated clips as Ultrasound Multi-frame DICOM files, streaming frame by frame.

The header is built with pydicom; the pixel data element is appended by hand so that frames are
encoded and written one block at a time (native or encapsulated), never held whole in memory.
Supported pixel formats: ``mono`` (MONOCHROME2, native), ``mono_rle`` (MONOCHROME2, RLE
Lossless), ``rgb`` (RGB, native, planar configuration 0) and ``ybr_jpeg`` (YBR_FULL_422, JPEG
Baseline, one frame per fragment).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.encoders import RLELosslessEncoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

_TRANSFER = {"mono": ExplicitVRLittleEndian, "mono_rle": RLELossless,
             "rgb": ExplicitVRLittleEndian, "ybr_jpeg": JPEGBaseline8Bit}
_PHOTOMETRIC = {"mono": "MONOCHROME2", "mono_rle": "MONOCHROME2", "rgb": "RGB", "ybr_jpeg": "YBR_FULL_422"}
_ITEM, _SEQ_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"


@dataclass(frozen=True)
class Identity:
    """Identifying header values of a synthetic patient (these never leave the DICOM files)."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    institution: str
    accession: str
    study_uid: str
    exam_start: datetime


@dataclass(frozen=True)
class ClipSpec:
    """What a clip file declares: size, timing, regions, format and vendor."""

    rows: int
    cols: int
    n_frames: int
    fps: float
    start_s: float
    clip_index: int
    pixel_format: str
    timing_mode: str
    manufacturer: tuple[str, str]
    regions: tuple[tuple[int, int, int, int], ...]
    spacing_mm: float
    truncate_to: int | None = None


def _region(bounds: tuple[int, int, int, int], spacing_mm: float) -> Dataset:
    x0, y0, x1, y1 = bounds
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1 - 1, y1 - 1
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = 3, 3  # cm
    r.PhysicalDeltaX = r.PhysicalDeltaY = round(spacing_mm / 10.0, 6)
    r.ReferencePixelX0, r.ReferencePixelY0 = (x0 + x1) // 2, y0
    return r


def _timing(ds: Dataset, spec: ClipSpec) -> None:
    """Declare frame timing the way the clip's vendor profile does."""
    frame_ms = 1000.0 / spec.fps
    if spec.timing_mode == "frame_time_vector":
        ds.FrameIncrementPointer = 0x00181065
        ds.FrameTimeVector = [0.0] + [round(frame_ms, 3)] * (spec.n_frames - 1)
    elif spec.timing_mode == "frame_time":
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = round(frame_ms, 4)
    else:
        ds.CineRate = int(round(spec.fps))
        ds.RecommendedDisplayFrameRate = int(round(spec.fps))


def _header(ident: Identity, spec: ClipSpec, seed_key: str) -> Dataset:
    when = ident.exam_start + timedelta(seconds=spec.start_s)
    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed_key, "sop"])
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed_key, "series"])
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = ident.name, ident.patient_id
    ds.PatientBirthDate, ds.PatientSex = ident.birth_date, ident.sex
    ds.InstitutionName, ds.AccessionNumber = ident.institution, ident.accession
    ds.Manufacturer, ds.ManufacturerModelName = spec.manufacturer
    ds.StudyDate = ident.exam_start.strftime("%Y%m%d")
    ds.StudyTime = ident.exam_start.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    ds.SeriesNumber, ds.InstanceNumber = 1, spec.clip_index + 1
    ds.ContrastBolusAgent = "SonoVue"
    ds.Rows, ds.Columns, ds.NumberOfFrames = spec.rows, spec.cols, spec.n_frames
    rgb = spec.pixel_format in ("rgb", "ybr_jpeg")
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = _PHOTOMETRIC[spec.pixel_format]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if spec.pixel_format == "ybr_jpeg":
        ds.LossyImageCompression = "01"
    _timing(ds, spec)
    ds.SequenceOfUltrasoundRegions = Sequence([_region(b, spec.spacing_mm) for b in spec.regions])
    block = ds.private_block(0x0029, "CEUSFLOW SIMULATED VENDOR", create=True)
    block.add_new(0x10, "LT", f"<Export><Path>D:\\CEUS\\{ident.name}\\{ident.patient_id}\\</Path></Export>")
    return ds


def _encode(frame: NDArray[np.uint8], fmt: str) -> bytes:
    """Encode one whole frame (rows, cols) or (rows, cols, 3) in the clip's pixel format."""
    if fmt == "mono_rle":
        rows, cols = frame.shape
        return RLELosslessEncoder.encode(
            np.ascontiguousarray(frame), rows=rows, columns=cols, samples_per_pixel=1,
            bits_allocated=8, bits_stored=8, pixel_representation=0,
            photometric_interpretation="MONOCHROME2", number_of_frames=1)
    if fmt == "ybr_jpeg":
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=92, subsampling=1)
        return buf.getvalue()
    return np.ascontiguousarray(frame).tobytes()


def _to_display(frame: NDArray[np.uint8], fmt: str) -> NDArray[np.uint8]:
    """Colour formats carry a yellow depth scale (1 cm ticks) at the right edge, as scanners do."""
    if fmt not in ("rgb", "ybr_jpeg"):
        return frame
    rgb = np.repeat(frame[..., None], 3, axis=-1)
    rgb[::12, -4:-1] = (230, 200, 0)
    return rgb


def write_clip(path: Path, ident: Identity, spec: ClipSpec, frames: Iterable[NDArray[np.uint8]],
               seed_key: str) -> int:
    """Write one clip file, encoding and appending blocks of frames as they come.

    Parameters
    ----------
    path : Path
        Output file (parents created).
    ident : Identity
        Identifying values to put in the header.
    spec : ClipSpec
        Clip description.
    frames : iterable of ndarray uint8 (B, rows, cols)
        Whole frames, block by block.
    seed_key : str
        Makes the UIDs deterministic.

    Returns
    -------
    int
        Bytes written.
    """
    ds = _header(ident, spec, seed_key)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = _TRANSFER[spec.pixel_format]
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["ceusflow-simulator"])
    meta.ImplementationVersionName = "CEUSFLOW_SIM"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
        _write_pixels(fh, spec, frames)
        return fh.tell()


def _write_pixels(fh: io.BufferedWriter, spec: ClipSpec, frames: Iterable[NDArray[np.uint8]]) -> None:
    encapsulated = spec.pixel_format in ("mono_rle", "ybr_jpeg")
    per_frame = spec.rows * spec.cols * (3 if spec.pixel_format == "rgb" else 1)
    keep = spec.n_frames if spec.truncate_to is None else spec.truncate_to
    length = 0xFFFFFFFF if encapsulated else spec.n_frames * per_frame + (spec.n_frames * per_frame) % 2
    fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length))
    if encapsulated:
        fh.write(_ITEM + struct.pack("<I", 0))  # empty basic offset table
    written = 0
    for block in frames:
        for frame in block:
            if written >= keep:
                break
            data = _encode(_to_display(frame, spec.pixel_format), spec.pixel_format)
            if encapsulated:
                data += b"\x00" * (len(data) % 2)
                fh.write(_ITEM + struct.pack("<I", len(data)))
            fh.write(data)
            written += 1
    if encapsulated and spec.truncate_to is None:
        fh.write(_SEQ_END + struct.pack("<I", 0))
    elif not encapsulated and spec.truncate_to is None and (spec.n_frames * per_frame) % 2:
        fh.write(b"\x00")
