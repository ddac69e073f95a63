"""Automatic thresholds for any detector: score held-out normal views, and the same views with simulated
defects put in, then hand the scores and maps to ``postprocessing.thresholds``.

Detectors differ only in how a held-out unit is scored (PatchCore leaves the unit's own patches out of its
memory bank; EfficientAD holds whole images back from training), so they pass that in as two callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

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

T = TypeVar("T")


# the typical normal pixel level is the median of one pixel in MEDIAN_STRIDE x MEDIAN_STRIDE of the normal maps:
# the maps are smoothed, so the rest add memory but not information
MEDIAN_STRIDE = 4


def calibrate(
    units: Sequence[int],
    normal_maps: Callable[[int], torch.Tensor],
    simulated: Sequence[tuple[int, Sequence[np.ndarray]]],
    anomaly_map: Callable[[int, np.ndarray], torch.Tensor],
    view_scores: Callable[[torch.Tensor], torch.Tensor],
    calibration: str = "simulated",
    simulated_per_image: int = 2,
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
    seed: int = 0,
) -> Thresholds:
    """Thresholds from held-out normal ``units`` (an image, or a group of views, per unit).

    ``normal_maps(unit)`` gives the [n,S,S] maps of a unit's views as they are. ``simulated`` lists the units
    that get simulated defects (``simulated_per_image`` each), with their views' pixels: ``anomaly_map(unit,
    pixels)`` gives the [1,S,S] map of one of those views with a defect put in. A bound on the false-alarm rate
    needs many normals, a cut between normals and simulated defects fewer, so callers may simulate in a subset.
    Kinds are cycled; the NSA kind takes its patch from the next view in ``simulated``.
    """
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
    rng = np.random.default_rng(seed)
    normal_scores, normal_pixels = [], []
    anomaly_scores, anomaly_maps, anomaly_masks = [], [], []
    with torch.inference_mode():
        for unit in units:
            maps = normal_maps(unit).float().cpu()
            normal_scores.append(float(view_scores(maps).max()))
            normal_pixels.append(maps[:, ::MEDIAN_STRIDE, ::MEDIAN_STRIDE].numpy().copy())
        if calibration == "simulated":
            views = [pixels for _, unit_views in simulated for pixels in unit_views]
            first = 0
            for unit, unit_views in simulated:
                for repeat in range(simulated_per_image):
                    index = first + repeat % len(unit_views)
                    donor = views[(index + 1 + repeat) % len(views)]
                    kind = KINDS[len(anomaly_scores) % len(KINDS)]
                    anomaly = simulate(views[index], kind, rng, source=donor)
                    amap = anomaly_map(unit, anomaly.image).float().cpu()
                    anomaly_scores.append(float(view_scores(amap).max()))
                    anomaly_maps.append(amap.numpy())
                    anomaly_masks.append(anomaly.mask[None])
                first += len(unit_views)
    if anomaly_scores:
        return thresholds_from_simulation(
            normal_scores, normal_pixels, anomaly_scores, anomaly_maps, anomaly_masks, max_false_alarm_rate
        )
    return thresholds_from_normal(normal_scores, normal_pixels, max_false_alarm_rate)


def spread_evenly(items: Sequence[T], wanted: int) -> list[T]:
    """At most ``wanted`` of ``items``, spread evenly over them (all of them when there are no more)."""
    if wanted >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, max(wanted, 0)).round().astype(int)]
