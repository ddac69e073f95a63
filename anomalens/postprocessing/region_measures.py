"""Measures of one region that both the findings and the defect-type embedding use: gray level, elongation
and the ring of surroundings a region is compared with.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: RGB weights of the gray level (ITU-R BT.601 luma).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gray_level(rgb: np.ndarray) -> np.ndarray:
    """Gray level ``(H, W)`` of a float RGB image ``(H, W, 3)``."""
    return rgb @ LUMA


def elongation(coords: np.ndarray) -> float:
    """Major / minor axis ratio of the pixels at ``coords`` (``(N, 2)`` rows and columns), at least 1.

    The axes come from the pixels' second moments plus the 1/12 variance of a unit pixel, so that a
    one-pixel-thin line still has a finite ratio and a single pixel has ratio 1.
    """
    points = np.asarray(coords, dtype=np.float64)
    cov = np.cov(points.T, bias=True) if len(points) > 1 else np.zeros((2, 2))
    small, big = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    return math.sqrt((big + 1 / 12) / (small + 1 / 12))


def surround_ring(region: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """The surroundings of ``region`` (bool ``(H, W)``): pixels within a disc of radius half the square root of
    its area (at least 3 px) around it, except those in ``exclude`` (default: the region itself)."""
    radius = max(3, int(round(0.5 * math.sqrt(int(region.sum())))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    outside = region if exclude is None else exclude
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool) & ~outside
