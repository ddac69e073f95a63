"""Cutting large frames into network-sized tiles and stitching score maps back.

Typical use on a 720x1280 line-camera frame::

    crops, tiles = split_tiles(image, tile_size=256, overlap=32)
    maps = [model(crop) for crop in crops]          # any resolution per tile
    score_map = stitch_maps(maps, tiles, image.shape[:2])

Tiles always have exactly ``tile_size`` pixels (no padding): the last
row/column of tiles is placed to end at the image border, and tile starts are
spread evenly in between, so neighbours overlap by at least ``overlap`` pixels.
A dimension smaller than the tile gets a single tile spanning it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Tile", "split_tiles", "stitch_maps", "tile_grid", "tile_weight_window"]

#: Smallest blend weight, reached at the outermost pixels of a tile. Nonzero so
#: that image-border pixels, which only tile edges cover, still get a value.
WINDOW_FLOOR = 1e-3


@dataclass(frozen=True)
class Tile:
    """Half-open pixel box ``[y0, y1) x [x0, x1)`` of a tile in the full image."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``image[tile.slices]`` is the tile's crop."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    vals = tuple(int(v) for v in value)
    if len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    return vals[0], vals[1]


def _starts(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts along one axis and the tile extent on that axis."""
    if length <= tile:
        return [0], length
    max_stride = tile - overlap
    count = math.ceil((length - tile) / max_stride) + 1
    span = length - tile
    # Evenly spread; consecutive differences are floor/ceil(span / (count - 1))
    # <= max_stride, so every overlap is >= the requested one.
    return [i * span // (count - 1) for i in range(count)], tile


def tile_grid(
    height: int,
    width: int,
    tile_size: int | Sequence[int],
    overlap: int | Sequence[int] = 0,
) -> list[Tile]:
    """Tiles covering a ``height x width`` image (pixels), row-major.

    ``tile_size`` is a square tile's side or ``(tile_h, tile_w)``; ``overlap``
    the minimum overlap in pixels between neighbouring tiles (an int or
    ``(overlap_y, overlap_x)``), smaller than the tile size.

    Every tile has exactly the tile size, except along a dimension where the
    image is smaller than the tile: there a single tile spans the image.
    """
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    th, tw = _pair(tile_size, "tile_size")
    oy, ox = _pair(overlap, "overlap")
    if th < 1 or tw < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size!r}")
    if oy < 0 or ox < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap!r}")
    if oy >= th or ox >= tw:
        raise ValueError(f"overlap {overlap!r} must be smaller than tile_size {tile_size!r}")
    ys, eh = _starts(height, th, oy)
    xs, ew = _starts(width, tw, ox)
    return [Tile(y, x, y + eh, x + ew) for y in ys for x in xs]


def split_tiles(
    image: np.ndarray,
    tile_size: int | Sequence[int],
    overlap: int | Sequence[int] = 0,
) -> tuple[list[np.ndarray], list[Tile]]:
    """Cut ``image`` (``(H, W)`` or ``(H, W, C)``) into tiles of :func:`tile_grid`.

    Returns contiguous copies of the crops and the tiles they came from.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must be at least 2-D, got shape {image.shape}")
    tiles = tile_grid(image.shape[0], image.shape[1], tile_size, overlap)
    crops = [np.ascontiguousarray(image[t.slices]) for t in tiles]
    return crops, tiles


def _window_1d(n: int, floor: float) -> np.ndarray:
    # Hann window sampled at pixel centres: symmetric, peak 1 in the middle,
    # close to 0 at both ends, then lifted to ``floor``.
    i = np.arange(n, dtype=np.float64)
    w = np.sin(np.pi * (i + 0.5) / n) ** 2
    return floor + (1.0 - floor) * w


def tile_weight_window(height: int, width: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """Separable Hann blend window of a tile, ``float64``, max 1 at the centre,
    falling to about ``floor`` at the edges."""
    return np.outer(_window_1d(int(height), floor), _window_1d(int(width), floor))


def _as_2d(score_map: np.ndarray, index: int) -> np.ndarray:
    m = np.asarray(score_map)
    while m.ndim > 2 and m.shape[0] == 1:  # (1, h, w), (1, 1, h, w)
        m = m[0]
    while m.ndim > 2 and m.shape[-1] == 1:  # (h, w, 1)
        m = m[..., 0]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"map {index} must be a non-empty 2-D score map, got shape {np.shape(score_map)}")
    return m


def stitch_maps(
    maps: Sequence[np.ndarray],
    tiles: Sequence[Tile],
    shape: Sequence[int],
) -> np.ndarray:
    """Blend per-tile score maps into one ``float32`` map of ``shape[:2]``.

    Each map is a 2-D score map for its tile (singleton axes such as
    ``(1, h, w)`` are squeezed). A map whose size differs from its tile's is
    first resized to the tile with bilinear interpolation. Overlaps are
    blended with a separable Hann window (highest at the tile centre, falling
    towards the tile edges, floored at :data:`WINDOW_FLOOR`), i.e. a weighted
    average in which each tile's less reliable border counts least, so no
    seams appear. Where tiles agree the result equals their common value.

    Mismatched lengths, a tile outside ``shape``, a map that is not 2-D, or
    pixels of ``shape`` covered by no tile raise ``ValueError``.
    """
    if len(maps) != len(tiles):
        raise ValueError(f"got {len(maps)} maps for {len(tiles)} tiles")
    if len(shape) < 2:
        raise ValueError(f"shape must be (H, W, ...), got {shape!r}")
    h, w = int(shape[0]), int(shape[1])
    acc = np.zeros((h, w), dtype=np.float64)
    wsum = np.zeros((h, w), dtype=np.float64)
    windows: dict[tuple[int, int], np.ndarray] = {}
    for i, (score_map, tile) in enumerate(zip(maps, tiles)):
        if not (0 <= tile.y0 < tile.y1 <= h and 0 <= tile.x0 < tile.x1 <= w):
            raise ValueError(f"tile {i} {tile} lies outside an image of shape {(h, w)}")
        m = _as_2d(score_map, i).astype(np.float32, copy=False)
        th, tw = tile.height, tile.width
        if m.shape != (th, tw):
            m = cv2.resize(m, (tw, th), interpolation=cv2.INTER_LINEAR)
        win = windows.get((th, tw))
        if win is None:
            win = windows[(th, tw)] = tile_weight_window(th, tw)
        acc[tile.slices] += win * m
        wsum[tile.slices] += win
    if not np.all(wsum > 0):
        missing = int(np.count_nonzero(wsum <= 0))
        raise ValueError(f"{missing} pixel(s) of the {h}x{w} image are not covered by any tile")
    return (acc / wsum).astype(np.float32)
