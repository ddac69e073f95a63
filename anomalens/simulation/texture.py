"""Perlin noise and DRAEM-style texture anomalies.

Noise (pure numpy):

* :func:`perlin_noise` - 2-D gradient (Perlin) noise on a lattice of ``res`` cells, any output size;
* :func:`fractal_noise` - a sum of octaves of Perlin noise (each twice the frequency, ``persistence`` times
  the amplitude of the previous), normalised to zero mean and unit standard deviation;
* :func:`perlin_mask` - blobby regions: rotated fractal noise thresholded at the quantile that makes the
  region cover a given share of the image, specks removed.

The ``texture`` anomaly: a Perlin region covering 1-12 % of the image is filled with a foreign texture -
``source`` (another good image) or the image itself, rotated, flipped and block-shuffled and
photometrically changed, or a procedural noise/stripe texture - blended with opacity ``beta`` uniform in
``[0.1, 1.0)``: ``result = (1 - beta) * image + beta * texture`` inside the region. The region is pasted
hard, so pixels outside the mask are bit-identical to the input. Parts of the region (connected
components) whose mean change stays under 0.03 - the texture happened to match - are reset and left out
of the mask; a draw with nothing left is redrawn.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from anomalens.simulation._common import (
    CHANGE_THRESHOLD,
    MAX_ATTEMPTS,
    MIN_CHANGED_PIXELS,
    change_map,
    keep_gray,
    remove_small,
)

__all__ = ["fractal_noise", "perlin_mask", "perlin_noise", "procedural_texture", "simulate_texture"]

COVERAGE_RANGE = (0.01, 0.12)
BETA_RANGE = (0.1, 1.0)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Perlin gradient noise of ``shape`` (H, W) with ``res`` (rows, cols) lattice cells; float32, ~[-1, 1]."""
    height, width = int(shape[0]), int(shape[1])
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0.0, 2.0 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    ys = (np.arange(height) + 0.5) * ry / height
    xs = (np.arange(width) + 0.5) * rx / width
    y0 = np.minimum(ys.astype(int), ry - 1)
    x0 = np.minimum(xs.astype(int), rx - 1)
    fy, fx = ys - y0, xs - x0

    def corner(oy: int, ox: int) -> np.ndarray:
        iy, ix = np.ix_(y0 + oy, x0 + ox)
        return gy[iy, ix] * (fy - oy)[:, None] + gx[iy, ix] * (fx - ox)[None, :]

    uy, ux = _fade(fy)[:, None], _fade(fx)[None, :]
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (np.sqrt(2.0) * (top * (1 - uy) + bottom * uy)).astype(np.float32)


def fractal_noise(
    shape: tuple[int, int],
    res: tuple[int, int],
    rng: np.random.Generator,
    octaves: int = 3,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers (frequency x2, amplitude x``persistence`` each); zero mean, unit std."""
    total = np.zeros((int(shape[0]), int(shape[1])), np.float32)
    amplitude = 1.0
    for octave in range(max(1, int(octaves))):
        f = 2**octave
        total += np.float32(amplitude) * perlin_noise(shape, (res[0] * f, res[1] * f), rng)
        amplitude *= persistence
    total -= total.mean()
    return total / np.float32(max(float(total.std()), 1e-6))


def _rotate(field: np.ndarray, angle: float) -> np.ndarray:
    h, w = field.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(field, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def perlin_mask(
    shape: tuple[int, int], rng: np.random.Generator, coverage: float | None = None
) -> tuple[np.ndarray, dict]:
    """Blobby boolean regions covering about ``coverage`` of the image (drawn from 1-12 % when ``None``).

    Lattice resolution 1-8 cells per axis (independently, so blobs can be elongated), 1-3 octaves,
    rotated by a random angle. Returns the mask and the parameters used.
    """
    height, width = int(shape[0]), int(shape[1])
    if coverage is None:
        coverage = float(rng.uniform(*COVERAGE_RANGE))
    res = (int(2 ** rng.integers(0, 4)), int(2 ** rng.integers(0, 4)))
    octaves = int(rng.integers(1, 4))
    angle = float(rng.uniform(0.0, 180.0))
    field = _rotate(fractal_noise((height, width), res, rng, octaves), angle)
    level = float(np.quantile(field, 1.0 - coverage))
    mask = remove_small(field > level, max(MIN_CHANGED_PIXELS, int(0.002 * height * width)))
    if not mask.any():  # every part was a speck: keep the strongest point's neighbourhood
        mask = field >= float(np.quantile(field, 1.0 - max(coverage, MIN_CHANGED_PIXELS / field.size)))
    params = {"coverage": coverage, "res": list(res), "octaves": octaves, "angle": angle}
    return mask, params


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random synthetic texture, float32 (H, W, 3) in [0, 1]: fractal ``noise`` or warped ``stripes``."""
    height, width = int(shape[0]), int(shape[1])
    kind = "noise" if rng.random() < 0.5 else "stripes"
    if kind == "noise":
        cells = int(rng.integers(4, 17))
        res = (max(1, round(cells * height / max(height, width))), max(1, round(cells * width / max(height, width))))
        base = fractal_noise((height, width), res, rng, octaves=int(rng.integers(2, 5)))
    else:
        period = float(rng.uniform(4.0, 20.0))
        angle = float(rng.uniform(0.0, np.pi))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        warp = fractal_noise((height, width), (2, 2), rng, octaves=2) * np.float32(rng.uniform(0.0, period))
        base = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle) + warp) / period).astype(np.float32)
    mean = float(rng.uniform(0.1, 0.9))
    contrast = float(rng.uniform(0.08, 0.3))
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    tex = (mean + contrast * base)[:, :, None] * tint[None, None, :]
    return np.clip(tex, 0.0, 1.0).astype(np.float32), kind


