"""CutPaste-style anomalies: a piece of the image itself pasted hard (no blending) somewhere else.

* ``cutpaste``: a rectangle covering 2-15 % of the image area, aspect ratio log-uniform in ``[0.3, 3.3]``,
  colour-jittered with probability 1/2, pasted axis-aligned at another place;
* ``scar``: a thin rectangle, 2 px to 3 % of the shorter side wide and 8-25 % of the shorter side long,
  always colour-jittered, rotated by a random angle and pasted (CutPaste-Scar).

The mask is the pasted region; every pixel outside it is bit-identical to the input. A draw whose paste
changes the image too little (mean change inside the region under 0.02, or fewer than
:data:`._common.MIN_CHANGED_PIXELS` visibly changed pixels - e.g. on a flat surface without jitter) is
redrawn.
"""

from __future__ import annotations

import cv2
import numpy as np

from anomalens.simulation._common import CHANGE_THRESHOLD, MAX_ATTEMPTS, MIN_CHANGED_PIXELS, change_map, keep_gray

__all__ = ["color_jitter", "simulate_cutpaste", "simulate_scar"]

AREA_FRACTION = (0.02, 0.15)
ASPECT_RANGE = (0.3, 1 / 0.3)
SCAR_WIDTH_FRACTION = 0.03
SCAR_LENGTH_FRACTION = (0.08, 0.25)
MIN_MEAN_CHANGE = 0.02


def color_jitter(
    image: np.ndarray, rng: np.random.Generator, region: np.ndarray | None = None, strength: float = 0.2
) -> tuple[np.ndarray, dict]:
    """Random brightness, contrast, saturation (factors in ``1 +- strength``) and hue (+-``strength/4`` turn).

    Contrast pivots on the mean of ``region`` (bool mask; whole image when ``None``). Returns the jittered
    float32 image, clipped to ``[0, 1]``, and the factors used.
    """
    brightness = float(rng.uniform(1 - strength, 1 + strength))
    contrast = float(rng.uniform(1 - strength, 1 + strength))
    saturation = float(rng.uniform(1 - strength, 1 + strength))
    hue = float(rng.uniform(-strength / 4, strength / 4))
    out = image * np.float32(brightness)
    pivot = float(out[region].mean()) if region is not None and region.any() else float(out.mean())
    out = (out - pivot) * np.float32(contrast) + np.float32(pivot)
    gray = out.mean(axis=2, keepdims=True)
    out = gray + (out - gray) * np.float32(saturation)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if hue != 0.0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + np.float32(hue * 360.0), np.float32(360.0))
        out = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0).astype(np.float32)
    params = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
    return out, params


def _rotated_extent(h: float, w: float, angle_deg: float) -> tuple[float, float]:
    t = np.deg2rad(angle_deg)
    return (abs(w * np.sin(t)) + abs(h * np.cos(t))) / 2.0, (abs(w * np.cos(t)) + abs(h * np.sin(t))) / 2.0


def _paste(
    image: np.ndarray,
    rng: np.random.Generator,
    h: int,
    w: int,
    angle: float,
    jitter_p: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cut an ``h`` x ``w`` rectangle of ``image``, rotate it by ``angle`` degrees, paste it elsewhere."""
    height, width = image.shape[:2]
    # source rectangle (axis-aligned, inside the image)
    sy = int(rng.integers(0, height - h + 1))
    sx = int(rng.integers(0, width - w + 1))
    src_rect = np.zeros((height, width), np.uint8)
    src_rect[sy : sy + h, sx : sx + w] = 1
    # destination centre: the rotated rectangle must stay inside the image
    ey, ex = _rotated_extent(h, w, angle)
    cy_lo, cy_hi = ey, height - ey
    cx_lo, cx_hi = ex, width - ex
    cy = float(rng.uniform(cy_lo, max(cy_lo, cy_hi)))
    cx = float(rng.uniform(cx_lo, max(cx_lo, cx_hi)))
    if angle == 0.0:  # keep axis-aligned pastes on the pixel grid: an exact copy, no interpolation
        cy, cx = round(cy - h / 2.0) + h / 2.0, round(cx - w / 2.0) + w / 2.0

    piece = image
    jitter = None
    if rng.random() < jitter_p:
        piece, jitter = color_jitter(image, rng, region=src_rect > 0)

    # affine map source -> destination: rotate about the source centre, then move to (cx, cy)
    scx, scy = sx + w / 2.0, sy + h / 2.0
    matrix = cv2.getRotationMatrix2D((scx - 0.5, scy - 0.5), angle, 1.0)
    matrix[0, 2] += cx - scx
    matrix[1, 2] += cy - scy
    warped = cv2.warpAffine(piece, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(src_rect, matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    result = np.where(mask[:, :, None], warped, image).astype(np.float32)
    result = keep_gray(image, np.clip(result, 0.0, 1.0))
    params = {
        "source_box": [sy, sx, h, w],
        "center": [cy, cx],
        "angle": angle,
        "jitter": jitter,
    }
    return result, mask, params


def _good_enough(image: np.ndarray, result: np.ndarray, mask: np.ndarray) -> bool:
    if int(mask.sum()) < MIN_CHANGED_PIXELS:
        return False
    change = change_map(image, result)[mask]
    return float(change.mean()) >= MIN_MEAN_CHANGE and int((change > CHANGE_THRESHOLD).sum()) >= MIN_CHANGED_PIXELS


def simulate_cutpaste(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Plain CutPaste. ``source`` is not used: the patch always comes from ``image`` itself."""
    height, width = image.shape[:2]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        area = float(rng.uniform(*AREA_FRACTION)) * height * width
        aspect = float(np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1]))))
        h = int(np.clip(round(np.sqrt(area * aspect)), 4, height - 2))
        w = int(np.clip(round(np.sqrt(area / aspect)), 4, width - 2))
        result, mask, params = _paste(image, rng, h, w, 0.0, jitter_p=0.5)
        if _good_enough(image, result, mask):
            params.update(attempt=attempt, area_fraction=float(mask.mean()))
            return result, mask, params
    return None


def simulate_scar(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """CutPaste-Scar. ``source`` is not used: the scar always comes from ``image`` itself."""
    height, width = image.shape[:2]
    side = min(height, width)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        thick = int(rng.integers(2, max(2, round(SCAR_WIDTH_FRACTION * side)) + 1))
        lo = max(12, round(SCAR_LENGTH_FRACTION[0] * side), 3 * thick)
        hi = max(lo, round(SCAR_LENGTH_FRACTION[1] * side))
        length = int(min(rng.integers(lo, hi + 1), side - 2))
        angle = float(rng.uniform(0.0, 180.0))
        result, mask, params = _paste(image, rng, length, thick, angle, jitter_p=1.0)
        if _good_enough(image, result, mask):
            params.update(attempt=attempt, width=thick, length=length)
            return result, mask, params
    return None
