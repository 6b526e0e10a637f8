"""JPEG and PNG headers read without decoding: format, size, channels, and whether the file looks complete.

Used by the whole-set check (:mod:`datamodules.checks`, ``fast`` level) for photos in
class folders (ImageNet's ``<root>/train/<wnid>/*.JPEG``). The format is sniffed from
the first bytes, not from the name: ImageNet's training set holds a PNG and CMYK
JPEGs under ``.JPEG`` names, and PIL (the loader) opens them all.

* JPEG: ``FF D8`` (SOI), then the marker segments are walked (seeking over their
  lengths) to the first frame header (SOF0–SOF15 except DHT/JPG/DAC), which gives
  height, width and components; a scan (SOS) before any frame header is an error. The
  file is taken as complete when an EOI marker (``FF D9``) lies in its last 4 KiB
  (entropy-coded data never contains ``FF D9``; trailing padding after EOI is allowed).
* PNG: the 8-byte signature, the IHDR chunk (width, height, bit depth, colour type,
  checked to be a valid combination) and the IEND chunk at the end of the file.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

__all__ = ["ImageHeader", "ImageHeaderError", "read_image_header", "sniff_image_format"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 4096
#: SOFn markers: C0–CF except C4 (DHT), C8 (JPG), CC (DAC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: markers without a length field: TEM, RST0–7 (SOI/EOI handled apart)
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
#: PNG colour type → (channels, allowed bit depths)
_PNG_TYPES = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}


class ImageHeaderError(ValueError):
    """The header is missing or invalid; ``expected`` / ``found`` say how."""

    def __init__(self, expected: str, found: str):
        super().__init__(f"expected {expected}; found {found}")
        self.expected, self.found = expected, found


class ImageHeader(NamedTuple):
    """What a header says: ``format`` (``"jpeg"`` / ``"png"``), ``width``, ``height``, ``channels``,
    and ``complete``: the file ends as such a file should (EOI / IEND)."""

    format: str
    width: int
    height: int
    channels: int
    complete: bool


def sniff_image_format(head: bytes) -> str | None:
    """``"jpeg"``, ``"png"`` or ``None`` from a file's first bytes."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def _describe_start(head: bytes) -> str:
    for magic, name in ((b"GIF8", "a GIF"), (b"BM", "a BMP"), (b"RIFF", "a RIFF (WebP?)"), (b"%PDF", "a PDF"),
                        (b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip file")):
        if head.startswith(magic):
            return f"{name} file"
    return f"a file starting with {head[:8]!r}, neither a JPEG nor a PNG"


def _ended(size: int) -> ImageHeaderError:
    return ImageHeaderError("a JPEG frame header (SOF marker)", f"the end of the file ({size} bytes; truncated?)")


def _jpeg_header(fp, size: int) -> tuple[int, int, int]:
    """``(width, height, components)`` of the JPEG stream ``fp`` (positioned after SOI)."""
    while True:
        byte = fp.read(1)
        if not byte:
            raise _ended(size)
        if byte != b"\xff":
            raise ImageHeaderError("a JPEG marker (0xFF ...)", f"byte {byte.hex()} at offset {fp.tell() - 1}")
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker:
            raise _ended(size)
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code in (0xD9, 0xDA):
            where = "an end-of-image marker" if code == 0xD9 else "image data (SOS)"
            raise ImageHeaderError("a JPEG frame header (SOF marker) before the image data", f"{where} first")
        raw = fp.read(2)
        if len(raw) < 2:
            raise ImageHeaderError("a JPEG marker segment length", f"the end of the file ({size} bytes; truncated?)")
        length = struct.unpack(">H", raw)[0]
        if length < 2:
            raise ImageHeaderError("a JPEG marker segment length >= 2", f"{length} at offset {fp.tell() - 2}")
        if code in _JPEG_SOF:
            body = fp.read(6)
            if len(body) < 6:
                raise ImageHeaderError("a complete JPEG frame header", f"the end of the file ({size} bytes)")
            _, height, width, components = struct.unpack(">BHHB", body)
            return width, height, components
        fp.seek(length - 2, 1)


def read_image_header(path: str | Path) -> ImageHeader:
    """The header of a JPEG or PNG file (module docstring); :class:`ImageHeaderError` if there is none."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(33)  # PNG: signature (8) + IHDR chunk (4 + 4 + 13 + 4)
        kind = sniff_image_format(head)
        if kind is None:
            raise ImageHeaderError("a JPEG or PNG image", _describe_start(head))
        if kind == "png":
            if len(head) < 33 or head[12:16] != b"IHDR":
                raise ImageHeaderError("a PNG whose first chunk is its IHDR header", "a file without it (truncated?)")
            width, height, depth, color_type = struct.unpack(">IIBB", head[16:26])
            if color_type not in _PNG_TYPES or depth not in _PNG_TYPES[color_type][1]:
                raise ImageHeaderError("a valid PNG bit depth and colour type",
                                       f"{depth} bits, colour type {color_type}")
            channels = _PNG_TYPES[color_type][0]
            fp.seek(max(0, size - len(PNG_IEND)))
            complete = fp.read() == PNG_IEND
        else:
            fp.seek(len(JPEG_SOI))
            width, height, channels = _jpeg_header(fp, size)
            fp.seek(max(0, size - _TAIL_BYTES))
            complete = JPEG_EOI in fp.read()
    if width < 1 or height < 1:
        raise ImageHeaderError("a positive width and height in the header", f"{width}x{height} (W x H)")
    return ImageHeader(kind, int(width), int(height), int(channels), bool(complete))
