"""Valid PNG files of any size, all zeros, written without ever holding their pixels: decompression bombs.

A zero row compresses about a thousandfold, so a 30000x30000 gray PNG is under a megabyte. Compressing its
900 MB of zeros would still take seconds, so the deflate stream is assembled from one compressed block of
zeros, repeated: each block ends with a full flush, which byte-aligns it and resets the compressor, so that
every block of the same input compresses to the same bytes.
"""

from __future__ import annotations

import struct
import zlib

_BLOCK = 1 << 20  # bytes of zeros per repeated deflate block
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (gray, RGB)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _deflated_zeros(n: int) -> bytes:
    """Raw deflate of ``n`` zero bytes ending with a full flush (not final, byte-aligned)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(n)) + compressor.flush(zlib.Z_FULL_FLUSH)


def _zlib_zeros(total: int) -> bytes:
    """A zlib stream of ``total`` zero bytes."""
    full, rest = divmod(total, _BLOCK)
    body = _deflated_zeros(_BLOCK) * full + (_deflated_zeros(rest) if rest else b"")
    final_empty_block = b"\x01\x00\x00\xff\xff"  # BFINAL stored block of length 0
    adler = ((total % 65521) << 16) | 1  # Adler-32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + body + final_empty_block + struct.pack(">I", adler)


def zero_png(width: int, height: int, channels: int = 1) -> bytes:
    """An 8-bit gray (``channels=1``) or RGB (``channels=3``) PNG of ``width`` x ``height`` zeros."""
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    pixels = _zlib_zeros(height * (width * channels + 1))  # each row: filter byte 0, then its samples
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")
