"""Automatic decision thresholds, chosen with no real defect labels.

At fit time each detector scores normal images it did not learn from (held back, or left out of the memory
bank). The image threshold is placed in the upper tail of those scores at a chosen false-alarm rate: a
prediction bound for one new score under a Gaussian fitted to the log-scores (Student t, so that a handful
of normals gives a wider, safer bound than a few hundred). With a few dozen normals an empirical 99th
percentile would just be the maximum, while the fitted tail extrapolates smoothly.

With simulated anomalies (``thresholds_from_simulation``) the same normal scores are set against scores of
the same images with synthetic defects put in, and the threshold is the best cut between the two.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm, t

from anomalens.types import Thresholds

DEFAULT_FALSE_ALARM_RATE = 0.01
MIN_NORMALS_FOR_CUT = 5


def tail_threshold(normal_scores: Sequence[float], false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> float:
    """Score above which a fraction ``false_alarm_rate`` of normal images is expected to fall."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("need at least one normal score to set a threshold")
    logs = np.log(np.maximum(scores, 1e-12))
    n = logs.size
    if n < 3:  # too few to estimate a spread: assume a 10 % spread of the level
        return float(np.exp(logs.mean() + norm.ppf(1.0 - false_alarm_rate) * 0.1))
    bound = t.ppf(1.0 - false_alarm_rate, df=n - 1) * logs.std(ddof=1) * np.sqrt(1.0 + 1.0 / n)
    return float(np.exp(logs.mean() + bound))


def thresholds_from_normal(normal_scores: Sequence[float], normal_maps: Sequence[np.ndarray],
                           false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                           pixel_fraction: float = 1.0) -> Thresholds:
    """Image and pixel thresholds from scores and maps of held-back normal images.

    The pixel threshold sits ``pixel_fraction`` of the way from the typical normal pixel level (median of
    normal maps) up to the image threshold. At 1.0 (the default) a pixel is outlined when its own score
    reaches the image threshold: on magnetic tile this gave the best pixel F1 of the fractions 0.25-1.5
    (0.305 against 0.256 at 0.5); lower fractions outline large areas of normal surface around a defect.
    """
    image = tail_threshold(normal_scores, false_alarm_rate)
    baseline = float(np.median(np.concatenate([m.ravel() for m in normal_maps]))) if normal_maps else 0.0
    pixel = baseline + pixel_fraction * (image - baseline)
    scores = np.asarray(normal_scores, dtype=np.float64)
    return Thresholds(image=image, pixel=pixel, method="normal-tail",
                      details={"false_alarm_rate": false_alarm_rate, "pixel_fraction": pixel_fraction,
                               "n_normal": int(scores.size), "normal_score_mean": float(scores.mean()),
                               "normal_score_max": float(scores.max()), "normal_pixel_median": baseline})


def best_balanced_threshold(normal_scores: Sequence[float], anomaly_scores: Sequence[float]) -> float:
    """Threshold that maximises balanced accuracy (mean of the normal and anomalous hit rates).

    Balanced accuracy does not depend on how many anomalies were simulated per normal image. Among equally
    good cut points the middle one is taken, half-way between the neighbouring scores.
    """
    normal = np.sort(np.asarray(normal_scores, dtype=np.float64))
    anomalous = np.sort(np.asarray(anomaly_scores, dtype=np.float64))
    values = np.unique(np.concatenate([normal, anomalous]))
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    true_negative_rate = np.searchsorted(normal, cuts, side="left") / normal.size
    true_positive_rate = 1.0 - np.searchsorted(anomalous, cuts, side="left") / anomalous.size
    balanced = (true_negative_rate + true_positive_rate) / 2
    best = np.flatnonzero(balanced == balanced.max())
    return float(cuts[best[len(best) // 2]])


def thresholds_from_simulation(normal_scores: Sequence[float], normal_maps: Sequence[np.ndarray],
                               anomaly_scores: Sequence[float], anomaly_maps: Sequence[np.ndarray],
                               anomaly_masks: Sequence[np.ndarray],
                               false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> Thresholds:
    """Thresholds from held-out normals and simulated anomalies put into them (no real defect labels).

    Image: the best balanced-accuracy cut between normal and simulated-anomaly scores. Pixel: the best pixel
    F1 on the simulated masks, capped at the image threshold so an anomalous verdict always has a region.
    The normal-only threshold is kept in ``details`` for comparison.
    """
    from anomalens.evaluation.metrics import f1_max

    cut = best_balanced_threshold(normal_scores, anomaly_scores)
    normal_only = thresholds_from_normal(normal_scores, normal_maps, false_alarm_rate)
    # with a handful of normals the best cut sits right above the highest of them, and the next normal
    # image lands above it about as often as not: the normal-only bound is then the floor
    few_normals = len(normal_scores) < MIN_NORMALS_FOR_CUT
    image = max(cut, normal_only.image) if few_normals else cut
    masks = np.concatenate([m.ravel() for m in anomaly_masks]).astype(np.int8)
    values = np.concatenate([m.ravel() for m in anomaly_maps])
    pixel_f1, pixel = f1_max(masks, values) if masks.any() else (float("nan"), image)
    anomalies = np.asarray(anomaly_scores, dtype=np.float64)
    normals = np.asarray(normal_scores, dtype=np.float64)
    return Thresholds(image=image, pixel=min(float(pixel), image), method="simulated-anomalies",
                      details={**normal_only.details, "normal_tail_image_threshold": normal_only.image,
                               "n_simulated": int(anomalies.size), "balanced_cut": cut,
                               "normal_bound_as_floor": few_normals,
                               "simulated_detected": float((anomalies >= image).mean()),
                               "normal_passed": float((normals < image).mean()),
                               "simulated_pixel_f1": float(pixel_f1)})
