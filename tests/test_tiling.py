"""Tests for anomalens.data.tiling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anomalens.data import Tile, split_tiles, stitch_maps, tile_grid


def _smooth_map(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return (np.sin(y / 37.0) * np.cos(x / 53.0) + 0.001 * x + 0.5).astype(np.float32)


def _min_neighbour_overlaps(tiles: list[Tile]) -> tuple[int, int]:
    ys = sorted({(t.y0, t.y1) for t in tiles})
    xs = sorted({(t.x0, t.x1) for t in tiles})
    oy = min((a[1] - b[0] for a, b in zip(ys, ys[1:])), default=10**9)
    ox = min((a[1] - b[0] for a, b in zip(xs, xs[1:])), default=10**9)
    return oy, ox


def test_grid_720x1280_covers_exact_tiles() -> None:
    h, w = 720, 1280
    tiles = tile_grid(h, w, 256, 32)
    cover = np.zeros((h, w), np.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        assert (t.height, t.width) == (256, 256)
        cover[t.slices] += 1
    assert cover.min() >= 1
    oy, ox = _min_neighbour_overlaps(tiles)
    assert oy >= 32 and ox >= 32
    # last row / column end exactly at the border, starts evenly spread
    assert max(t.y1 for t in tiles) == h and max(t.x1 for t in tiles) == w
    y_starts = sorted({t.y0 for t in tiles})
    steps = np.diff(y_starts)
    assert steps.max() - steps.min() <= 1
    assert tiles == tile_grid(h, w, (256, 256), (32, 32))  # int == pair


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"),
    [(256, 256, 256, 32), (257, 513, 256, 0), (300, 1000, (128, 200), 64), (999, 301, 100, 90), (50, 40, 1, 0)],
)
def test_grid_properties(h: int, w: int, tile, overlap: int) -> None:
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    tiles = tile_grid(h, w, tile, overlap)
    cover = np.zeros((h, w), bool)
    for t in tiles:
        assert (t.height, t.width) == (min(th, h), min(tw, w))
        assert 0 <= t.y0 and t.y1 <= h and 0 <= t.x0 and t.x1 <= w
        cover[t.slices] = True
    assert cover.all()
    oy, ox = _min_neighbour_overlaps(tiles)
    assert oy >= overlap and ox >= overlap


def test_small_image_single_tile_extent() -> None:
    tiles = tile_grid(100, 300, 256, 32)
    assert all(t.height == 100 and t.y0 == 0 for t in tiles)
    assert all(t.width == 256 for t in tiles)
    assert tiles[-1].x1 == 300
    img = np.zeros((100, 200, 3), np.float32)
    crops, tiles = split_tiles(img, 256, 32)
    assert tiles == [Tile(0, 0, 100, 200)] and crops[0].shape == (100, 200, 3)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 64)
    with pytest.raises(ValueError):
        tile_grid(0, 100, 64, 8)
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, -1)
    with pytest.raises(ValueError):
        stitch_maps([np.zeros((4, 4))], [], (4, 4))
    with pytest.raises(ValueError, match="not covered"):
        stitch_maps([np.zeros((4, 4))], [Tile(0, 0, 4, 4)], (4, 8))


def test_split_then_stitch_reproduces_global_map() -> None:
    h, w = 720, 1280
    image = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    crops, tiles = split_tiles(image, 256, 32)
    assert len(crops) == len(tiles)
    for crop, t in zip(crops, tiles):
        assert crop.shape == (256, 256, 3) and crop.flags.c_contiguous
        np.testing.assert_array_equal(crop, image[t.slices])

    gmap = _smooth_map(h, w)
    maps = [gmap[t.slices] for t in tiles]
    out = stitch_maps(maps, tiles, image.shape)
    assert out.dtype == np.float32 and out.shape == (h, w)
    assert float(np.abs(out - gmap).max()) < 1e-5


def test_constant_maps_any_resolution() -> None:
    tiles = tile_grid(300, 500, 128, 16)
    full = stitch_maps([np.full((128, 128), 0.7, np.float32) for _ in tiles], tiles, (300, 500))
    np.testing.assert_allclose(full, 0.7, atol=1e-6)
    # lower-resolution maps (e.g. a 1/8 feature map) and (1, h, w) shapes
    low = stitch_maps([np.full((1, 16, 16), 0.3) for _ in tiles], tiles, (300, 500))
    np.testing.assert_allclose(low, 0.3, atol=1e-6)


def test_low_resolution_maps_approximate_global_map() -> None:
    h, w = 480, 640
    gmap = _smooth_map(h, w)
    tiles = tile_grid(h, w, 128, 32)
    maps = [cv2.resize(gmap[t.slices], (32, 32), interpolation=cv2.INTER_AREA) for t in tiles]
    out = stitch_maps(maps, tiles, (h, w))
    assert float(np.abs(out - gmap)[8:-8, 8:-8].max()) < 0.02


def test_blend_has_no_seam() -> None:
    # two tiles with different constant scores: across the overlap the blend
    # rises monotonically from one to the other without a jump at tile edges
    tiles = [Tile(0, 0, 64, 64), Tile(0, 32, 64, 96)]
    out = stitch_maps([np.zeros((64, 64)), np.ones((8, 8))], tiles, (64, 96))
    row = out[20].astype(np.float64)
    assert row[:32].max() < 1e-6 and row[64:].min() > 1 - 1e-6
    steps = np.diff(row)
    assert steps.min() >= -1e-6
    assert steps.max() < 0.1  # spread over the 32-pixel overlap, no seam
    assert np.allclose(out, out[:1])  # identical rows
