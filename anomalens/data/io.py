"""Image files in and out: reading images and defect masks, writing PNGs.

Everything the rest of anomalens sees is normalised here:

* images come back as ``float32`` arrays of shape ``(H, W, 3)``, RGB channel
  order, values in ``[0, 1]`` (grayscale is replicated to three channels,
  alpha is dropped, palette images are expanded);
* masks come back as ``bool`` arrays of shape ``(H, W)``.

Any problem with a file (missing, empty, not an image, truncated, zero-size)
is reported as :class:`ImageReadError`, whose message names the file and the
reason, so that callers can skip bad frames on a production line without
crashing and still tell the operator which file was bad. Bytes already in
memory (an upload) go through the same decoder, :func:`decode_image`.

Pictures go out as PNG through :func:`encode_png` (bytes) and
:func:`write_png` (a file), from ``uint8`` RGB or gray arrays.

Notes on decisions made here:

* Decoding is done from the bytes with ``cv2.imdecode`` (so non-ASCII
  paths work everywhere) with ``IMREAD_UNCHANGED``: bit depth and alpha are
  kept so they can be handled explicitly, and EXIF orientation is *ignored*.
  Pixel data are returned as stored, which keeps them aligned with
  ground-truth masks that were drawn on the stored pixels.
* OpenCV (libjpeg/libpng) happily returns a partially decoded image for a
  truncated JPEG or PNG, padding the missing part with gray. That would be
  scored as an "anomaly" by a model, so the byte structure of JPEG, PNG and
  BMP files is checked for completeness before decoding (JPEG: the marker
  structure is walked until the End-Of-Image marker ``FFD9``; PNG: chunks are
  walked until ``IEND``; BMP: the file must hold all rows of the pixel array).
  Bit flips inside otherwise complete files cannot be detected this way.
* TIFF variants OpenCV cannot decode fall back to ``tifffile``, then to
  ``skimage.io``.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "decode_image",
    "encode_png",
    "is_image_file",
    "read_image",
    "read_mask",
    "to_uint8_rgb",
    "write_png",
]

#: File extensions treated as images (compare with ``suffix.lower()``).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Largest value a 12-bit sample can take; see read_image for why this matters.
_MAX_12BIT = 4095
_MAX_16BIT = 65535


class ImageReadError(Exception):
    """An image or mask file could not be read: ``path`` is the file that failed
    (or the name given to :func:`decode_image`), ``reason`` a short
    human-readable reason without the path.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        # Keep the message on one line whatever the underlying library said.
        self.reason = " ".join(str(reason).split())
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        return f"cannot read image '{self.path}': {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Make the exception survive pickling (e.g. DataLoader worker processes).
        return (type(self), (self.path, self.reason))


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------
# Format sniffing and completeness checks
# --------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return "unknown"


def _jpeg_problem(data: bytes) -> str | None:
    """Walk the JPEG marker structure; return a reason if the file is incomplete.

    Entropy-coded data cannot contain a bare ``FF`` followed by a marker byte
    (``FF`` is stuffed as ``FF00``), so scanning for the next real marker after
    each Start-Of-Scan is exact. Length-delimited segments (APPn with EXIF
    thumbnails, tables...) are skipped by their length, so a thumbnail's own
    ``FFD9`` is never mistaken for the end of the main image.
    """
    n = len(data)
    truncated = "truncated JPEG (data ends before the End-Of-Image marker FFD9)"
    pos = 2  # after SOI
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return truncated
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return truncated
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: complete (anything after it is a trailer)
            return None
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers, no length field
        if pos + 2 > n:
            return truncated
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return f"corrupt JPEG (invalid segment length at byte {pos})"
        pos += length
        if pos > n:
            return truncated
        if marker == 0xDA:  # SOS: skip entropy-coded data up to the next marker
            while True:
                j = data.find(b"\xff", pos)
                if j < 0 or j + 1 >= n:
                    return truncated
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos = j + 2
                elif nxt == 0xFF:
                    pos = j + 1
                else:
                    pos = j
                    break


def _png_problem(data: bytes) -> str | None:
    """Walk PNG chunks; return a reason if the file ends before ``IEND``."""
    n = len(data)
    pos = 8
    while True:
        if pos + 8 > n:
            return "truncated PNG (data ends before the IEND chunk)"
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        if ctype == b"IEND":
            return None
        pos += 12 + length
        if pos > n:
            return f"truncated PNG (chunk {ctype.decode('latin-1')!r} is cut off)"


