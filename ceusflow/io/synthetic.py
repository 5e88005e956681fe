"""Write small synthetic ultrasound cine DICOM files (for tests and benchmarks).

The files look like a scanner's export: Ultrasound Multi-frame Image Storage, identifying
attributes filled with the values the caller gives (so de-identification can be tested), a
calibration region, a private block, and one of the usual encodings.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from io import BytesIO
from typing import Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

Encoding = Literal["native", "rle", "jpeg"]
Timing = Literal["frame_time", "frame_time_vector", "cine_rate", "none"]


def write_cine_dicom(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    *,
    encoding: Encoding = "native",
    timing: Timing = "frame_time",
    fps: float = 10.0,
    start: dt.datetime | None = dt.datetime(2020, 3, 4, 10, 0, 0),
    regions: Sequence[tuple[int, int, int, int, float]] | None = None,
    patient_id: str = "PID-0001",
    patient_name: str = "DOE^JANE",
    n_frames_declared: int | None = None,
    bolus_start: dt.time | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Write one synthetic cine.

    Parameters
    ----------
    path : path-like
    frames : ndarray uint8 (n, rows, columns) grey, or (n, rows, columns, 3) RGB
    encoding : {"native", "rle", "jpeg"}
        Uncompressed, RLE Lossless, or JPEG Baseline (YBR_FULL_422, Pillow quality 95).
    timing : {"frame_time", "frame_time_vector", "cine_rate", "none"}
    fps : float
        Frame rate in frames/s.
    start : datetime or None
        AcquisitionDateTime of the first frame (omitted when None).
    regions : sequence of (x0, y0, x1, y1, delta_cm), optional
        2-D tissue regions; default one region over the whole image at 0.01 cm/px.
    patient_id, patient_name : str
        Identifying values written into the header.
    n_frames_declared : int, optional
        NumberOfFrames to declare (default: the number of frames).
    bolus_start : time, optional
        Contrast Bolus Start Time.
    extra : dict, optional
        More header keywords to set.
    """
    ds = _base(frames, patient_id, patient_name, n_frames_declared or len(frames))
    _set_timing(ds, timing, len(frames), fps)
    _set_regions(ds, regions, frames.shape[1], frames.shape[2])
    if start is not None:
        ds.AcquisitionDateTime = start.strftime("%Y%m%d%H%M%S.%f")
        ds.ContentDate, ds.ContentTime = start.strftime("%Y%m%d"), start.strftime("%H%M%S")
    if bolus_start is not None:
        ds.ContrastBolusStartTime = bolus_start.strftime("%H%M%S.%f")
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    _set_pixels(ds, frames, encoding)
    ds.save_as(path, enforce_file_format=True)


def _base(frames: np.ndarray, patient_id: str, patient_name: str, n_declared: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, patient_name, "19610203"
    ds.InstitutionName, ds.AccessionNumber = "General Hospital of Nowhere", "ACC778899"
    ds.StudyDate, ds.Modality, ds.Manufacturer = "20200304", "US", "SynthScan"
    ds.add_new(0x00190010, "LO", "ACME PRIVATE")
    ds.add_new(0x00191050, "UT", f"<Path>D:/patients/{patient_id}/{patient_name}/clip</Path>")
    ds.Rows, ds.Columns, ds.NumberOfFrames = frames.shape[1], frames.shape[2], n_declared
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    ds.PhotometricInterpretation = "RGB" if frames.ndim == 4 else "MONOCHROME2"
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    return ds


def _set_timing(ds: Dataset, timing: Timing, n: int, fps: float) -> None:
    if timing == "frame_time":
        ds.FrameTime = f"{1000.0 / fps:.4f}"
        ds.FrameIncrementPointer = 0x00181063
    elif timing == "frame_time_vector":
        ds.FrameTimeVector = [0.0] + [round(1000.0 / fps, 4)] * (n - 1)
    elif timing == "cine_rate":
        ds.CineRate = int(round(fps))


def _set_regions(ds: Dataset, regions: Sequence[tuple[int, int, int, int, float]] | None, rows: int, cols: int) -> None:
    items = []
    for x0, y0, x1, y1, delta_cm in regions or [(0, 0, cols - 1, rows - 1, 0.01)]:
        item = Dataset()
        item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
        item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
        item.PhysicalDeltaX = item.PhysicalDeltaY = delta_cm
        items.append(item)
    ds.SequenceOfUltrasoundRegions = DicomSequence(items)


def _set_pixels(ds: Dataset, frames: np.ndarray, encoding: Encoding) -> None:
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if encoding == "jpeg":
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([jpeg_bytes(f) for f in frames])
        ds["PixelData"].VR = "OB"
        if frames.ndim == 4:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        return
    ds.PixelData = frames.tobytes()
    if encoding == "rle":
        ds.compress(RLELossless)


def jpeg_bytes(frame: np.ndarray, quality: int = 95) -> bytes:
    """One frame as a baseline JPEG codestream (Pillow; YCbCr 4:2:2 for RGB input).

    Parameters
    ----------
    frame : ndarray uint8 (rows, columns) or (rows, columns, 3)
    quality : int

    Returns
    -------
    bytes
    """
    buffer = BytesIO()
    image = Image.fromarray(frame, mode="RGB" if frame.ndim == 3 else "L")
    image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:2")
    return buffer.getvalue()


def speckle(n: int, rows: int, columns: int, *, seed: int = 0, colour: bool = False) -> np.ndarray:
    """Speckle-like uint8 frames: Rayleigh noise over a slowly brightening blob.

    Parameters
    ----------
    n, rows, columns : int
    seed : int
    colour : bool
        Grey RGB (R = G = B) instead of one channel.

    Returns
    -------
    ndarray uint8 (n, rows, columns[, 3])
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :columns]
    blob = np.exp(-(((yy - rows / 2) / (rows / 5)) ** 2 + ((xx - columns / 2) / (columns / 5)) ** 2))
    gain = np.linspace(20, 120, n)[:, None, None]
    frames = np.empty((n, rows, columns), dtype=np.uint8)
    for start in range(0, n, 64):  # blocks: float temporaries of 64 frames, not of the whole cine
        stop = min(start + 64, n)
        noise = rng.rayleigh(1.0, (stop - start, rows, columns))  # same stream as one draw of all
        frames[start:stop] = np.clip(noise * (15 + gain[start:stop] * blob), 0, 255)
    return np.repeat(frames[..., None], 3, axis=-1) if colour else frames
