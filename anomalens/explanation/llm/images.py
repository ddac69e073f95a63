"""PNG data URLs for vision models: the image|mask composite and a reference image."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from anomalens.data import encode_png, to_uint8_rgb

MAX_SIDE = 512  # long side of each panel sent to the model
OVERLAY = np.array([1.0, 0.1, 0.1], np.float32)


def _rgb(image: np.ndarray) -> np.ndarray:
    """float32 HxWx3 in [0, 1] from gray / RGB, float in [0, 1] or uint8."""
    data = np.asarray(image)
    data = data.astype(np.float32) / 255.0 if data.dtype == np.uint8 else data.astype(np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return np.clip(data[..., :3], 0.0, 1.0)


def _fit(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def data_url(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an RGB image (see :func:`_rgb` for accepted inputs)."""
    png = encode_png(to_uint8_rgb(_rgb(image)))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def composite(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image (left) and the image with the mask tinted red and outlined (right), side by side."""
    left = _rgb(image)
    right = left.copy()
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != left.shape[:2]:
            mask = cv2.resize(
                mask.astype(np.uint8), (left.shape[1], left.shape[0]), interpolation=cv2.INTER_NEAREST
            ).astype(bool)
        right[mask] = 0.5 * right[mask] + 0.5 * OVERLAY
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(right, contours, -1, tuple(float(v) for v in OVERLAY), 1)
    gap = np.ones((left.shape[0], max(2, left.shape[1] // 50), 3), np.float32)
    return _fit(np.concatenate([left, gap, right], axis=1), 2 * MAX_SIDE)


def vision_images(image: np.ndarray | None, prediction: Any = None, reference: np.ndarray | None = None) -> list[str]:
    """[composite, reference] as data URLs (the composite only with an image; its mask from ``prediction``)."""
    urls: list[str] = []
    if image is not None:
        mask = getattr(prediction, "mask", None) if prediction is not None else None
        urls.append(data_url(composite(image, mask)))
    if reference is not None:
        urls.append(data_url(_fit(_rgb(reference))))
    return urls
