"""Greedy k-center coreset: the fast selection picks exactly what the plain one-pass-per-point loop picks."""

from __future__ import annotations

import pytest
import torch

from anomalens.data import read_image
from anomalens.models import PatchCore
from anomalens.models.patchcore.coreset import greedy_coreset, plain_greedy, projected


def plain_greedy_coreset(features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """The obvious greedy k-center: after each pick, every point's distance to its nearest pick is updated and the
    farthest point (the first of them on ties) is picked next; same projection, first pick and formula."""
    n_points = features.shape[0]
    if size >= n_points:
        return torch.arange(n_points)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if points.shape[1] > projection_dim:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        points = points @ projection
    squared_norms = (points * points).sum(dim=1)
    current = int(torch.randint(n_points, (1,), generator=generator))
    min_distance = torch.full((n_points,), float("inf"))
    selected = []
    for _ in range(size):
        selected.append(current)
        distance = torch.addmv(squared_norms, points, points[current], alpha=-2.0).add_(squared_norms[current])
        torch.minimum(min_distance, distance, out=min_distance)
        current = int(torch.argmax(min_distance))
    return torch.tensor(selected)


def gaussian(n_points: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n_points, dim, generator=torch.Generator().manual_seed(seed))


def repeated(n_distinct: int, n_points: int, dim: int, seed: int) -> torch.Tensor:
    """``n_points`` rows that are copies of ``n_distinct`` rows: many exactly tied distances."""
    generator = torch.Generator().manual_seed(seed)
    distinct = torch.randn(n_distinct, dim, generator=generator)
    return distinct[torch.randint(n_distinct, (n_points,), generator=generator)]


def grid(n_points: int, dim: int, levels: int, seed: int) -> torch.Tensor:
    """Integer points: distances tie exactly between many different pairs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(levels, (n_points, dim), generator=generator).float()


def clusters_and_outliers(seed: int) -> torch.Tensor:
    """Tight clusters far apart plus a few far outliers: picks jump between regions."""
    generator = torch.Generator().manual_seed(seed)
    centres = 20 * torch.randn(12, 48, generator=generator)
    cloud = centres[torch.randint(12, (15000,), generator=generator)] + torch.randn(15000, 48, generator=generator)
    return torch.cat([cloud, 100 * torch.randn(20, 48, generator=generator)])


CASES = {
    "gaussian, projected": (lambda: gaussian(20000, 64, 0), 1500, 32),
    "gaussian, raw, N not a multiple of 16": (lambda: gaussian(20011, 8, 1), 700, 32),
    "gaussian, default projection": (lambda: gaussian(8000, 256, 2), 600, 128),
    "clusters and outliers": (lambda: clusters_and_outliers(3), 800, 32),
    # the plain loop meets the last N % 16 rows in the BLAS kernel's remainder, whose last bit can differ: with
    # copies of those rows elsewhere, that decides which copy is picked
    "duplicates, fewer picks than distinct rows": (lambda: repeated(1000, 20015, 32, 1), 900, 32),
    "duplicates, few distinct rows": (lambda: repeated(150, 4095, 8, 2), 140, 32),
    "duplicates, more picks than distinct rows": (lambda: repeated(300, 12000, 16, 5), 450, 32),
    "integer grid": (lambda: grid(12007, 6, 4, 6), 900, 32),
    "fewer points than a row block": (lambda: gaussian(10, 4, 7), 6, 32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_picks_as_the_plain_loop(case):
    make, size, projection_dim = CASES[case]
    features = make()
    for seed in (0, 1):
        expected = plain_greedy_coreset(features, size, projection_dim, seed)
        assert torch.equal(greedy_coreset(features, size, projection_dim, seed), expected)


def test_plain_loop_kept_for_accelerators_picks_the_same():
    make, size, projection_dim = CASES["duplicates, fewer picks than distinct rows"]
    features = make()
    expected = plain_greedy_coreset(features, size, projection_dim)
    assert torch.equal(plain_greedy(*projected(features, projection_dim, 0), size), expected)


@pytest.mark.parametrize("size", [37, 38, 500])
def test_everything_when_size_reaches_the_number_of_points(size):
    features = gaussian(37, 8, 0)
    assert torch.equal(greedy_coreset(features, size), torch.arange(37))


def test_same_picks_on_patchcore_features(demo_data):
    """Real patch features of the demo training images, as PatchCore selects its memory bank from them."""
    paths = sorted((demo_data / "magnetic_tile" / "train" / "good").iterdir())
    images = [read_image(path) for path in paths]
    model = PatchCore(image_size=256)
    images = list(model._start_fit(images))
    model._new_model()
    features = model._embed_all([model._views(image)[0].pixels for image in images])
    features = features.reshape(-1, features.shape[-1])
    assert len(features) > 16_000  # far more points than the few kept up to date each step
    size = len(features) // 12
    expected = plain_greedy_coreset(features, size, model.coreset_projection, model.seed)
    assert torch.equal(greedy_coreset(features, size, model.coreset_projection, model.seed), expected)
