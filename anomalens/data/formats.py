"""What the bytes of an image file say before any pixel is decoded: its format, size and completeness.

Only PNG, JPEG, BMP and TIFF are accepted. For each of them :func:`image_header` walks the file's structure
(PNG chunks with their CRCs, JPEG markers, the BMP headers, the first TIFF directory) and returns an
:class:`ImageHeader` with the image's width, height, channels and bytes per sample, so that a caller can
refuse an image too large to decode (a "decompression bomb": a few hundred kilobytes of PNG can hold a
30000x30000 image) without decoding it. The same walk finds files that end too early: OpenCV would decode
their missing part as gray, which a detector would score as a defect. Bit flips inside otherwise complete
JPEG, BMP or TIFF files cannot be found this way.

Other formats OpenCV would decode (GIF, WebP, PNM, HDR...) are named by :func:`foreign_format`, so that the
refusal can say what was sent.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

__all__ = ["FormatError", "ImageHeader", "foreign_format", "image_header"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# PNG colour type -> channels of the array OpenCV decodes (palette and gray+alpha are expanded; a palette with
# transparency becomes 4 channels, so 4 is the bound for a palette).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}

# JPEG Start-Of-Frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FormatError(ValueError):
    """The bytes are of an accepted format but truncated or corrupt; the message is the reason."""


@dataclass(frozen=True)
class ImageHeader:
    """Size of an image as its file's header declares it.

    ``channels`` and ``bytes_per_sample`` describe the array the decoder will return (an upper bound where
    the decoder may return fewer channels).
    """

    format: str  # "png", "jpeg", "bmp" or "tiff"
    width: int
    height: int
    channels: int
    bytes_per_sample: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Memory the decoded array will take."""
        return self.pixels * self.channels * self.bytes_per_sample


def foreign_format(data: bytes) -> str | None:
    """The name of an image format that is recognised but not accepted (GIF, WebP, ...), else ``None``."""
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "Radiance HDR"
    if re.match(rb"P[1-7]\s", data[:3]):
        return "PNM (PBM/PGM/PPM/PAM)"
    if re.match(rb"P[Ff]\s", data[:3]):
        return "PFM"
    if data.startswith(b"v/1\x01"):
        return "OpenEXR"
    if data.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if data.startswith(b"\x59\xa6\x6a\x95"):
        return "Sun raster"
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return None