def _bmp_problem(data: bytes) -> str | None:
    """Check that an uncompressed BMP holds all rows of its pixel array."""
    n = len(data)
    if n < 30:
        return "truncated BMP (header incomplete)"
    offset = int.from_bytes(data[10:14], "little")
    dib_size = int.from_bytes(data[14:18], "little")
    if dib_size < 40 or n < 34:
        return None  # old OS/2 header: leave it to the decoder
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    bpp = int.from_bytes(data[28:30], "little")
    compression = int.from_bytes(data[30:34], "little")
    if compression not in (0, 3, 6):  # RLE / JPEG / PNG payloads: no fixed size
        return None
    stride = ((abs(width) * bpp + 31) // 32) * 4
    needed = offset + stride * abs(height)
    if n < needed:
        return f"truncated BMP ({n} bytes, pixel data needs {needed})"
    return None


_CHECKS = {"jpeg": _jpeg_problem, "png": _png_problem, "bmp": _bmp_problem}


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc


def _decode(data: bytes, name: Path) -> tuple[np.ndarray, bool]:
    """Decode the bytes of an image called ``name``; return ``(array, is_bgr)`` with the stored dtype.

    ``is_bgr`` tells whether a 3/4-channel array is in OpenCV's BGR(A) order.
    """
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    kind = _sniff(data)
    check = _CHECKS.get(kind)
    if check is not None:
        problem = check(data)
        if problem is not None:
            raise ImageReadError(name, problem)

    failures: list[str] = []
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # pragma: no cover - depends on OpenCV build
        arr = None
        failures.append(f"OpenCV: {str(exc).strip().splitlines()[-1]}")
    if arr is not None:
        return arr, True

    if kind == "tiff":
        try:
            import tifffile

            arr = tifffile.imread(_io.BytesIO(data), key=0)
            return np.asarray(arr), False
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a read error
            failures.append(f"tifffile: {exc}")
        try:
            from skimage import io as skio

            arr = skio.imread(_io.BytesIO(data))
            return np.asarray(arr), False
        except Exception as exc:  # noqa: BLE001
            failures.append(f"skimage: {exc}")
        raise ImageReadError(name, "corrupt or unsupported TIFF (" + "; ".join(failures) + ")")

    if kind == "unknown":
        # the name's extension is worth quoting: it is what the sender believed the file to be
        extension = f"; extension {name.suffix!r}" if name.suffix else ""
        raise ImageReadError(name, f"not an image file (content is not PNG, JPEG, BMP or TIFF{extension})")
    detail = f" ({'; '.join(failures)})" if failures else ""
    raise ImageReadError(name, f"corrupt {kind.upper()} file, decoder failed{detail}")


def _to_hwc(arr: np.ndarray, path: Path) -> np.ndarray:
    """Bring a decoded array to ``(H, W)`` or ``(H, W, C)``."""
    # Drop leading singleton axes (e.g. (1, H, W) pages from tifffile).
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] > 4 and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, f"unsupported image array shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ImageReadError(path, f"image has zero size (shape {arr.shape})")
    return arr


