"""The validation protocol: each category's test images split once into a validation half and a report half.

Defaults are chosen on validation halves and figures are reported on report halves, so that no reported
figure comes from the images a setting was chosen on. The split is stratified by defect type and seeded:
within each type the images are shuffled by file name order with ``random.Random(seed)`` and the first half
(rounded up) goes to validation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from anomalens.data.datasets import Sample

HALVES: tuple[str, ...] = ("validation", "report")
SPLIT_SEED = 0


def split_halves(samples: Sequence[Sample], seed: int = SPLIT_SEED) -> dict[str, list[Sample]]:
    """``{"validation": [...], "report": [...]}``, each stratified by defect type and sorted by path."""
    by_type: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_type[sample.defect_type].append(sample)
    halves: dict[str, list[Sample]] = {half: [] for half in HALVES}
    for defect_type in sorted(by_type):
        group = sorted(by_type[defect_type], key=lambda s: s.path.name)
        random.Random(f"{seed}:{defect_type}").shuffle(group)
        cut = (len(group) + 1) // 2
        halves["validation"] += group[:cut]
        halves["report"] += group[cut:]
    return {half: sorted(chosen, key=lambda s: str(s.path)) for half, chosen in halves.items()}


def select_half(samples: Sequence[Sample], half: str | None, seed: int = SPLIT_SEED) -> list[Sample]:
    """The samples of one half, or all of them when ``half`` is None or ``"all"``."""
    if half in (None, "all"):
        return list(samples)
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES} or 'all', not {half!r}")
    return split_halves(samples, seed)[half]
