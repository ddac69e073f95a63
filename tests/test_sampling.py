"""Bounded samples of a fit's stream: reservoir slots, the patch pool and the image reservoir."""

from __future__ import annotations

import numpy as np
import torch

from anomalens.models.patchcore.sampling import BLOCK_ROWS, PatchPool, Reservoir, reservoir_slots


def test_a_stream_shorter_than_the_capacity_is_kept_whole_and_in_order():
    pool = PatchPool(capacity=1000, seed=0)
    rows = torch.randn(700, 5)
    for start in range(0, 700, 64):
        pool.add(rows[start : start + 64], torch.arange(start, min(start + 64, 700)).view(-1, 1))
    assert len(pool) == 700 and pool.seen == 700
    assert torch.equal(pool.rows(torch.arange(700)), rows)
    assert torch.equal(pool.keys[:, 0], torch.arange(700, dtype=torch.int32))


def test_a_long_stream_keeps_capacity_rows_each_with_its_own_key():
    pool = PatchPool(capacity=BLOCK_ROWS + 500, seed=1)  # more than one storage block
    n_rows, dim = 3 * BLOCK_ROWS, 3
    for start in range(0, n_rows, 4096):
        index = torch.arange(start, min(start + 4096, n_rows))
        pool.add(index.float().view(-1, 1).expand(-1, dim), index.view(-1, 1))
    assert len(pool) == BLOCK_ROWS + 500 and pool.seen == n_rows
    rows = pool.rows(torch.arange(len(pool)))
    keys = pool.keys[:, 0]
    assert torch.equal(rows[:, 0].long(), keys.long())  # every row kept with the key it came with
    assert len(torch.unique(keys)) == len(pool)  # no row kept twice
    # a fair sample of the whole stream, not of its start: each third of it holds about a third of the rows
    thirds = torch.bincount(keys.long() // BLOCK_ROWS, minlength=3).float() / len(pool)
    assert torch.allclose(thirds, torch.full((3,), 1 / 3), atol=0.02), thirds


def test_the_pools_moments_are_those_of_its_rows_across_blocks():
    pool = PatchPool(capacity=BLOCK_ROWS + 500, seed=2)  # the last block partly filled
    generator = torch.Generator().manual_seed(0)
    rows = 3.0 + torch.randn(BLOCK_ROWS + 500, 6, generator=generator) @ torch.randn(6, 6, generator=generator)
    pool.add(rows, torch.arange(len(rows)).view(-1, 1))
    mean, covariance = pool.moments()
    expected = np.cov(rows.double().numpy(), rowvar=False, bias=True)
    assert np.allclose(mean.numpy(), rows.double().mean(dim=0).numpy(), atol=1e-9)
    assert np.allclose(covariance.numpy(), expected, atol=1e-9)


def test_reservoir_slots_keep_every_item_with_the_same_probability():
    capacity, n_items, runs = 10, 40, 2000
    kept = np.zeros(n_items)
    for run in range(runs):
        generator = torch.Generator().manual_seed(run)
        slots = np.full(capacity, -1)
        for start in range(0, n_items, 7):  # batches, so that several items of one batch may draw one slot
            count = min(7, n_items - start)
            for offset, slot in enumerate(reservoir_slots(start, count, capacity, generator).tolist()):
                if slot >= 0:
                    slots[slot] = start + offset
        kept[slots] += 1
    # binomial(2000, 0.25): a standard deviation of about 19 counts
    assert np.abs(kept - runs * capacity / n_items).max() < 80, kept


def test_of_several_new_items_drawn_to_one_slot_only_the_last_is_kept():
    generator = torch.Generator().manual_seed(0)
    slots = reservoir_slots(seen=1, count=5000, capacity=1, generator=generator)
    taken = torch.nonzero(slots >= 0).flatten()
    assert len(taken) == 1  # one slot, so one survivor: the last item drawn to it
    assert slots[taken[0]] == 0


def test_the_image_reservoir_keeps_at_most_its_capacity():
    sample: Reservoir[int] = Reservoir(capacity=5, seed=0)
    for item in range(3):
        sample.offer(lambda item=item: item)
    assert list(sample) == [0, 1, 2]
    for item in range(3, 100):
        sample.offer(lambda item=item: item)
    assert len(sample) == 5 and len(set(sample)) == 5 and sample.seen == 100
    assert max(sample) >= 5  # later items get in
    made = []
    sample.offer(lambda: made.append(1) or 100)
    assert len(made) == (100 in list(sample))  # an item passed over is never made
