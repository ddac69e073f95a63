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


def within_distance(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of a pixel of ``mask`` (bool ``(H, W)``): the mask dilated by a
    disc of that radius. A distance transform costs the same whatever the radius, where a dilation by a disc
    costs its area per pixel."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # squared distances are whole numbers: a bound halfway to the next one keeps float rounding off the edge
    return distance <= math.sqrt(radius * radius + 0.5)


def ring_radius(area_pixels: int) -> int:
    """The width of the ring of surroundings of a region of this area (see :func:`surround_ring`)."""
    return max(3, int(round(0.5 * math.sqrt(area_pixels))))


def surround_ring(region: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """The surroundings of ``region`` (bool ``(H, W)``): pixels within a disc of radius half the square root of
    its area (at least 3 px) around it, except those in ``exclude`` (default: the region itself). Worked out on
    the region's box grown by the radius, the only place the ring can be."""
    ring = np.zeros(region.shape, dtype=bool)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return ring
    radius = ring_radius(int(np.count_nonzero(region)))
    window = (
        slice(max(0, rows[0] - radius), rows[-1] + radius + 1),
        slice(max(0, cols[0] - radius), cols[-1] + radius + 1),
    )
    outside = region if exclude is None else exclude
    ring[window] = within_distance(region[window], radius) & ~outside[window]
    return ring
