"""NSA-style anomalies (Natural Synthetic Anomalies): a patch of another normal image, Poisson-blended in.

One draw:

1. patch box: height and width each uniform in ``[5 %, 25 %]`` of the image's shorter side (at least 10 px:
   OpenCV erodes the clone mask by 3 px), so patches range from small spots to about 5 % of a square image;
2. shape: an ellipse, random polygon or smoothed blob filling that box (:mod:`.shapes`);
3. the patch is cut at a random place of ``source`` (another good image; without one, the image itself at
   a location that does not overlap the destination), and with probability 1/2 resized by a factor
   uniform in ``[0.7, 1.3]``;
4. it is blended at a random place with Poisson image editing (``cv2.seamlessClone``), ``NORMAL_CLONE``
   (source gradients) or ``MIXED_CLONE`` (the stronger of source and destination gradients), chosen at
   random.

Seamless cloning adapts the patch's colours to its surroundings, so a patch that looks like the destination
can end up changing almost nothing. The mask is therefore not the paste shape but the pixels that changed
(see :func:`._common.changed_mask`); pixels outside it are reset to the original. A draw that changes fewer
than :data:`._common.MIN_CHANGED_PIXELS` pixels is discarded and redrawn.
"""

from __future__ import annotations

import cv2
import numpy as np

from anomalens.simulation._common import (
    MAX_ATTEMPTS,
    MIN_CHANGED_PIXELS,
    changed_mask,
    is_gray,
    keep_gray,
    place_uniform,
    revert_outside,
    to_uint8,
    visible_count,
)
from anomalens.simulation.shapes import random_shape

__all__ = ["simulate_nsa"]

PATCH_FRACTION = (0.05, 0.25)  # patch box side, as a fraction of the image's shorter side
# OpenCV erodes the clone mask by 3 px before solving; a smaller patch would vanish (and crash the solver)
MIN_PATCH = 10
SCALE_RANGE = (0.7, 1.3)


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    ay, ax, ah, aw = a
    by, bx, bh, bw = b
    return ay < by + bh and by < ay + ah and ax < bx + bw and bx < ax + aw


def _survives_erosion(mask: np.ndarray) -> bool:
    return bool(cv2.erode(np.pad(mask, 1).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).any())


def _full_ellipse(h: int, w: int) -> np.ndarray:
    y = (np.arange(h) - (h - 1) / 2.0) / (h / 2.0)
    x = (np.arange(w) - (w - 1) / 2.0) / (w / 2.0)
    return y[:, None] ** 2 + x[None, :] ** 2 <= 1.0


def _one_draw(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    height, width = image.shape[:2]
    src = image if source is None else source
    side = min(height, width)
    lo = max(MIN_PATCH, int(round(PATCH_FRACTION[0] * side)))
    hi = max(lo, int(round(PATCH_FRACTION[1] * side)))
    # final (pasted) size, kept 2 px away from the image border for the Poisson solver
    fh = min(int(rng.integers(lo, hi + 1)), height - 4)
    fw = min(int(rng.integers(lo, hi + 1)), width - 4)
    scale = float(rng.uniform(*SCALE_RANGE)) if rng.random() < 0.5 else 1.0
    ch = int(np.clip(round(fh / scale), 3, src.shape[0]))  # size cut from the source
    cw = int(np.clip(round(fw / scale), 3, src.shape[1]))
    # OpenCV erodes the clone mask by 3 px before solving: redraw shapes too thin to survive that
    for _ in range(4):
        shape_mask, shape_name = random_shape(fh, fw, rng)
        if _survives_erosion(shape_mask):
            break
    else:
        shape_mask, shape_name = _full_ellipse(fh, fw), "ellipse"
    mode_name = "mixed" if rng.random() < 0.5 else "normal"

    # mask padded by one zero pixel (OpenCV clears the mask's outer row/column anyway)
    mask_pad = np.pad(shape_mask, 1).astype(np.uint8) * 255
    if not _survives_erosion(shape_mask):
        return None  # cannot happen with MIN_PATCH >= 10, but an empty solver mask would crash OpenCV
    bx, by, bw, bh = cv2.boundingRect(mask_pad)
    ty = place_uniform(rng, bh, height, margin=1)
    tx = place_uniform(rng, bw, width, margin=1)

    sy = sx = 0
    for _ in range(16):
        sy = int(rng.integers(0, src.shape[0] - ch + 1))
        sx = int(rng.integers(0, src.shape[1] - cw + 1))
        if source is not None or not _boxes_overlap((sy, sx, ch, cw), (ty - by + 1, tx - bx + 1, fh, fw)):
            break
    patch = src[sy : sy + ch, sx : sx + cw]
    if (ch, cw) != (fh, fw):
        patch = cv2.resize(patch, (fw, fh), interpolation=cv2.INTER_LINEAR)
    patch_pad = cv2.copyMakeBorder(to_uint8(patch), 1, 1, 1, 1, cv2.BORDER_REFLECT)

    dst = to_uint8(image)
    center = (tx + bw // 2, ty + bh // 2)  # OpenCV puts the mask's bounding box at center - size // 2
    flag = cv2.MIXED_CLONE if mode_name == "mixed" else cv2.NORMAL_CLONE
    # seamlessClone overwrites the mask it is given (OpenCV clears and erodes it in place): pass a copy
    blended = cv2.seamlessClone(patch_pad, dst, mask_pad.copy(), center, flag)
    # apply the change as a delta, so that untouched pixels keep their exact float values
    delta = (blended.astype(np.float32) - dst.astype(np.float32)) / np.float32(255.0)
    result = keep_gray(image, np.clip(image + delta, 0.0, 1.0).astype(np.float32))

    region = np.zeros((height, width), bool)
    region[ty : ty + bh, tx : tx + bw] = mask_pad[by : by + bh, bx : bx + bw] > 0
    mask = changed_mask(image, result, region, grow=3)
    params = {
        "source": "self" if source is None else "other",
        "source_box": [sy, sx, ch, cw],
        "box": [ty, tx, bh, bw],
        "shape": shape_name,
        "scale": scale,
        "clone": mode_name,
        "paste_pixels": int(region.sum()),
    }
    return result, mask, params


def simulate_nsa(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """``(result, mask, params)`` of a Poisson-blended foreign patch, or ``None`` if no draw changed enough.

    ``image`` and ``source`` must already be validated float32 RGB arrays (see :func:`.simulate`).
    """
    if source is not None and is_gray(image):
        source = np.repeat(source.mean(axis=2, keepdims=True), 3, axis=2)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        draw = _one_draw(image, rng, source)
        if draw is None:
            continue
        result, mask, params = draw
        n_changed = visible_count(image, result, mask)
        if n_changed >= MIN_CHANGED_PIXELS:
            params.update(attempt=attempt, changed_pixels=n_changed)
            return revert_outside(image, result, mask), mask, params
    return None
