"""Stains: a smooth local change of brightness (dark or bright), the typical surface-inspection defect.

A blob or ellipse 6-25 % of the shorter image side across (or, in a quarter of the draws, a thin curved
scratch 15-50 % of the side long) is turned into a soft weight by a Gaussian blur and the image is
brightened or darkened by ``amplitude * weight``, amplitude uniform in ``[0.08, 0.3]``. The direction is
random unless the surface under the stain has too little head-room (a bright stain on a near-white
surface becomes a dark one). The mask is the pixels that changed by more than 0.03 (so the soft fringe
that barely changed is outside it and reset to the original).
"""

from __future__ import annotations

import cv2
import numpy as np

from anomalens.simulation._common import (
    MAX_ATTEMPTS,
    MIN_CHANGED_PIXELS,
    changed_mask,
    keep_gray,
    place_uniform,
    revert_outside,
    visible_count,
)
from anomalens.simulation.shapes import random_shape

__all__ = ["simulate_stain"]

SIZE_FRACTION = (0.06, 0.25)
SCRATCH_LENGTH_FRACTION = (0.15, 0.5)
AMPLITUDE_RANGE = (0.08, 0.3)


def simulate_stain(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """``(result, mask, params)`` of a soft dark/bright stain; ``source`` is not used."""
    height, width = image.shape[:2]
    side = min(height, width)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if rng.random() < 0.25:
            lo = max(8, round(SCRATCH_LENGTH_FRACTION[0] * side))
            hi = max(lo, round(SCRATCH_LENGTH_FRACTION[1] * side))
            bh = min(int(rng.integers(lo, hi + 1)), height - 4)
            bw = min(int(rng.integers(lo, hi + 1)), width - 4)
            shape, shape_name = random_shape(bh, bw, rng, shapes=("scratch",))
            sigma = 0.7
        else:
            lo = max(6, round(SIZE_FRACTION[0] * side))
            hi = max(lo, round(SIZE_FRACTION[1] * side))
            bh = min(int(rng.integers(lo, hi + 1)), height - 4)
            bw = min(int(rng.integers(lo, hi + 1)), width - 4)
            shape, shape_name = random_shape(bh, bw, rng, shapes=("blob", "ellipse"))
            sigma = max(0.8, 0.12 * min(bh, bw))
        ty = place_uniform(rng, bh, height, margin=2)
        tx = place_uniform(rng, bw, width, margin=2)
        region = np.zeros((height, width), bool)
        region[ty : ty + bh, tx : tx + bw] = shape
        weight = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        weight /= max(float(weight.max()), 1e-6)

        amplitude = float(rng.uniform(*AMPLITUDE_RANGE))
        bright = bool(rng.random() < 0.5)
        level = float(image[region].mean())
        if bright and 1.0 - level < amplitude + 0.05:
            bright = False
        elif not bright and level < amplitude + 0.05:
            bright = True
        signed = np.float32(amplitude if bright else -amplitude)
        result = np.clip(image + signed * weight[:, :, None], 0.0, 1.0).astype(np.float32)
        result = keep_gray(image, result)
        mask = changed_mask(image, result, weight > 0, grow=0)
        n_changed = visible_count(image, result, mask)
        if n_changed < MIN_CHANGED_PIXELS:
            continue
        params = {
            "shape": shape_name,
            "box": [ty, tx, bh, bw],
            "blur_sigma": sigma,
            "amplitude": amplitude,
            "polarity": "bright" if bright else "dark",
            "attempt": attempt,
            "changed_pixels": n_changed,
        }
        return revert_outside(image, result, mask), mask, params
    return None
