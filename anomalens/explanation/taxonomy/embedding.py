"""A region (an image plus a boolean mask of the defect) as a fixed-length vector: :func:`region_embedding`.

What goes into the embedding, and why
-------------------------------------
1. **A crop around the region** (the mask's bounding box, grown by ``CONTEXT`` = 50 % of its size on each side,
   made square and at least ``MIN_CROP`` px, reflect-padded at the image border), resized to ``CROP_SIZE`` px.
   Cropping makes the features describe the defect rather than the whole part, and a square crop keeps the
   defect's shape undistorted; the margin keeps enough surroundings to see what the defect differs from.
2. **Pretrained features** of the frozen backbone (EfficientNet-Lite0, ImageNet weights) at three depths,
   ``blocks.4`` (stride 8: edges, local texture), ``blocks.10`` (stride 16: parts, patterns) and ``blocks.14``
   (stride 32: larger structure), bilinearly upsampled to the ``blocks.4`` grid. Each layer is average-pooled
   (a) under the mask (resized to the grid with area interpolation, i.e. soft weights), which says what the
   defect itself looks like, and (b) over the whole crop, which says what the defect plus its context look
   like. Each pooled vector is L2-normalised on its own so that every layer and pooling counts equally
   (blocks.14 has 192 channels, blocks.4 only 40).
3. **Cheap measured descriptors** of the mask and the pixels, which the scale-free crop cannot see: area
   fraction of the image (log10, /4 -> about [-1, 0]), elongation (log of the major/minor axis ratio, /3), fill
   of the bounding box, number of connected components (log1p, /3), and the mean gray difference between the
   region and a ring of surroundings (x4, clipped to [-1, 1]) plus its gray contrast (std inside, x4). These
   are weighted by ``DESCRIPTOR_WEIGHT`` (about the weight of one pooled feature block). Elongation and the
   ring are those of the findings (:mod:`anomalens.postprocessing.region_measures`).
4. The concatenation is **L2-normalised**, so Euclidean distances lie in [0, 2].

Grayscale images (one channel, or three equal channels) work as they are: a gray image is replicated to three
channels before the backbone, and the descriptors use luma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from anomalens.models.base import flush_denormals
from anomalens.postprocessing.region_measures import elongation, gray_level, surround_ring

LAYERS = ("blocks.4", "blocks.10", "blocks.14")
BACKBONE = "efficientnet_lite0"
CROP_SIZE = 160
CONTEXT = 0.5
MIN_CROP = 32
DESCRIPTOR_WEIGHT = 1.0


def get_extractor(backbone: str = BACKBONE, layers: Sequence[str] = LAYERS) -> torch.nn.Module:
    """A frozen feature extractor, built once per (backbone, layers) and kept (see ``_cached_extractor``)."""
    flush_denormals()  # before the build's forward pass: see its docstring
    return _cached_extractor(backbone, tuple(layers))


# A process embeds with the default backbone and perhaps a taxonomy's own: a few networks are worth keeping,
# while an unbounded cache would hold every network ever asked for until the process ends.
@lru_cache(maxsize=2)
def _cached_extractor(backbone: str, layers: tuple[str, ...]) -> torch.nn.Module:
    from anomalens.models.backbones import build_feature_extractor

    return build_feature_extractor(backbone, layers)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image)
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    rgb = rgb.astype(np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[..., :3])


def _as_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask).astype(bool)
    if m.ndim == 3:
        m = m.any(axis=2)
    if m.shape != shape:
        m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    if not m.any():  # an empty mask says nothing about a place: describe the whole image
        m = np.ones(shape, dtype=bool)
    return m


def _crop_box(mask: np.ndarray) -> tuple[int, int, int]:
    """Square crop (y0, x0, side) around the mask, with context, possibly reaching past the image border."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(y1 - y0, x1 - x0)
    side = max(MIN_CROP, int(math.ceil(side * (1 + 2 * CONTEXT))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return int(round(cy - side / 2.0)), int(round(cx - side / 2.0)), side


def _crop(array: np.ndarray, y0: int, x0: int, side: int, reflect: bool) -> np.ndarray:
    h, w = array.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - h), max(0, x0 + side - w)
    if top or left or bottom or right:
        if not reflect:
            mode = cv2.BORDER_CONSTANT
        elif max(top, bottom) < h and max(left, right) < w:
            mode = cv2.BORDER_REFLECT_101
        else:  # reflection cannot reach further than the image is wide: replicate the edge instead
            mode = cv2.BORDER_REPLICATE
        array = cv2.copyMakeBorder(array, top, bottom, left, right, mode, value=0)
        y0, x0 = y0 + top, x0 + left
    return array[y0 : y0 + side, x0 : x0 + side]


def shape_descriptors(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scaled measured descriptors of a region (see the module docstring, item 3); float32 vector of 6."""
    h, w = mask.shape
    coords = np.argwhere(mask)
    area = len(coords)
    ys, xs = coords[:, 0], coords[:, 1]
    box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    n_components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    ring = surround_ring(mask)
    inside = gray[mask]
    difference = float(inside.mean() - gray[ring].mean()) if ring.any() else 0.0
    return np.array(
        [
            math.log10(max(area / float(h * w), 1e-6)) / 4.0,
            math.log(elongation(coords)) / 3.0,
            area / float(box_area),
            math.log1p(max(n_components - 1, 0)) / 3.0,
            float(np.clip(4.0 * difference, -1.0, 1.0)),
            float(np.clip(4.0 * inside.std(), 0.0, 1.0)),
        ],
        dtype=np.float32,
    )


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-8)


@torch.no_grad()
def region_embedding(
    image: np.ndarray, mask: np.ndarray | None, extractor: torch.nn.Module | None = None, crop_size: int = CROP_SIZE
) -> np.ndarray:
    """L2-normalised float32 vector describing the region ``mask`` of ``image`` (module docstring: what and why).

    ``image``: HxWx3 (or HxW / HxWx1, gray) float in [0, 1] or uint8. ``mask``: HxW bool (resized to the image
    when its size differs); None or empty: the whole image. ``extractor``: a module returning a dict of feature
    maps for a [B,3,H,W] batch in [0, 1] (default: the cached EfficientNet-Lite0 with blocks.4/10/14).
    """
    flush_denormals()
    rgb = _as_rgb(image)
    m = _as_mask(mask, rgb.shape[:2])
    y0, x0, side = _crop_box(m)
    crop = _crop(rgb, y0, x0, side, reflect=True)
    crop_mask = _crop(m.astype(np.float32), y0, x0, side, reflect=False)
    crop = cv2.resize(
        crop, (crop_size, crop_size), interpolation=cv2.INTER_AREA if side > crop_size else cv2.INTER_LINEAR
    )
    extractor = extractor if extractor is not None else get_extractor()
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].clamp(0, 1)
    feats = extractor(x)
    grid = max(f.shape[-1] for f in feats.values())
    weights = cv2.resize(crop_mask, (grid, grid), interpolation=cv2.INTER_AREA)
    if weights.sum() <= 1e-6:  # a very thin region can vanish under area interpolation
        weights = cv2.resize(crop_mask, (grid, grid), interpolation=cv2.INTER_NEAREST)
    if weights.sum() <= 1e-6:
        weights = np.ones((grid, grid), np.float32)
    w = torch.from_numpy(weights.astype(np.float32)).view(1, grid, grid)
    parts = []
    for key in sorted(feats, key=lambda k: (len(k), k)):
        f = feats[key][0]
        if f.shape[-1] != grid:
            f = F.interpolate(f[None], size=(grid, grid), mode="bilinear", align_corners=False)[0]
        parts.append(_unit((f * w).sum(dim=(1, 2)) / w.sum()))
        parts.append(_unit(f.mean(dim=(1, 2))))
    parts.append(torch.from_numpy(shape_descriptors(gray_level(rgb), m)) * DESCRIPTOR_WEIGHT)
    return _unit(torch.cat(parts)).numpy().astype(np.float32)
