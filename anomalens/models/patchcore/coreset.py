"""Greedy k-center coreset selection, the memory-bank subsampling of PatchCore.

Picking points that are far from everything picked so far keeps rare normal patterns in the bank, which a
random subsample would drop (and then flag as anomalies). Distances are computed in a random projection of
the features (Johnson-Lindenstrauss), which keeps the ranking while making each step cheap.
"""

from __future__ import annotations

import torch


def random_projection(dim: int, projection_dim: int, generator: torch.Generator) -> torch.Tensor | None:
    """A [dim, projection_dim] Gaussian projection that keeps distances on average, or None where ``dim`` is
    already no larger."""
    if dim <= projection_dim:
        return None
    return torch.randn(dim, projection_dim, generator=generator) / projection_dim**0.5


def greedy_coreset(features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Return the indices of ``size`` rows of ``features`` [N, D] chosen by greedy k-center selection."""
    if size >= features.shape[0]:
        return torch.arange(features.shape[0])
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    projection = random_projection(points.shape[1], projection_dim, generator)
    if projection is not None:
        points = points @ projection.to(points.device)
    return k_center_greedy(points, size, generator)


def k_center_greedy(points: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``size`` of ``points`` [N, d]: a random first one, then each time the point farthest from all
    chosen so far."""
    n_points = points.shape[0]
    if size >= n_points:
        return torch.arange(n_points)
    squared_norms = (points * points).sum(dim=1)
    selected = torch.empty(size, dtype=torch.long)
    current = int(torch.randint(n_points, (1,), generator=generator))
    min_distance = torch.full((n_points,), float("inf"), device=points.device)
    scratch = torch.empty_like(min_distance)
    for step in range(size):
        selected[step] = current
        center = points[current]
        # ||p - c||^2 = ||p||^2 - 2 p.c + ||c||^2: one matrix-vector product per step, ||p||^2 added in it
        distance = torch.addmv(squared_norms, points, center, alpha=-2.0, out=scratch).add_(squared_norms[current])
        torch.minimum(min_distance, distance, out=min_distance)
        current = int(torch.argmax(min_distance))
    return selected
