"""Random defect shapes as boolean masks of a given box size.

Every function returns a ``bool`` array of shape ``(height, width)`` that is never empty and whose shape
stays inside the box (nothing is cut off at the box edge, except thick scratches touching it):

* :func:`ellipse_mask` - a rotated ellipse that fits the box;
* :func:`polygon_mask` - a random star-shaped polygon (5-12 vertices, irregular radii);
* :func:`blob_mask` - a smoothed random blob (thresholded blurred noise under a soft elliptic window);
* :func:`scratch_mask` - a thin curved line (cubic Bezier, 1-3 px thick) crossing the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["SHAPES", "blob_mask", "ellipse_mask", "polygon_mask", "random_shape", "scratch_mask"]

#: Shape names accepted by :func:`random_shape`.
SHAPES: tuple[str, ...] = ("ellipse", "polygon", "blob", "scratch")


def _check_box(height: int, width: int) -> tuple[int, int]:
    height, width = int(height), int(width)
    if height < 3 or width < 3:
        raise ValueError(f"shape box must be at least 3x3 pixels, got {height}x{width}")
    return height, width


def _ensure_nonempty(mask: np.ndarray) -> np.ndarray:
    if not mask.any():  # degenerate draw: a small centred disc
        h, w = mask.shape
        canvas = np.zeros((h, w), np.uint8)
        cv2.circle(canvas, (w // 2, h // 2), max(1, min(h, w) // 4), 1, thickness=-1)
        mask = canvas > 0
    return mask


def ellipse_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A filled ellipse with random axes ratio and angle, scaled so that it fits inside the box."""
    height, width = _check_box(height, width)
    angle = float(rng.uniform(0.0, 180.0))
    a = float(rng.uniform(0.6, 1.0))  # relative semi-axes, before fitting
    b = float(rng.uniform(0.35, 1.0)) * a
    t = np.deg2rad(angle)
    half_w = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
    half_h = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
    scale = min((width - 1) / 2.0 / half_w, (height - 1) / 2.0 / half_h)
    canvas = np.zeros((height, width), np.uint8)
    center = (int(round((width - 1) / 2.0)), int(round((height - 1) / 2.0)))
    axes = (max(1, int(a * scale)), max(1, int(b * scale)))
    cv2.ellipse(canvas, center, axes, angle, 0, 360, 1, thickness=-1)
    return _ensure_nonempty(canvas.astype(bool))


def polygon_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random star-shaped polygon: 5-12 vertices at jittered angles with radii in [0.45, 1] of the box."""
    height, width = _check_box(height, width)
    n = int(rng.integers(5, 13))
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    # spread the angles a little so that the polygon does not collapse into a sliver
    angles = 0.5 * angles + 0.5 * (np.arange(n) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi))
    radii = rng.uniform(0.45, 1.0, n)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    xs = cx + radii * np.cos(angles) * (width - 1) / 2.0
    ys = cy + radii * np.sin(angles) * (height - 1) / 2.0
    points = np.stack([np.rint(xs), np.rint(ys)], axis=1).astype(np.int32)
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [points], 1)
    return _ensure_nonempty(canvas.astype(bool))


def blob_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth irregular blob: blurred noise under an elliptic window, thresholded, largest part, no holes.

    The blob covers roughly 30-60 % of the box.
    """
    height, width = _check_box(height, width)
    noise = rng.standard_normal((height, width)).astype(np.float32)
    sigma = max(1.0, min(height, width) / 6.0)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    noise /= max(float(noise.std()), 1e-6)
    y = (np.arange(height, dtype=np.float32) - (height - 1) / 2.0) / max((height - 1) / 2.0, 1.0)
    x = (np.arange(width, dtype=np.float32) - (width - 1) / 2.0) / max((width - 1) / 2.0, 1.0)
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    field = 0.6 * noise + 2.5 * (1.0 - r2)  # high in the middle, falls off towards the box edge
    field[r2 >= 1.0] = -np.inf
    coverage = float(rng.uniform(0.3, 0.6))
    level = np.quantile(field[np.isfinite(field)], 1.0 - coverage / (np.pi / 4))
    mask = field > level
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    return _ensure_nonempty(np.ascontiguousarray(mask, dtype=bool))


def scratch_mask(height: int, width: int, rng: np.random.Generator, thickness: int | None = None) -> np.ndarray:
    """A thin curved scratch: a cubic Bezier curve between two opposite sides of the box.

    ``thickness`` (pixels) is drawn from 1-3 unless given.
    """
    height, width = _check_box(height, width)
    if thickness is None:
        thickness = int(rng.integers(1, 4))
    thickness = max(1, int(thickness))
    m = min(thickness // 2 + 1, (min(height, width) - 1) // 2)  # keep the stroke inside the box
    w1, h1 = width - 1 - m, height - 1 - m
    if rng.random() < 0.5:  # left side -> right side
        p0 = (m, rng.uniform(m, h1))
        p3 = (w1, rng.uniform(m, h1))
    else:  # top -> bottom
        p0 = (rng.uniform(m, w1), m)
        p3 = (rng.uniform(m, w1), h1)
    p1 = (rng.uniform(m, w1), rng.uniform(m, h1))
    p2 = (rng.uniform(m, w1), rng.uniform(m, h1))
    t = np.linspace(0.0, 1.0, 64)[:, None]
    ctrl = np.array([p0, p1, p2, p3], dtype=np.float64)
    curve = ((1 - t) ** 3) * ctrl[0] + 3 * ((1 - t) ** 2) * t * ctrl[1] + 3 * (1 - t) * t**2 * ctrl[2] + t**3 * ctrl[3]
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(canvas, [np.rint(curve).astype(np.int32)], False, 1, thickness=thickness, lineType=cv2.LINE_8)
    return _ensure_nonempty(canvas.astype(bool))


_MAKERS = {"ellipse": ellipse_mask, "polygon": polygon_mask, "blob": blob_mask, "scratch": scratch_mask}


def random_shape(
    height: int, width: int, rng: np.random.Generator, shapes: Sequence[str] = ("ellipse", "polygon", "blob")
) -> tuple[np.ndarray, str]:
    """A random mask of one of ``shapes`` (uniformly chosen); returns ``(mask, shape_name)``."""
    if not shapes:
        raise ValueError("shapes must name at least one shape")
    unknown = [s for s in shapes if s not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    name = str(shapes[int(rng.integers(len(shapes)))])
    return _MAKERS[name](height, width, rng), name
