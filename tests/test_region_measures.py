"""The region measures shared by the findings and the defect-type embedding."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.postprocessing.region_measures import elongation, gray_level, surround_ring, within_distance


@pytest.mark.parametrize("length", [1, 2, 7, 40])
def test_a_one_pixel_line_is_as_elongated_as_it_is_long(length):
    # a line of n pixels has variance (n^2 - 1) / 12 along it; with the unit pixel's 1/12 the ratio is n
    row = np.stack([np.zeros(length), np.arange(length)], axis=1)
    assert elongation(row) == pytest.approx(length)
    assert elongation(row[:, ::-1]) == pytest.approx(length)


def test_a_square_is_not_elongated_whatever_its_size():
    square = np.argwhere(np.ones((9, 9), bool))
    assert elongation(square) == pytest.approx(1.0)


def test_the_ring_surrounds_the_region_outside_what_is_excluded():
    region = np.zeros((40, 40), bool)
    region[18:22, 18:22] = True
    other = np.zeros_like(region)
    other[18:22, 22:26] = True
    ring = surround_ring(region)
    assert ring.any() and not (ring & region).any()
    assert ring[15, 20] and ring[20, 24] and not ring[0, 0]  # 3 px around a 16-pixel region, no further
    without_other = surround_ring(region, exclude=region | other)
    assert not (without_other & other).any() and (without_other == (ring & ~other)).all()


def test_gray_level_weighs_green_most():
    rgb = np.eye(3, dtype=np.float32).reshape(1, 3, 3)
    levels = gray_level(rgb)[0]
    assert levels.argmax() == 1 and levels.sum() == pytest.approx(1.0)


def test_within_distance_is_the_euclidean_disc_around_every_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((60, 80)) < 0.01
    rows, cols = np.mgrid[:60, :80]
    for radius in (1, 3, 12.5, 40):
        nearest = np.full(mask.shape, np.inf)
        for y, x in np.argwhere(mask):
            nearest = np.minimum(nearest, np.hypot(rows - y, cols - x))
        assert (within_distance(mask, radius) == (nearest <= radius)).all()
    assert not within_distance(np.zeros((5, 5), bool), 3).any()


def test_the_ring_of_a_region_at_the_border_is_its_disc_cut_by_the_image():
    region = np.zeros((50, 70), bool)
    region[:10, 60:] = True  # 100 pixels in the top right corner: a 5 px ring
    ring = surround_ring(region)
    assert (ring == (within_distance(region, 5) & ~region)).all()
    assert ring[14, 65] and not ring[15, 65] and ring[5, 55] and not ring[5, 54]
