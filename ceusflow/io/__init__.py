"""Input edge: DICOM cines, clinical tables and pseudonyms (the only place identifiers are read)."""

from __future__ import annotations

from ceusflow.io.dicom import read_cine, read_clip, read_frames
from ceusflow.io.header import ClipHeader, read_header
from ceusflow.io.regions import UltrasoundRegion, choose_region

__all__ = ["ClipHeader", "UltrasoundRegion", "choose_region", "read_cine", "read_clip", "read_frames",
           "read_header"]