def image_header(data: bytes) -> ImageHeader | None:
    """The header of PNG, JPEG, BMP or TIFF bytes, after checking that the file is complete.

    Returns ``None`` when the content is none of these formats; raises :class:`FormatError` when it is one
    of them but truncated or corrupt. Nothing is decompressed.
    """
    if data.startswith(_PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(b"BM"):
        return _bmp_header(data)
    if data[:4] in _TIFF_SIGNATURES:
        return _tiff_header(data)
    return None


def _png_header(data: bytes) -> ImageHeader:
    """IHDR's fields, after walking every chunk (length and CRC) up to ``IEND``."""
    n = len(data)
    pos = len(_PNG_SIGNATURE)
    header: ImageHeader | None = None
    while True:
        if pos + 8 > n:
            raise FormatError("truncated PNG (data ends before the IEND chunk)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        name = kind.decode("latin-1")
        end = pos + 12 + length
        if end > n:
            raise FormatError(f"truncated PNG (chunk {name!r} is cut off)")
        if zlib.crc32(data[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            raise FormatError(f"corrupt PNG (CRC mismatch in chunk {name!r})")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise FormatError("corrupt PNG (the first chunk is not a 13-byte IHDR)")
            width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[pos + 8 : pos + 18])
            if colour_type not in _PNG_CHANNELS:
                raise FormatError(f"corrupt PNG (unknown colour type {colour_type})")
            header = ImageHeader("png", width, height, _PNG_CHANNELS[colour_type], 2 if bit_depth == 16 else 1)
        if kind == b"IEND":
            return header
        pos = end


def _jpeg_header(data: bytes) -> ImageHeader:
    """The Start-Of-Frame's fields, after walking the marker structure up to End-Of-Image (``FFD9``).

    Entropy-coded data cannot contain a bare ``FF`` followed by a marker byte (``FF`` is stuffed as
    ``FF00``), so scanning for the next real marker after each Start-Of-Scan is exact. Length-delimited
    segments (APPn with EXIF thumbnails, tables...) are skipped by their length, so a thumbnail's own markers
    are never mistaken for the main image's.
    """
    n = len(data)
    truncated = FormatError("truncated JPEG (data ends before the End-Of-Image marker FFD9)")
    header: ImageHeader | None = None
    pos = 2  # after SOI
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            raise truncated
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise truncated
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: complete (anything after it is a trailer)
            if header is None:
                raise FormatError("corrupt JPEG (no Start-Of-Frame marker)")
            return header
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers, no length field
        if pos + 2 > n:
            raise truncated
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise FormatError(f"corrupt JPEG (invalid segment length at byte {pos})")
        if pos + length > n:
            raise truncated
        if marker in _JPEG_SOF and header is None:
            header = _jpeg_frame(data[pos + 2 : pos + length])
        pos += length
        if marker == 0xDA:  # SOS: skip entropy-coded data up to the next marker
            pos = _jpeg_scan_end(data, pos)
            if pos < 0:
                raise truncated


def _jpeg_frame(segment: bytes) -> ImageHeader:
    if len(segment) < 6:
        raise FormatError("corrupt JPEG (Start-Of-Frame segment too short)")
    precision, height, width, components = struct.unpack(">BHHB", segment[:6])
    if height == 0:  # the height would come later in a DNL marker, which the decoder does not support
        raise FormatError("unsupported JPEG (the height is not in the frame header)")
    return ImageHeader("jpeg", width, height, components, 2 if precision > 8 else 1)


def _jpeg_scan_end(data: bytes, pos: int) -> int:
    """Position of the first marker after the entropy-coded data that start at ``pos``; -1 if none."""
    n = len(data)
    while True:
        j = data.find(b"\xff", pos)
        if j < 0 or j + 1 >= n:
            return -1
        following = data[j + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos = j + 2
        elif following == 0xFF:
            pos = j + 1
        else:
            return j


def _bmp_header(data: bytes) -> ImageHeader:
    """The DIB header's fields; an uncompressed BMP must also hold every row of its pixel array."""
    n = len(data)
    if n < 26:
        raise FormatError("truncated BMP (header incomplete)")
    offset = int.from_bytes(data[10:14], "little")
    dib_size = int.from_bytes(data[14:18], "little")
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes, always uncompressed
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    else:
        if dib_size < 40:
            raise FormatError(f"unsupported BMP (DIB header of {dib_size} bytes)")
        if n < 34:
            raise FormatError("truncated BMP (header incomplete)")
        width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
        width, height = abs(width), abs(height)  # a negative height stores the rows top-down
    # Palette and 16/24-bit images decode to 3 channels (gray palettes to 1); 32-bit ones may keep alpha.
    header = ImageHeader("bmp", width, height, 4 if bpp == 32 else 3, 1)
    if compression in (0, 3, 6):  # uncompressed (bit fields): a fixed size; RLE / JPEG / PNG payloads vary
        needed = offset + ((width * bpp + 31) // 32) * 4 * height
        if n < needed:
            raise FormatError(f"truncated BMP ({n} bytes, pixel data needs {needed})")
    return header


def _tiff_header(data: bytes) -> ImageHeader:
    """The first directory's fields (read by tifffile, no pixel decoded); its strips or tiles must lie in the data."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            width, height, depth = page.imagewidth, page.imagelength, page.imagedepth
            channels, bits = page.samplesperpixel, page.bitspersample
            segments = list(zip(page.dataoffsets, page.databytecounts))
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt directory
        # a writer may put the directory after the pixels, so a cut-off file can lose it
        raise FormatError(f"truncated or corrupt TIFF (first directory unreadable: {exc!r})") from exc
    for index, (offset, count) in enumerate(segments):
        if count and offset + count > len(data):  # an empty segment has no bytes to miss
            raise FormatError(f"truncated TIFF (strip or tile {index} ends at byte {offset + count} of {len(data)})")
    # A volume (SGI image depth) is decoded whole: its slices count as rows.
    return ImageHeader("tiff", width, height * max(depth, 1), channels, max(1, -(-bits // 8)))