def _scale_to_unit(arr: np.ndarray, bit_depth: int | None) -> np.ndarray:
    """Convert any numeric array to float32 in [0, 1]. See read_image."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"unsupported pixel dtype {arr.dtype}")
    if bit_depth is not None:
        scale = float(2**bit_depth - 1)
    elif arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = float(_MAX_12BIT if int(arr.max()) <= _MAX_12BIT else _MAX_16BIT)
    else:
        scale = float(np.iinfo(arr.dtype).max)
    out = arr.astype(np.float32) / np.float32(scale)
    return np.clip(out, 0.0, 1.0)


def decode_image(data: bytes, name: str | os.PathLike[str] = "<bytes>", *, bit_depth: int | None = None) -> np.ndarray:
    """Decode image file bytes as float32 RGB, shape ``(H, W, 3)``, values in ``[0, 1]``.

    Accepts PNG, JPEG, BMP and TIFF data: 8- or 16-bit, grayscale (replicated
    to 3 channels), RGB, RGBA (alpha dropped) and palette images. The format
    is recognised from the content, never from ``name``, which only labels the
    data in an :class:`ImageReadError` (its path; a file name's extension is
    quoted when the content is not an image at all).

    Scaling of integer pixels:

    * 8-bit: divided by 255.
    * 16-bit: industrial cameras usually deliver 10- or 12-bit data and store
      it LSB-aligned in 16-bit PNG/TIFF containers, so the largest value in
      the file is at most 4095 rather than 65535. Dividing such data by 65535
      would give nearly black images (max ~0.06). Therefore, if the largest
      value in the image is <= 4095 the image is treated as 12-bit and divided
      by 4095; otherwise it is divided by 65535. (10-bit data thus end up in
      ``[0, 0.25]``; a genuinely 16-bit but very dark frame is brightened.)
      The decision is made per image, so pass ``bit_depth`` (e.g. ``12``) to
      force one scale for every frame of a camera: integer pixels are then
      divided by ``2**bit_depth - 1`` and clipped.
    * other integer types: divided by the dtype's maximum.
    * float images: clipped to ``[0, 1]`` (NaN -> 0).

    Empty, truncated or corrupt data, data that are not an image, and images
    with zero width or height raise :class:`ImageReadError`. Tiny images
    (e.g. 1x1) are returned; the caller decides what to do with them.
    """
    if bit_depth is not None and not 1 <= int(bit_depth) <= 32:
        raise ValueError(f"bit_depth must be in 1..32, got {bit_depth}")
    label = Path(name)
    arr, is_bgr = _decode(data, label)
    arr = _to_hwc(arr, label)

    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels == 1:
            arr = arr[:, :, 0]
        elif channels == 2:  # gray + alpha
            arr = arr[:, :, 0]
        elif channels in (3, 4):
            arr = arr[:, :, :3]
            if is_bgr:
                arr = arr[:, :, ::-1]
        else:
            raise ImageReadError(label, f"unsupported number of channels ({channels})")
    try:
        out = _scale_to_unit(arr, bit_depth)
    except TypeError as exc:
        raise ImageReadError(label, str(exc)) from exc
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return np.ascontiguousarray(out, dtype=np.float32)


def read_image(path: str | os.PathLike[str], *, bit_depth: int | None = None) -> np.ndarray:
    """Read an image file as :func:`decode_image` decodes its bytes.

    A missing file or a directory raises :class:`ImageReadError` as well.
    """
    p = Path(path)
    return decode_image(_read_bytes(p), p, bit_depth=bit_depth)


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a defect mask as a boolean ``(H, W)`` array (any nonzero pixel = defect).

    For multi-channel masks a pixel is a defect when any colour channel is
    nonzero (an alpha channel is ignored). If ``shape`` ``(H, W)`` is given and
    differs from the mask's size, the mask is resized with nearest-neighbour
    interpolation. Bad files raise :class:`ImageReadError` as for
    :func:`read_image`.

    Masks should be stored losslessly (PNG/BMP/TIFF): JPEG compression noise
    makes near-black pixels nonzero.
    """
    p = Path(path)
    arr, _ = _decode(_read_bytes(p), p)
    arr = _to_hwc(arr, p)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr, nan=0.0)
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels == 2:  # gray + alpha
            arr = arr[:, :, :1]
        elif channels == 4:  # colour + alpha
            arr = arr[:, :, :3]
        mask = np.any(arr != 0, axis=2)
    else:
        mask = arr != 0
    if shape is not None:
        h, w = int(shape[0]), int(shape[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"shape must be positive (H, W), got {shape}")
        if mask.shape != (h, w):
            interp = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=interp) > 0
    return np.ascontiguousarray(mask, dtype=bool)


def to_uint8_rgb(image_float: np.ndarray) -> np.ndarray:
    """Convert a float image in ``[0, 1]`` to ``uint8`` RGB ``(H, W, 3)`` for writing.

    Values are clipped to ``[0, 1]`` (NaN -> 0) and rounded. ``(H, W)`` and
    ``(H, W, 1)`` inputs are replicated to 3 channels and a 4th (alpha)
    channel is dropped. ``uint8`` input is passed through (as a copy, with the
    same channel handling); :func:`encode_png` and :func:`write_png` take the
    result as it is.
    """
    arr = np.asarray(image_float)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr.copy()
    else:
        f = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        out = np.rint(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return np.ascontiguousarray(out)


def encode_png(image: np.ndarray) -> bytes:
    """PNG file bytes of a ``uint8`` image: RGB ``(H, W, 3)`` or gray ``(H, W)``.

    The one PNG encoder of anomalens, so that every picture it writes or
    sends has the same channel order. Convert float images with
    :func:`to_uint8_rgb` first.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) image, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - encoding a uint8 array does not fail
        raise ValueError("could not encode the image as PNG")
    return encoded.tobytes()


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write :func:`encode_png` of ``image`` to ``path`` (folders created); returns the path.

    The bytes are written by Python rather than ``cv2.imwrite``, so non-ASCII
    paths work everywhere.
    """
    out = Path(path)
    data = encode_png(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
