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
* Only PNG, JPEG, BMP and TIFF content is decoded, although OpenCV would
  decode more (GIF, WebP, PNM, HDR...): each accepted format's structure is
  checked for completeness before decoding (see :mod:`anomalens.data.formats`),
  because OpenCV (libjpeg/libpng) happily returns a partially decoded image
  for a truncated file, padding the missing part with gray, which a model
  would score as an "anomaly".
* The same check reads the header's width, height and channels, so a
  ``max_pixels`` limit refuses a decompression bomb (a small file that
  decodes to gigabytes) before any memory is spent on its pixels.
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

from anomalens.data.formats import FormatError, ImageHeader, foreign_format, image_header

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

# Decoded bytes allowed per pixel of the pixel limit: four channels of four bytes (a float32 RGBA TIFF).
_MAX_DECODED_BYTES_PER_PIXEL = 16


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


def _examine(data: bytes, name: Path, max_pixels: int | None) -> ImageHeader:
    """The header of an accepted, complete image that is not too large to decode; else :class:`ImageReadError`."""
    if not data:
        raise ImageReadError(name, "file is empty (0 bytes)")
    try:
        header = image_header(data)
    except FormatError as exc:
        raise ImageReadError(name, str(exc)) from exc
    if header is None:
        foreign = foreign_format(data)
        if foreign is not None:
            raise ImageReadError(name, f"{foreign} content is not accepted (only PNG, JPEG, BMP or TIFF)")
        # the name's extension is worth quoting: it is what the sender believed the file to be
        extension = f"; extension {name.suffix!r}" if name.suffix else ""
        raise ImageReadError(name, f"not an image file (content is not PNG, JPEG, BMP or TIFF{extension})")
    if header.width == 0 or header.height == 0:
        raise ImageReadError(name, f"image has zero size ({header.width}x{header.height} pixels)")
    if max_pixels is not None:
        _check_size(header, max_pixels, name)
    return header


def _check_size(header: ImageHeader, max_pixels: int, name: Path) -> None:
    """Refuse an image whose decoding would take more pixels, or more memory, than ``max_pixels`` allows."""
    if header.pixels > max_pixels:
        raise ImageReadError(
            name,
            f"the image is {header.width}x{header.height} pixels ({header.pixels}); "
            f"at most {max_pixels} pixels are allowed",
        )
    # many samples per pixel (a TIFF may declare hundreds) make a large array of few pixels
    limit = max_pixels * _MAX_DECODED_BYTES_PER_PIXEL
    if header.decoded_bytes > limit:
        raise ImageReadError(
            name,
            f"decoding would take {header.decoded_bytes} bytes ({header.width}x{header.height} pixels of "
            f"{header.channels} samples); at most {limit} bytes are allowed",
        )


def _decode(data: bytes, name: Path, max_pixels: int | None = None) -> tuple[np.ndarray, bool]:
    """Decode the bytes of an image called ``name``; return ``(array, is_bgr)`` with the stored dtype.

    ``is_bgr`` tells whether a 3/4-channel array is in OpenCV's BGR(A) order. The header is checked
    (:func:`_examine`) before anything is decoded.
    """
    header = _examine(data, name, max_pixels)
    failures: list[str] = []
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # pragma: no cover - depends on OpenCV build
        arr = None
        failures.append(f"OpenCV: {str(exc).strip().splitlines()[-1]}")
    if arr is not None:
        return arr, True

    if header.format == "tiff":
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

    detail = f" ({'; '.join(failures)})" if failures else ""
    raise ImageReadError(name, f"corrupt {header.format.upper()} file, decoder failed{detail}")


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


def decode_image(
    data: bytes,
    name: str | os.PathLike[str] = "<bytes>",
    *,
    bit_depth: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
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

    Empty, truncated or corrupt data, data that are not an image (or of
    another image format), and images with zero width or height raise
    :class:`ImageReadError`. Tiny images (e.g. 1x1) are returned; the caller
    decides what to do with them.

    ``max_pixels`` (default: no limit) refuses, with :class:`ImageReadError`
    and before anything is decoded, an image whose header declares more
    pixels, or a decoded array larger than 16 bytes per allowed pixel (four
    float32 channels). Pass it for data from untrusted sources.
    """
    if bit_depth is not None and not 1 <= int(bit_depth) <= 32:
        raise ValueError(f"bit_depth must be in 1..32, got {bit_depth}")
    label = Path(name)
    arr, is_bgr = _decode(data, label, max_pixels)
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


def read_image(
    path: str | os.PathLike[str], *, bit_depth: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as :func:`decode_image` decodes its bytes.

    A missing file or a directory raises :class:`ImageReadError` as well.
    """
    p = Path(path)
    return decode_image(_read_bytes(p), p, bit_depth=bit_depth, max_pixels=max_pixels)


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
