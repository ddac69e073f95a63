"""Bounded samples of a fit's stream of training data, so that its memory stops growing with the number of images.

Reservoir sampling (Vitter's algorithm R): the first ``capacity`` items are all kept; item ``i`` after that
replaces a random slot with probability ``capacity / (i + 1)``. Whenever the stream ends, every item seen so far
is kept with the same probability, so a sample of a long stream is as fair as one drawn from the whole of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import torch

T = TypeVar("T")

# rows per storage block of a PatchPool: memory grows in steps of a block, never to a copy of the whole pool
BLOCK_ROWS = 32768


def reservoir_slots(seen: int, count: int, capacity: int, generator: torch.Generator) -> torch.Tensor:
    """Where each of ``count`` new items goes in a reservoir of ``capacity`` slots that has seen ``seen`` items:
    its slot, or -1 when it is not kept. Of several new items drawn to the same slot only the last one is kept,
    as if they had come one by one."""
    index = torch.arange(seen, seen + count)
    draws = (torch.rand(count, generator=generator, dtype=torch.float64) * (index + 1)).long()
    slots = torch.where(index < capacity, index, draws)
    slots[slots >= capacity] = -1
    kept = torch.nonzero(slots >= 0).flatten()
    if len(kept) > 1:
        unique, inverse = torch.unique(slots[kept], return_inverse=True)
        last = torch.full((len(unique),), -1, dtype=torch.long).scatter_reduce(0, inverse, kept, "amax")
        overwritten = torch.ones(count, dtype=torch.bool)
        overwritten[last] = False
        slots[overwritten] = -1
    return slots


class Reservoir(Generic[T]):
    """A uniform random sample of at most ``capacity`` items of a stream."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seen = 0
        self._items: list[T] = []
        self._generator = torch.Generator().manual_seed(seed)

    def offer(self, make: Callable[[], T]) -> None:
        """Offer the next item of the stream; ``make()`` builds it only if it is kept, so that the items passed
        over (most of a long stream) cost nothing."""
        slot = int(reservoir_slots(self.seen, 1, self.capacity, self._generator)[0])
        self.seen += 1
        if slot == len(self._items):
            self._items.append(make())
        elif slot >= 0:
            self._items[slot] = make()

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class PatchPool:
    """At most ``capacity`` rows of patch features out of all a fit sees, a uniform random sample of them, each
    with integer ``keys`` (where it came from). Rows live in blocks, so the pool never needs one array of all."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seen = 0
        self._blocks: list[torch.Tensor] = []
        self._keys = torch.empty(0, 0, dtype=torch.int32)
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, rows: torch.Tensor, keys: torch.Tensor) -> None:
        """Offer ``rows`` [n, D] of features with their ``keys`` [n, K]."""
        slots = reservoir_slots(self.seen, len(rows), self.capacity, self._generator)
        self.seen += len(rows)
        taken = torch.nonzero(slots >= 0).flatten()
        if len(taken) == 0:
            return
        slots = slots[taken]
        self._grow(len(self), rows.shape[1], keys.shape[1])
        self._keys[slots] = keys[taken].to(torch.int32)
        for block, inside, offsets in self._by_block(slots):
            block[offsets] = rows[taken[inside]]

    def _grow(self, size: int, dim: int, n_keys: int) -> None:
        while len(self._blocks) * BLOCK_ROWS < size:
            self._blocks.append(torch.empty(BLOCK_ROWS, dim))
        if len(self._keys) < size:
            grown = torch.empty(len(self._blocks) * BLOCK_ROWS, n_keys, dtype=torch.int32)
            if len(self._keys):
                grown[: len(self._keys)] = self._keys
            self._keys = grown

    @property
    def dim(self) -> int:
        return self._blocks[0].shape[1]

    @property
    def keys(self) -> torch.Tensor:
        """[len, K] keys of the kept rows."""
        return self._keys[: len(self)]

    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        """The kept rows at ``slots`` [m], as one [m, D] array."""
        out = torch.empty(len(slots), self.dim)
        for block, inside, offsets in self._by_block(slots):
            out[inside] = block[offsets]
        return out

    def _by_block(self, slots: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """For each storage block that ``slots`` reach: the block, which of ``slots`` lie in it, and their rows
        there."""
        block_of = slots // BLOCK_ROWS
        for block in torch.unique(block_of).tolist():
            inside = torch.nonzero(block_of == block).flatten()
            yield self._blocks[block], inside, slots[inside] - block * BLOCK_ROWS

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [D] and covariance [D, D] of the kept rows in float64, summed block by block."""
        total = torch.zeros(self.dim, dtype=torch.float64)
        products = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        for start, block in zip(range(0, len(self), BLOCK_ROWS), self._blocks):
            rows = block[: len(self) - start].double()
            total += rows.sum(dim=0)
            products += rows.T @ rows
        mean = total / len(self)
        return mean, products / len(self) - torch.outer(mean, mean)

    def projected(self, projection: torch.Tensor) -> torch.Tensor:
        """All kept rows times ``projection`` [D, d], as one [len, d] array, written block by block into it (no
        list of products to concatenate: that would hold the result twice)."""
        out = torch.empty(len(self._blocks) * BLOCK_ROWS, projection.shape[1])
        for start, block in zip(range(0, len(out), BLOCK_ROWS), self._blocks):
            torch.matmul(block, projection, out=out[start : start + BLOCK_ROWS])
        return out[: len(self)]
