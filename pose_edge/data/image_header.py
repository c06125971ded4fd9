"""Image sizes from file headers, without decoding pixels: a data set's images are checked in one fast pass.

`read_header(path)` -> ImageHeader(width, height, format, orientation, complete) for JPEG and PNG (COCO and the
built-in set are JPEG); other formats are decoded with OpenCV, the only way to learn their size here.

    width, height   the size of the image as the loader will see it: OpenCV applies the EXIF orientation of a JPEG
                    when it decodes (orientations 5-8 turn it by 90 degrees), so those swap the stored size
    orientation     the EXIF orientation tag (1: as stored; 1 when there is none)
    complete        the file ends with its end marker (JPEG EOI, PNG IEND). OpenCV decodes a truncated JPEG without
                    an error, filling the missing rows with grey, so a truncated file must be caught here.

DataError (one line, naming the file) for a missing, unreadable or empty file, or one that is not an image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pose_edge.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
TAIL_BYTES = 1024  # where the end marker is looked for first; a full scan only when it is not there


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str  # "jpeg", "png" or "other"
    orientation: int = 1
    complete: bool = True


class _Bad(Exception):
    """A header that is not what its format requires; becomes a DataError naming the file."""


def read_header(path: str | Path) -> ImageHeader:
    """The header of the image at `path` (see the module docstring)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start = f.read(8)
            if not start:
                raise DataError(f"{path}: the image file is empty")
            f.seek(0)
            if start[:2] == b"\xff\xd8":
                return _jpeg(f)
            if start == _PNG_SIGNATURE:
                return _png(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    except (_Bad, struct.error) as e:
        raise DataError(f"{path}: not a readable image ({e or 'header cut short'})") from None
    return _decoded(path)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Bad("the file ends inside its header")
    return data


def _ends_with_marker(f: BinaryIO, marker: bytes, scan_from: int) -> bool:
    """Whether `marker` occurs in the last TAIL_BYTES of the file, or (slow path, for files with trailing data)
    anywhere after `scan_from`."""
    size = f.seek(0, 2)
    f.seek(max(scan_from, size - TAIL_BYTES))
    if marker in f.read():
        return True
    f.seek(scan_from)
    carry = b""
    while chunk := f.read(1 << 20):
        if marker in carry + chunk:
            return True
        carry = chunk[-len(marker):]
    return False


def _jpeg(f: BinaryIO) -> ImageHeader:
    _read(f, 2)  # SOI
    size = orientation = None
    while True:
        byte = _read(f, 1)
        if byte != b"\xff":
            raise _Bad("JPEG marker expected")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes
            marker = _read(f, 1)[0]
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise _Bad("JPEG ends before its image data")
        length = struct.unpack(">H", _read(f, 2))[0]
        if length < 2:
            raise _Bad("JPEG segment of negative length")
        if marker == 0xDA:  # start of scan: the header is over
            if size is None:
                raise _Bad("JPEG without a frame header")
            scan_from = f.tell()
            break
        payload = _read(f, length - 2)
        if marker in _JPEG_SOF:
            if len(payload) < 5:
                raise _Bad("JPEG frame header cut short")
            height, width = struct.unpack(">HH", payload[1:5])
            size = (width, height)
        elif marker == 0xE1 and payload[:6] == b"Exif\x00\x00" and orientation is None:
            orientation = _exif_orientation(payload[6:])
    width, height = size
    if width == 0 or height == 0:
        raise _Bad(f"JPEG frame header gives a size of {width}x{height}")
    orientation = orientation or 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    complete = _ends_with_marker(f, b"\xff\xd9", scan_from)
    return ImageHeader(width, height, "jpeg", orientation, complete)


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 of an EXIF TIFF block, or None (absent or malformed: OpenCV then applies
    nothing either)."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack(order + "I", tiff[4:8])[0]
        count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                value = struct.unpack(order + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else None
    except (KeyError, struct.error):
        return None
    return None


def truncated_jpeg(data: bytes) -> bool:
    """Whether in-memory JPEG bytes lack the end marker after their last scan (OpenCV would decode them with grey
    rows); False for anything that is not a JPEG. An EXIF thumbnail's own end marker lies before the main image's
    scan, so it does not count."""
    if data[:2] != b"\xff\xd8":
        return False
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def _png(f: BinaryIO) -> ImageHeader:
    _read(f, 8)
    length, kind = struct.unpack(">I4s", _read(f, 8))
    if kind != b"IHDR" or length != 13:
        raise _Bad("PNG without its IHDR header")
    width, height = struct.unpack(">II", _read(f, 8))
    if width == 0 or height == 0:
        raise _Bad(f"PNG header gives a size of {width}x{height}")
    complete = _ends_with_marker(f, _PNG_IEND, 33)
    return ImageHeader(width, height, "png", 1, complete)


def _decoded(path: Path) -> ImageHeader:
    """Formats without a header reader here: decode once with OpenCV."""
    from pose_edge.data.coco import read_image

    image = read_image(path)
    return ImageHeader(image.shape[1], image.shape[0], "other")
