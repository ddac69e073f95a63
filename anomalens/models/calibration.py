"""Automatic thresholds for any detector: score held-out normal views, and the same views with simulated
defects put in, then hand the scores and maps to ``postprocessing.thresholds``.

Detectors differ only in how a held-out unit is scored (PatchCore leaves the unit's own patches out of its
memory bank; EfficientAD holds whole images back from training), so they pass that in as two callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from anomalens.postprocessing.thresholds import (
    DEFAULT_MAX_FALSE_ALARM_RATE,
    thresholds_from_normal,
    thresholds_from_simulation,
)
from anomalens.simulation import KINDS, simulate
from anomalens.types import Thresholds

CALIBRATIONS = ("simulated", "normal")


def calibrate(
    units: Sequence[int],
    unit_views: Callable[[int], Sequence[int]],
    views: Sequence[np.ndarray],
    normal_maps: Callable[[int], torch.Tensor],
    anomaly_map: Callable[[int, np.ndarray], torch.Tensor],
    view_scores: Callable[[torch.Tensor], torch.Tensor],
    calibration: str = "simulated",
    simulated_per_image: int = 2,
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
    seed: int = 0,
    simulated_units: int | None = None,
) -> Thresholds:
    """Thresholds from held-out normal ``units`` (an image, or a group of views, per unit).

    Every unit is scored as it is; simulated defects are put into at most ``simulated_units`` of them (spread
    evenly; all when None), since a bound on the false-alarm rate needs many normals and a cut between normals
    and simulated defects needs fewer.

    ``unit_views(unit)`` gives the indices in ``views`` of the unit's views; ``normal_maps(unit)`` their
    [n,S,S] maps as they are; ``anomaly_map(unit, pixels)`` the [1,S,S] map of one of them with a simulated
    defect put in. Kinds are cycled; the NSA kind takes its patch from the next view in ``views``.
    """
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
    rng = np.random.default_rng(seed)
    normal_scores, normal_map_list = [], []
    anomaly_scores, anomaly_maps, anomaly_masks = [], [], []
    simulated_steps = _spread(len(units), simulated_units) if calibration == "simulated" else set()
    with torch.inference_mode():
        for step, unit in enumerate(units):
            maps = normal_maps(unit).float().cpu()
            normal_scores.append(float(view_scores(maps).max()))
            normal_map_list.append(maps.numpy())
            if step not in simulated_steps:
                continue
            members = unit_views(unit)
            for repeat in range(simulated_per_image):
                index = members[repeat % len(members)]
                donor = views[(index + 1 + repeat) % len(views)]
                kind = KINDS[len(anomaly_scores) % len(KINDS)]
                anomaly = simulate(views[index], kind, rng, source=donor)
                amap = anomaly_map(unit, anomaly.image).float().cpu()
                anomaly_scores.append(float(view_scores(amap).max()))
                anomaly_maps.append(amap.numpy())
                anomaly_masks.append(anomaly.mask[None])
    if calibration == "simulated" and anomaly_scores:
        return thresholds_from_simulation(
            normal_scores, normal_map_list, anomaly_scores, anomaly_maps, anomaly_masks, max_false_alarm_rate
        )
    return thresholds_from_normal(normal_scores, normal_map_list, max_false_alarm_rate)


def _spread(count: int, wanted: int | None) -> set[int]:
    """``wanted`` indices out of ``range(count)``, spread evenly (all of them when ``wanted`` is None)."""
    if wanted is None or wanted >= count:
        return set(range(count))
    return set(np.linspace(0, count - 1, max(wanted, 0)).round().astype(int).tolist())
