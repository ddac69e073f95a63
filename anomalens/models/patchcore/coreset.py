"""Greedy k-center coreset selection, the memory-bank subsampling of PatchCore.

Picking points that are far from everything picked so far keeps rare normal patterns in the bank, which a
random subsample would drop (and then flag as anomalies). Distances are computed in a random projection of
the features (Johnson-Lindenstrauss), which keeps the ranking while making each step cheap.

The plain algorithm (:func:`plain_greedy`, used off the CPU) measures every point against every new centre,
one pass over all points per pick. On the CPU the picks are the same but most of that work is skipped
(:class:`_LazyGreedy`). Only the next pick matters, and it is the farthest point; so each step measures only the
``HOT_POINTS`` points that were farthest at the last count against the new centre, and every other point keeps
an upper bound of its distance. While the farthest hot point is farther than all those bounds it is the pick.
When it is not, the largest bounds are brought down against the centres they missed, from the largest down,
with approximate distances from matrix products (allowing for their rounding), until the farthest points are
known again. Most points stay well below the farthest for many picks at a time and are rarely looked at.

Same picks means the same floats, ties included: a distance that a pick depends on is always
``||p||^2 - 2 p.c + ||c||^2`` from a matrix-vector product (``addmv``), as the plain algorithm computes it.
BLAS computes each row of such a product in the same order wherever the row sits, except in the remainder after
the last full block of rows, and whether the point is the row or the vector; so rows are always measured in
multiples of ``ROW_BLOCK``, and the last ``N % ROW_BLOCK`` rows, which the plain algorithm meets in that
remainder, are measured every step the way it does. ``tests/test_coreset.py`` checks the picks against the
plain algorithm's.
"""

from __future__ import annotations

import torch