def _shuffle_blocks(image: np.ndarray, rng: np.random.Generator, grid: int) -> np.ndarray:
    h, w = image.shape[:2]
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    bh, bw = int(np.diff(ys).min()), int(np.diff(xs).min())
    blocks = [image[ys[i] : ys[i] + bh, xs[j] : xs[j] + bw] for i in range(grid) for j in range(grid)]
    order = rng.permutation(len(blocks))
    rows = [np.concatenate([blocks[order[i * grid + j]] for j in range(grid)], axis=1) for i in range(grid)]
    return cv2.resize(np.concatenate(rows, axis=0), (w, h), interpolation=cv2.INTER_LINEAR)


def foreign_texture(image: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Turn a (good) image into a foreign texture of ``shape``: rotated, flipped, block-shuffled, recoloured."""
    height, width = int(shape[0]), int(shape[1])
    shrink = image.shape[0] > height
    tex = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    angle = float(rng.uniform(0.0, 360.0))
    tex = np.stack([_rotate(np.ascontiguousarray(tex[:, :, c]), angle) for c in range(3)], axis=2)
    flip = bool(rng.random() < 0.5)
    if flip:
        tex = tex[:, ::-1]
    grid = int(rng.integers(1, 5))
    if grid > 1:
        tex = _shuffle_blocks(np.ascontiguousarray(tex), rng, grid)
    photometric = str(rng.choice(["gamma", "invert", "contrast", "posterize", "none"]))
    if photometric == "gamma":
        tex = np.power(np.clip(tex, 0.0, 1.0), np.float32(rng.uniform(0.4, 2.5)))
    elif photometric == "invert":
        tex = 1.0 - tex
    elif photometric == "contrast":
        m = float(tex.mean())
        tex = (tex - m) * np.float32(rng.uniform(1.5, 3.0)) + np.float32(m)
    elif photometric == "posterize":
        levels = int(rng.integers(3, 7))
        tex = np.floor(np.clip(tex, 0.0, 0.999) * levels) / np.float32(levels - 1)
    params = {"angle": angle, "flip": flip, "shuffle_grid": grid, "photometric": photometric}
    return np.clip(tex, 0.0, 1.0).astype(np.float32), params


def simulate_texture(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """DRAEM-style texture anomaly; ``(result, mask, params)`` or ``None`` if no draw changed enough."""
    height, width = image.shape[:2]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        region, region_params = perlin_mask((height, width), rng)
        if source is not None:
            origin = "source" if rng.random() < 0.5 else "procedural"
        else:
            origin = "self" if rng.random() < 0.35 else "procedural"
        if origin == "procedural":
            tex, tex_kind = procedural_texture((height, width), rng)
            tex_params: dict = {"kind": tex_kind}
        else:
            tex, tex_params = foreign_texture(source if origin == "source" else image, (height, width), rng)
        beta = float(rng.uniform(*BETA_RANGE))
        blended = (1.0 - beta) * image + beta * tex
        result = keep_gray(image, np.where(region[:, :, None], blended, image).astype(np.float32))

        # drop parts of the region where the texture happened to match the surface
        change = change_map(image, result)
        labels, n = ndimage.label(region, structure=np.ones((3, 3), bool))
        means = ndimage.mean(change, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)
        keep = np.concatenate([[False], np.asarray(means) >= CHANGE_THRESHOLD])
        mask = keep[labels]
        if int((mask & (change > CHANGE_THRESHOLD)).sum()) < MIN_CHANGED_PIXELS:
            continue
        result = np.where(mask[:, :, None], result, image).astype(np.float32)
        params = {
            "region": region_params,
            "texture": origin,
            "texture_params": tex_params,
            "beta": beta,
            "parts": int(n),
            "parts_kept": int(keep.sum()),
            "attempt": attempt,
            "area_fraction": float(mask.mean()),
        }
        return np.ascontiguousarray(result), mask, params
    return None
