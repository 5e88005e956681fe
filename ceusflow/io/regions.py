"""Ultrasound calibration regions (SequenceOfUltrasoundRegions, PS3.3 C.8.5.5) and their choice.

The pixel spacing of an ultrasound image lives in its regions, not in PixelSpacing. A region is
used for spacing only if it is a 2-D tissue image (RegionSpatialFormat = 1), its physical units are
cm in both directions (code 3), its deltas are positive and its bounds lie inside the image. The
DICOM bounds are inclusive; a MaxX1 equal to Columns (one past the last pixel, a frequent
off-by-one of vendors) is accepted and clipped. Bounds further out mean the image was cropped or
rescaled after the regions were written: the region is *stale*, flagged and never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from pydicom.dataset import Dataset

Panel = Literal["largest", "left", "right"]
_CM = 3
_TISSUE = 1
_SPATIAL_2D = 1


@dataclass(frozen=True)
class UltrasoundRegion:
    """One calibration region of an ultrasound image.

    Attributes
    ----------
    x0, y0, x1, y1 : int
        Inclusive pixel bounds (columns x, rows y), clipped to the image when valid.
    spatial_format : int
        RegionSpatialFormat (1 = 2-D tissue or flow image, 4 = waveform, ...).
    data_type : int
        RegionDataType (1 = tissue, 2 = colour flow, 10 = ECG trace, 13 = grey bar, ...).
    units_x, units_y : int
        PhysicalUnitsX/YDirection (3 = cm, 4 = s).
    delta_x_mm, delta_y_mm : float
        Pixel spacing in mm when the units are cm, else NaN.
    stale : bool
        True when the bounds exceed the image (Columns x Rows).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int
    data_type: int
    units_x: int
    units_y: int
    delta_x_mm: float
    delta_y_mm: float
    stale: bool

    @property
    def area(self) -> int:
        """Number of pixels inside the bounds."""
        return (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)

    @property
    def usable(self) -> bool:
        """True for a non-stale 2-D region calibrated in cm."""
        calibrated = self.units_x == _CM and self.units_y == _CM
        positive = self.delta_x_mm > 0 and self.delta_y_mm > 0
        return self.spatial_format == _SPATIAL_2D and calibrated and positive and not self.stale

    def holds(self, roi: Sequence[float]) -> bool:
        """True when the box ``roi = (x0, y0, x1, y1)`` (pixels) lies inside the region."""
        x0, y0, x1, y1 = roi
        return self.x0 <= x0 and self.y0 <= y0 and x1 <= self.x1 + 1 and y1 <= self.y1 + 1


def read_regions(ds: Dataset, rows: int, columns: int) -> tuple[UltrasoundRegion, ...]:
    """All regions of a header, spacing converted from cm to mm.

    Parameters
    ----------
    ds : pydicom Dataset
    rows, columns : int
        Image size in pixels, to validate the bounds.

    Returns
    -------
    tuple of UltrasoundRegion
        In header order; an empty tuple when the sequence is absent.
    """
    return tuple(_region(item, rows, columns) for item in ds.get("SequenceOfUltrasoundRegions", []))


def _region(item: Dataset, rows: int, columns: int) -> UltrasoundRegion:
    x0, y0 = int(item.get("RegionLocationMinX0", 0)), int(item.get("RegionLocationMinY0", 0))
    x1, y1 = int(item.get("RegionLocationMaxX1", -1)), int(item.get("RegionLocationMaxY1", -1))
    stale = x1 > columns or y1 > rows or x0 < 0 or y0 < 0 or x1 < x0 or y1 < y0
    if not stale:
        x1, y1 = min(x1, columns - 1), min(y1, rows - 1)
    units_x, units_y = int(item.get("PhysicalUnitsXDirection", 0)), int(item.get("PhysicalUnitsYDirection", 0))
    return UltrasoundRegion(
        x0=x0, y0=y0, x1=x1, y1=y1,
        spatial_format=int(item.get("RegionSpatialFormat", 0)),
        data_type=int(item.get("RegionDataType", 0)),
        units_x=units_x, units_y=units_y,
        delta_x_mm=_mm(item.get("PhysicalDeltaX"), units_x),
        delta_y_mm=_mm(item.get("PhysicalDeltaY"), units_y),
        stale=stale,
    )


def _mm(delta: object, units: int) -> float:
    try:
        value = abs(float(delta))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return value * 10.0 if units == _CM else float("nan")


def choose_region(
    regions: Sequence[UltrasoundRegion],
    *,
    roi: Sequence[float] | None = None,
    panel: Panel = "largest",
) -> UltrasoundRegion | None:
    """The region whose spacing applies to the image (never blindly region [0]).

    Parameters
    ----------
    regions : sequence of UltrasoundRegion
    roi : (x0, y0, x1, y1) in pixels, optional
        When given, only usable regions holding the whole box qualify.
    panel : {"largest", "left", "right"}
        Among qualifying regions, tissue regions (RegionDataType 1) are preferred; then the
        largest one, ties going to the leftmost (``"largest"``), or the leftmost / rightmost one.
        On a dual display (B-mode | contrast side by side) pass ``"right"`` for a right-hand
        contrast panel, or an ``roi`` inside it.

    Returns
    -------
    UltrasoundRegion or None
        None when no usable region qualifies.
    """
    if panel not in get_args(Panel):
        raise ValueError(f"panel={panel!r} is not supported; expected one of {get_args(Panel)}")
    usable = [r for r in regions if r.usable and (roi is None or r.holds(roi))]
    tissue = [r for r in usable if r.data_type == _TISSUE] or usable
    if not tissue:
        return None
    if panel == "left":
        return min(tissue, key=lambda r: r.x0)
    if panel == "right":
        return max(tissue, key=lambda r: r.x0)
    return min(tissue, key=lambda r: (-r.area, r.x0))