# a multiple of the row block of the BLAS matrix-vector kernels (4 or 8 rows in MKL and OpenBLAS)
ROW_BLOCK = 16
# how many of the farthest points are measured against each new centre
HOT_POINTS = 1024
# out-of-date points whose bounds are brought down together, per hot point
BATCH_PER_HOT_POINT = 4
# centres a bound is brought down against at once, so that it can stop early
CENTER_BLOCK = 512
# elements of one matrix product of approximate distances (a few MB, to stay in cache)
PRODUCT_ELEMENTS = 2**20
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def greedy_coreset(features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Return the indices of ``size`` rows of ``features`` [N, D] chosen by greedy k-center selection."""
    if size >= len(features):
        return torch.arange(len(features))
    return k_center_greedy(*projected(features, projection_dim, seed), size)


def coreset_draws(n_points: int, dim: int, projection_dim: int, seed: int) -> tuple[torch.Tensor | None, int]:
    """What a coreset of ``n_points`` points of ``dim`` dimensions draws from ``seed``: a [dim, projection_dim]
    Gaussian projection that keeps distances on average (None where ``dim`` is already no larger), then the
    first pick."""
    generator = torch.Generator().manual_seed(seed)
    projection = None
    if dim > projection_dim:
        projection = torch.randn(dim, projection_dim, generator=generator) / projection_dim**0.5
    return projection, int(torch.randint(n_points, (1,), generator=generator))


def projected(features: torch.Tensor, projection_dim: int, seed: int) -> tuple[torch.Tensor, int]:
    """The points distances are measured between (``features`` randomly projected to ``projection_dim``
    dimensions when they have more), and the first pick, both drawn from ``seed``."""
    points = features.float()
    projection, first = coreset_draws(len(points), points.shape[1], projection_dim, seed)
    if projection is not None:
        points = points @ projection.to(points.device)
    return points, first


def k_center_greedy(points: torch.Tensor, first: int, size: int) -> torch.Tensor:
    """``size`` indices of rows of ``points`` [N, d]: ``first``, then each time the point farthest from all
    chosen so far."""
    if size >= len(points):
        return torch.arange(len(points))
    if points.device.type != "cpu":
        return plain_greedy(points, first, size)
    return _LazyGreedy(points.contiguous(), size).run(first)


def plain_greedy(points: torch.Tensor, first: int, size: int) -> torch.Tensor:
    """Greedy k-center with one pass over all points per pick: ``size`` indices of rows of ``points``."""
    squared_norms = (points * points).sum(dim=1)
    selected = torch.empty(size, dtype=torch.long)
    current = first
    min_distance = torch.full((len(points),), float("inf"), device=points.device)
    scratch = torch.empty_like(min_distance)
    for step in range(size):
        selected[step] = current
        center = points[current]
        # ||p - c||^2 = ||p||^2 - 2 p.c + ||c||^2: one matrix-vector product per step, ||p||^2 added in it
        distance = torch.addmv(squared_norms, points, center, alpha=-2.0, out=scratch).add_(squared_norms[current])
        torch.minimum(min_distance, distance, out=min_distance)
        current = int(torch.argmax(min_distance))
    return selected


class _LazyGreedy:
    """Greedy k-center over ``points`` [N, D] (float32, contiguous, on the CPU) that keeps only the farthest
    points' distances up to date; the same picks as :func:`plain_greedy`."""

    def __init__(self, points: torch.Tensor, size: int):
        n_points, dim = points.shape
        self.points = points
        self.squared_norms = (points * points).sum(dim=1)
        self.selected = torch.empty(size, dtype=torch.long)
        # zero rows after the centres picked so far pad them to a multiple of ROW_BLOCK
        self.centers = points.new_zeros(size + ROW_BLOCK, dim)
        self.center_norms = points.new_zeros(size + ROW_BLOCK)
        self.n_centers = 0
        # a computed squared distance is within (dim + 3) roundings of ||p||^2 + 2|p.c| + ||c||^2 <= 4 max ||p||^2
        # of the exact one, in any summation order; twice that bounds the difference of two computations, and
        # twice again leaves room for the rounding of the comparisons made with it
        self.margin = 16 * (dim + 3) * FLOAT32_UNIT_ROUNDOFF * float(self.squared_norms.max())
        self.n_blocked = n_points - n_points % ROW_BLOCK
        # the remainder rows and the full block before them, measured together as the plain algorithm does
        self.remainder_start = max(0, self.n_blocked - ROW_BLOCK)
        # bound[p] is never below the plain algorithm's distance from p to its nearest centre; over the first
        # measured[p] centres it is within the margin of it, and equal to it where exact[p]. The remainder rows'
        # are exact for all centres.
        self.bound = points.new_empty(n_points)
        self.measured = torch.zeros(self.n_blocked, dtype=torch.long)
        self.exact = torch.ones(self.n_blocked, dtype=torch.bool)
        # the hot points, measured against every centre: indices (ascending), padded rows, bounds, exactness
        self.hot = torch.empty(0, dtype=torch.long)
        self.hot_points = points.new_empty(0, dim)
        self.hot_norms = points.new_empty(0)
        self.hot_bound = points.new_empty(0)
        self.hot_exact = torch.empty(0, dtype=torch.bool)
        # no point outside the hot ones and the remainder is farther than this
        self.cold_bound = float("inf")

    def run(self, first: int) -> torch.Tensor:
        size = len(self.selected)
        current = first
        for step in range(size):
            self.add_center(current)
            if step == size - 1:
                break
            wanted = HOT_POINTS
            while (pick := self.farthest()) is None:
                self.refresh(wanted)
                wanted *= 2  # bounds tied with, or within rounding of, the farthest hot point: take more
            current = pick
        return self.selected

    def add_center(self, index: int) -> None:
        points, squared_norms, step = self.points, self.squared_norms, self.n_centers
        self.selected[step] = index
        self.centers[step] = points[index]
        self.center_norms[step] = squared_norms[index]
        self.n_centers += 1
        if step == 0:
            # everything is measured against the first centre, exactly as the plain algorithm
            torch.addmv(squared_norms, points, points[index], alpha=-2.0, out=self.bound)
            self.bound.add_(squared_norms[index])
            self.measured.fill_(1)
            return
        distance = torch.addmv(self.hot_norms, self.hot_points, points[index], alpha=-2.0).add_(squared_norms[index])
        torch.minimum(self.hot_bound, distance[: len(self.hot)], out=self.hot_bound)
        if self.n_blocked < len(points):
            remainder = slice(self.remainder_start, None)
            distance = torch.addmv(squared_norms[remainder], points[remainder], points[index], alpha=-2.0)
            tail = self.bound[self.n_blocked :]
            torch.minimum(tail, distance[self.n_blocked - self.remainder_start :].add_(squared_norms[index]), out=tail)

    def farthest(self) -> int | None:
        """The point the plain algorithm picks next (the first of the farthest), or None when the hot points
        cannot tell."""
        best, best_distance = None, float("-inf")
        if len(self.hot):
            while True:
                position = int(torch.argmax(self.hot_bound))
                if bool(self.hot_exact[position]):
                    break
                self.hot_bound[position] = self.exact_distance(int(self.hot[position]))
                self.hot_exact[position] = True
            best, best_distance = int(self.hot[position]), float(self.hot_bound[position])
        if self.n_blocked < len(self.points):
            tail = self.bound[self.n_blocked :]
            position = int(torch.argmax(tail))
            # remainder rows come after all others, so they win only when strictly farther
            if float(tail[position]) > best_distance:
                best, best_distance = self.n_blocked + position, float(tail[position])
        certain = best_distance > self.cold_bound or self.cold_bound == float("-inf")
        return best if certain else None

    def exact_distance(self, index: int) -> torch.Tensor:
        """The plain algorithm's distance from point ``index`` to its nearest centre. The centres are the rows
        here and the point the vector, which gives the same products summed in the same order."""
        n_centers = self.n_centers
        padded = n_centers + -n_centers % ROW_BLOCK
        norm = self.squared_norms[index]
        distance = torch.addmv(norm.expand(padded), self.centers[:padded], self.points[index], alpha=-2.0)
        return distance[:n_centers].add_(self.center_norms[:n_centers]).min()

    def refresh(self, wanted: int) -> None:
        """Make the hot points the ``wanted`` points with the largest bounds, each of those measured against
        every centre, and ``cold_bound`` the largest bound of the others."""
        self.bound[self.hot] = self.hot_bound
        self.exact[self.hot] = self.hot_exact
        self.measured[self.hot] = self.n_centers
        n_blocked, n_centers = self.n_blocked, self.n_centers
        if n_blocked == 0:  # only remainder rows, always up to date
            self.cold_bound = float("-inf")
            return
        count = min(wanted + 1, n_blocked)
        bound = self.bound[:n_blocked]
        # The new cut, the count-th largest bound, is at least the count-th largest bound of the points up to
        # date (the floor). Out-of-date points are brought up to date from the largest bound down, each only
        # while its bound is above the floor, which rises as more points are up to date.
        up_to_date = self.measured == n_centers
        largest = bound[up_to_date].topk(min(count, int(up_to_date.sum()))).values
        floor = float(largest[-1]) if len(largest) == count else float("-inf")
        while True:
            out_of_date = torch.nonzero((self.measured < n_centers) & (bound > floor)).flatten()
            if not len(out_of_date):
                break
            batch = bound[out_of_date].topk(min(BATCH_PER_HOT_POINT * count, len(out_of_date))).indices
            batch = out_of_date[batch]
            self.tighten(batch, floor)
            now_up_to_date = batch[self.measured[batch] == n_centers]
            largest = torch.cat([largest, bound[now_up_to_date]])
            largest = largest.topk(min(count, len(largest))).values
            floor = float(largest[-1]) if len(largest) == count else float("-inf")
        while True:  # bounds equal to the floor may still be out of date
            values, farthest = torch.topk(bound, count)
            stale = farthest[self.measured[farthest] < n_centers]
            if not len(stale):
                break
            self.tighten(stale)
        if count > wanted:
            self.cold_bound = float(values[wanted])
            farthest = farthest[:wanted]
        else:
            self.cold_bound = float("-inf")
        self.hot = torch.sort(farthest).values
        rows = _padded(self.hot)
        self.hot_points = self.points[rows]
        self.hot_norms = self.squared_norms[rows]
        self.hot_bound = self.bound[self.hot]
        self.hot_exact = self.exact[self.hot]

    def tighten(self, indices: torch.Tensor, floor: float = float("-inf")) -> None:
        """Bring the bounds of ``indices`` (not in the remainder) down to the centres they missed, in order, a
        block of centres at a time, stopping early for a point whose bound is no longer above ``floor``.
        Distances come from a matrix product, not the plain algorithm's floats, hence the margin (and the
        bounds are no longer exact)."""
        n_centers = self.n_centers
        measured = self.measured[indices]
        order = torch.argsort(measured)
        indices, measured = indices[order], measured[order]
        bound = self.bound[indices]
        finished = torch.full_like(measured, n_centers)
        going_on = torch.ones_like(indices, dtype=torch.bool)
        for start in range(int(measured[0]), n_centers, CENTER_BLOCK):
            end = min(start + CENTER_BLOCK, n_centers)
            # the points that missed a centre of this block (those that missed only its last ones measure all
            # of it: measuring a centre again does no harm to a bound)
            reached = int(torch.searchsorted(measured, end))
            active = torch.nonzero(going_on[:reached]).flatten()
            if not len(active):
                continue
            rows = indices[active]
            nearest = self.nearest(self.points[rows], self.squared_norms[rows], start, end)
            bound[active] = torch.minimum(bound[active], nearest.add_(self.margin))
            stopped = active[bound[active] <= floor]
            going_on[stopped] = False
            finished[stopped] = end
        self.bound[indices] = bound
        self.exact[indices] = False
        self.measured[indices] = finished

    def nearest(self, points: torch.Tensor, norms: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Approximate squared distance from each of ``points`` to the nearest of centres start..end-1."""
        centers, center_norms = self.centers[start:end], self.center_norms[start:end]
        rows = max(ROW_BLOCK, PRODUCT_ELEMENTS // (end - start))
        products = [torch.addmm(center_norms, chunk, centers.T, alpha=-2.0).amin(dim=1) for chunk in points.split(rows)]
        return torch.cat(products).add_(norms)


def _padded(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` followed by copies of its first, to a multiple of ``ROW_BLOCK``."""
    padding = -len(rows) % ROW_BLOCK
    return torch.cat([rows, rows[:1].expand(padding)]) if padding and len(rows) else rows
