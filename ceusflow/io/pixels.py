"""Decode one frame at a time to 8-bit luminance (default) or 8-bit RGB.

Decoders are pinned per transfer syntax (:data:`DECODERS`): plugins differ by a few grey levels
on lossy JPEG, so a store must not depend on which happens to be installed.

Luminance, exactly:

* MONOCHROME2: the stored value; MONOCHROME1 is inverted; more than 8 bits stored are shifted
  right to the 8 most significant bits (signed data offset to unsigned first).
* YBR_FULL / YBR_FULL_422 (JPEG Baseline or native): the Y component itself, never a round trip
  through RGB. For JPEG Baseline/Extended 8-bit, Pillow decodes only Y (``Image.draft("L")``): the
  same libjpeg Y plane as pydicom's Pillow plugin with ``as_rgb=False``, about 8x faster.
* RGB (either planar configuration), YBR_RCT / YBR_ICT (JPEG 2000: the decoder returns RGB) and
  PALETTE COLOR (``apply_color_lut``; 16-bit entries shifted right by 8): ITU-R BT.601
  ``Y = round(0.299 R + 0.587 G + 0.114 B)``, the luma of DICOM's YBR_FULL (PS3.3 C.7.6.3.1.2).

Colour (``colour=True``) is RGB uint8: YBR converted by ``pydicom.pixels.convert_color_space``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder

from ceusflow.io.layout import read_fragments

#: Pinned decoding plugin per encapsulated transfer syntax.
DECODERS: dict[str, str] = {
    uid.RLELossless: "pylibjpeg",
    uid.JPEGBaseline8Bit: "pillow",
    uid.JPEGExtended12Bit: "pylibjpeg",
    uid.JPEGLossless: "pylibjpeg",
    uid.JPEGLosslessSV1: "pylibjpeg",
    uid.JPEGLSLossless: "pylibjpeg",
    uid.JPEGLSNearLossless: "pylibjpeg",
    uid.JPEG2000Lossless: "pylibjpeg",
    uid.JPEG2000: "pylibjpeg",
    uid.HTJ2KLossless: "pylibjpeg",
    uid.HTJ2KLosslessRPCL: "pylibjpeg",
    uid.HTJ2K: "pylibjpeg",
}
NATIVE: frozenset[str] = frozenset(
    {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian}
)
_PILLOW_Y = frozenset({uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit})
_YBR = ("YBR_FULL", "YBR_FULL_422")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class PixelSpec:
    """What a frame decoder needs: a file and its Image Pixel attributes (no identifiers).

    Attributes
    ----------
    path : str
        File to read.
    transfer_syntax : str
    rows, columns, samples : int
    bits_allocated, bits_stored : int
    signed : bool
        PixelRepresentation == 1.
    photometric : str
    planar : int
        PlanarConfiguration (0 = RGBRGB..., 1 = RR..GG..BB..).
    little_endian : bool
    palette : ndarray uint8 (2**bits, 3) or None
        RGB lookup table of PALETTE COLOR images.
    """

    path: str
    transfer_syntax: str
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    little_endian: bool
    palette: np.ndarray | None = field(default=None, repr=False)

    @property
    def encapsulated(self) -> bool:
        """True for compressed (encapsulated) pixel data."""
        return self.transfer_syntax not in NATIVE

    @property
    def frame_nbytes(self) -> int:
        """Bytes of one native frame."""
        pixels = self.rows * self.columns
        if self.photometric == "YBR_FULL_422" and self.samples == 3:
            return pixels * 2 * self.bits_allocated // 8
        return pixels * self.samples * self.bits_allocated // 8


def decode_block(ranges: np.ndarray, *, spec: PixelSpec, colour: bool = False) -> np.ndarray:
    """Decode the frames at ``ranges`` (one file open for the block).

    Parameters
    ----------
    ranges : ndarray int64 (k, 2)
        Byte ranges of the frames (see :mod:`ceusflow.io.layout`).
    spec : PixelSpec
    colour : bool
        RGB instead of luminance.

    Returns
    -------
    ndarray uint8
        (k, rows, columns) luminance, or (k, rows, columns, 3) RGB.
    """
    shape = (len(ranges), spec.rows, spec.columns) + ((3,) if colour else ())
    out = np.empty(shape, dtype=np.uint8)
    with open(spec.path, "rb") as fp:
        for i, (start, stop) in enumerate(np.asarray(ranges).reshape(-1, 2)):
            out[i] = decode_frame(read_raw(fp, spec, int(start), int(stop)), spec, colour=colour)
    return out


def read_raw(fp: BinaryIO, spec: PixelSpec, start: int, stop: int) -> bytes:
    """Encoded bytes of one frame (fragments joined when encapsulated)."""
    if spec.encapsulated:
        return read_fragments(fp, start, stop)
    fp.seek(start)
    return fp.read(stop - start)


def decode_frame(raw: bytes, spec: PixelSpec, *, colour: bool = False) -> np.ndarray:
    """One frame to uint8 luminance (rows, columns) or RGB (rows, columns, 3).

    Parameters
    ----------
    raw : bytes
        The frame's encoded bytes.
    spec : PixelSpec
    colour : bool

    Returns
    -------
    ndarray uint8
    """
    if not colour and _pillow_y(spec):
        return _pillow_luminance(raw)
    if spec.encapsulated:
        arr, photometric = _plugin(raw, spec)
    else:
        arr, photometric = _native(raw, spec, colour=colour)
    return _finish(arr, photometric, spec, colour=colour)


def _pillow_y(spec: PixelSpec) -> bool:
    grey_or_ybr = spec.photometric in _YBR or spec.photometric == "MONOCHROME2"
    return spec.transfer_syntax in _PILLOW_Y and spec.bits_stored == 8 and grey_or_ybr


def _pillow_luminance(raw: bytes) -> np.ndarray:
    image = Image.open(BytesIO(raw), formats=("JPEG",))
    image.draft("L", image.size)
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)


def _plugin(raw: bytes, spec: PixelSpec) -> tuple[np.ndarray, str]:
    decoder = get_decoder(spec.transfer_syntax)
    arr, props = decoder.as_array(
        encapsulate([raw]), index=0, decoding_plugin=DECODERS[spec.transfer_syntax],
        as_rgb=False, rows=spec.rows, columns=spec.columns, samples_per_pixel=spec.samples,
        bits_allocated=spec.bits_allocated, bits_stored=spec.bits_stored,
        pixel_representation=int(spec.signed), photometric_interpretation=spec.photometric,
        number_of_frames=1, planar_configuration=spec.planar, pixel_keyword="PixelData",
    )
    return arr, str(props.get("photometric_interpretation", spec.photometric))


def _native(raw: bytes, spec: PixelSpec, *, colour: bool) -> tuple[np.ndarray, str]:
    if spec.photometric == "YBR_FULL_422" and spec.samples == 3:
        return _native_422(raw, spec, colour=colour), "YBR_FULL"
    kind = "i" if spec.signed else "u"
    dtype = np.dtype(f"{'<' if spec.little_endian else '>'}{kind}{spec.bits_allocated // 8}")
    flat = np.frombuffer(raw, dtype=dtype, count=spec.rows * spec.columns * spec.samples)
    if spec.samples == 1:
        return flat.reshape(spec.rows, spec.columns), spec.photometric
    if spec.planar == 1:
        return np.moveaxis(flat.reshape(spec.samples, spec.rows, spec.columns), 0, -1), spec.photometric
    return flat.reshape(spec.rows, spec.columns, spec.samples), spec.photometric


def _native_422(raw: bytes, spec: PixelSpec, *, colour: bool) -> np.ndarray:
    """Native YBR_FULL_422: each pixel pair stored as Y1 Y2 Cb Cr."""
    quads = np.frombuffer(raw, dtype=np.uint8, count=spec.frame_nbytes)
    quads = quads.reshape(spec.rows, spec.columns // 2, 4)
    luma = quads[..., :2].reshape(spec.rows, spec.columns)
    if not colour:
        return luma[..., None]
    chroma = np.repeat(quads[..., 2:], 2, axis=1)
    return np.concatenate([luma[..., None], chroma], axis=-1)


def _finish(arr: np.ndarray, photometric: str, spec: PixelSpec, *, colour: bool) -> np.ndarray:
    if photometric == "PALETTE COLOR" and spec.palette is not None:
        rgb = spec.palette[arr.astype(np.intp)]
        return rgb if colour else luminance(rgb)
    if photometric in _YBR:
        ybr = _to_uint8(arr, spec)
        return convert_color_space(ybr, "YBR_FULL", "RGB") if colour else ybr[..., 0]
    if arr.ndim == 3:
        rgb = _to_uint8(arr, spec)
        return rgb if colour else luminance(rgb)
    grey = _to_uint8(arr, spec)
    grey = 255 - grey if photometric == "MONOCHROME1" else grey
    return np.repeat(grey[..., None], 3, axis=-1) if colour else grey


def _to_uint8(arr: np.ndarray, spec: PixelSpec) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    wide = arr.astype(np.int64)
    if spec.signed:
        wide = wide + (1 << (spec.bits_stored - 1))
    shift = max(spec.bits_stored - 8, 0)
    return np.clip(wide >> shift, 0, 255).astype(np.uint8)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of 8-bit RGB.

    Parameters
    ----------
    rgb : ndarray uint8 (..., 3)

    Returns
    -------
    ndarray uint8 (...)
        ``round(0.299 R + 0.587 G + 0.114 B)``.
    """
    return np.rint(rgb.astype(np.float32) @ _LUMA).clip(0, 255).astype(np.uint8)
