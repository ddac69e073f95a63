"""Helpers shared by the anomaly generators: input checks, gray handling, "what really changed" masks.

Conventions used by every generator:

* images are float32 ``(H, W, 3)`` RGB in ``[0, 1]`` (as :func:`anomalens.data.read_image` returns them);
* a pixel counts as *changed* when any channel moved by more than :data:`CHANGE_THRESHOLD`
  (0.03, about 8 grey levels of an 8-bit image);
* every pixel outside the returned mask is bit-identical to the input image, so a detector calibrated on
  the simulated set never sees "normal" pixels that were in fact altered.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import ndimage

#: Smallest image side (pixels) a simulated anomaly can be placed in.
MIN_SIDE = 16
#: A pixel is "changed" when some channel moved by more than this (in [0, 1] units).
CHANGE_THRESHOLD = 0.03
#: A simulated anomaly must change at least this many pixels; fewer is treated as a failed draw.
MIN_CHANGED_PIXELS = 20
#: Draws per generator before it gives up (and the dispatcher falls back to another kind).
MAX_ATTEMPTS = 8


def as_image(array: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate and normalise an input image to a fresh float32 ``(H, W, 3)`` array in ``[0, 1]``.

    Accepts ``(H, W)``, ``(H, W, 1)`` and ``(H, W, 3)``; ``uint8`` is divided by 255, floats are clipped
    (NaN -> 0). Raises ``ValueError`` for other shapes and for images smaller than :data:`MIN_SIDE`.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{what} must be an (H, W, 3) RGB array, got shape {tuple(np.shape(array))}")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        out = np.clip(out, 0.0, 1.0)
    else:
        raise ValueError(f"{what} has unsupported dtype {arr.dtype}")
    height, width = out.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"{what} is {height}x{width} pixels (height x width); simulating an anomaly needs at least "
            f"{MIN_SIDE} pixels in each side"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def is_gray(image: np.ndarray) -> bool:
    """True when all three channels are equal everywhere (a grey image stored as RGB)."""
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]))


def keep_gray(original: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Make ``result`` grey again (equal channels) when ``original`` is grey; untouched pixels stay identical."""
    if not is_gray(original):
        return result
    touched = np.any(result != original, axis=2)
    g = np.where(touched, result.mean(axis=2, dtype=np.float32), original[:, :, 0])
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2), dtype=np.float32)


def change_map(original: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Largest absolute change over the channels, ``(H, W)`` float32."""
    return np.abs(result - original).max(axis=2)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_size`` pixels."""
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def changed_mask(original: np.ndarray, result: np.ndarray, region: np.ndarray, grow: int = 4) -> np.ndarray:
    """The defect mask of a soft (blended) anomaly: the pixels that actually changed.

    ``|result - original| > CHANGE_THRESHOLD`` in any channel, restricted to ``region`` dilated by ``grow``
    pixels, with specks under 5 pixels removed, then a 3x3 closing and small holes filled so the mask is
    one clean shape rather than salt-and-pepper.
    """
    changed = change_map(original, result) > CHANGE_THRESHOLD
    if grow > 0:
        region = cv2.dilate(region.astype(np.uint8), _disk(grow)) > 0
    mask = remove_small(changed & region, 5)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, _disk(1)) > 0
    holes = ndimage.binary_fill_holes(mask) & ~mask
    mask |= remove_small(holes, 10) ^ holes  # fill holes smaller than 10 px only
    return mask


def visible_count(original: np.ndarray, result: np.ndarray, mask: np.ndarray) -> int:
    """Number of pixels inside ``mask`` that changed by more than :data:`CHANGE_THRESHOLD`."""
    return int((mask & (change_map(original, result) > CHANGE_THRESHOLD)).sum())


def revert_outside(original: np.ndarray, result: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of ``result`` whose pixels outside ``mask`` are the original ones (bit-identical)."""
    return np.ascontiguousarray(np.where(mask[:, :, None], result, original), dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def json_safe(value: Any) -> Any:
    """Plain Python types only (numpy scalars/arrays, tuples -> lists), for ``params``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    return value


def place_uniform(rng: np.random.Generator, size: int, extent: int, margin: int = 0) -> int:
    """Random start position of a segment of ``size`` inside ``extent`` keeping ``margin`` at both ends."""
    hi = extent - size - margin
    lo = margin
    if hi < lo:
        return max(0, (extent - size) // 2)
    return int(rng.integers(lo, hi + 1))
