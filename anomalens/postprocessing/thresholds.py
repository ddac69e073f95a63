"""Automatic decision thresholds, chosen with no real defect labels.

At fit time each detector scores normal images it did not learn from (held back, or left out of the memory
bank). The user's one control is the largest false-alarm rate they accept: the image threshold is the lowest
cut that keeps new normal images below it with 90 % confidence, judged from those held-out scores (an
order statistic with a Clopper-Pearson bound where there are enough normals, a log-normal tolerance bound
beyond the highest score where there are not).

With simulated anomalies (``thresholds_from_simulation``) the same normal scores are set against scores of
the same images with synthetic defects put in; the best cut between the two is used where it is stricter
than the false-alarm bound. The scores are kept in the thresholds' details, so that what a user can expect
(:mod:`anomalens.postprocessing.rates`) is stored with the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import nct, norm

from anomalens.postprocessing.rates import BOUND_CONFIDENCE, exceedance_upper_bound
from anomalens.types import Thresholds

DEFAULT_MAX_FALSE_ALARM_RATE = 0.05


def tail_threshold(
    normal_scores: Sequence[float],
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
    confidence: float = BOUND_CONFIDENCE,
) -> float:
    """Upper tolerance bound on the score that a share ``max_false_alarm_rate`` of normal images exceeds, with
    probability ``confidence``, under a Gaussian fitted to the log-scores (the one-sided normal tolerance
    factor, from the noncentral t: a handful of normals gives a much wider, safer bound than a few hundred)."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("need at least one normal score to set a threshold")
    logs = np.log(np.maximum(scores, 1e-12))
    n = logs.size
    quantile = norm.ppf(1.0 - max_false_alarm_rate)
    # with fewer than 3 normals there is no spread to measure: a 10 % spread of the level is assumed, and the
    # factor is the one 3 normals would get
    effective = max(n, 3)
    factor = nct.ppf(confidence, df=effective - 1, nc=quantile * np.sqrt(effective)) / np.sqrt(effective)
    spread = logs.std(ddof=1) if n >= 3 else 0.1
    return float(np.exp(logs.mean() + factor * spread))


def false_alarm_threshold(
    normal_scores: Sequence[float],
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
    confidence: float = BOUND_CONFIDENCE,
) -> float:
    """Lowest threshold at which new normal images exceed it at most ``max_false_alarm_rate`` of the time, with
    probability ``confidence``, judged from held-out normal scores.

    Distribution-free where the normals allow it: the cut lets through as many of the highest normal scores as
    the Clopper-Pearson upper bound on their share permits. With too few normals for even zero exceedances to
    prove the rate (about 230 normals for 1 % at 90 %), a log-normal tolerance bound at the same confidence
    (``tail_threshold``) extrapolates beyond the highest score instead.
    """
    if not 0.0 < max_false_alarm_rate < 1.0:
        raise ValueError(f"the false-alarm rate must lie between 0 and 1 (exclusive), got {max_false_alarm_rate}")
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("need at least one normal score to set a threshold")
    n = scores.size
    allowed = -1
    while allowed + 1 < n and exceedance_upper_bound(allowed + 1, n, confidence) <= max_false_alarm_rate:
        allowed += 1
    if allowed < 0:
        return max(tail_threshold(scores, max_false_alarm_rate, confidence), float(np.nextafter(scores[0], np.inf)))
    # scores >= threshold are flagged: the cut lies just above the highest normal score that must pass
    passing = scores[allowed]
    return float(np.nextafter(passing, np.inf)) if allowed == 0 else float((passing + scores[allowed - 1]) / 2)


def thresholds_from_normal(
    normal_scores: Sequence[float],
    normal_maps: Sequence[np.ndarray],
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
    pixel_fraction: float = 1.0,
) -> Thresholds:
    """Image and pixel thresholds from scores and maps of held-back normal images.

    The pixel threshold sits ``pixel_fraction`` of the way from the typical normal pixel level (median of
    normal maps) up to the image threshold. At 1.0 (the default) a pixel is outlined when its own score
    reaches the image threshold: on magnetic tile this gave the best pixel F1 of the fractions 0.25-1.5;
    lower fractions outline large areas of normal surface around a defect.
    """
    image = false_alarm_threshold(normal_scores, max_false_alarm_rate)
    baseline = float(np.median(np.concatenate([m.ravel() for m in normal_maps]))) if normal_maps else 0.0
    pixel = baseline + pixel_fraction * (image - baseline)
    scores = np.asarray(normal_scores, dtype=np.float64)
    return Thresholds(
        image=image,
        pixel=pixel,
        method="normal-tail",
        details={
            "max_false_alarm_rate": max_false_alarm_rate,
            "pixel_fraction": pixel_fraction,
            "n_normal": int(scores.size),
            "normal_score_mean": float(scores.mean()),
            "normal_score_max": float(scores.max()),
            "normal_pixel_median": baseline,
            "normal_scores": _rounded(scores),
        },
    )


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


def thresholds_from_simulation(
    normal_scores: Sequence[float],
    normal_maps: Sequence[np.ndarray],
    anomaly_scores: Sequence[float],
    anomaly_maps: Sequence[np.ndarray],
    anomaly_masks: Sequence[np.ndarray],
    max_false_alarm_rate: float = DEFAULT_MAX_FALSE_ALARM_RATE,
) -> Thresholds:
    """Thresholds from held-out normals and simulated anomalies put into them (no real defect labels).

    Image: the best balanced-accuracy cut between normal and simulated-anomaly scores, raised to the
    false-alarm bound (``false_alarm_threshold``) where the cut would flag more normals than the user allows.
    Pixel: the best pixel F1 on the simulated masks, capped at the image threshold so an anomalous verdict
    always has a region.
    """
    from anomalens.evaluation.metrics import pixel_f1_max

    cut = best_balanced_threshold(normal_scores, anomaly_scores)
    normal_only = thresholds_from_normal(normal_scores, normal_maps, max_false_alarm_rate)
    image = max(cut, normal_only.image)
    pixel_f1, pixel = pixel_f1_max(
        [m.reshape(m.shape[-2:]) for m in anomaly_masks], [a.reshape(a.shape[-2:]) for a in anomaly_maps]
    )
    if np.isnan(pixel):
        pixel = image
    anomalies = np.asarray(anomaly_scores, dtype=np.float64)
    return Thresholds(
        image=image,
        pixel=min(float(pixel), image),
        method="simulated-anomalies",
        details={
            **normal_only.details,
            "normal_tail_image_threshold": normal_only.image,
            "n_simulated": int(anomalies.size),
            "balanced_cut": cut,
            "false_alarm_bound_applied": bool(normal_only.image > cut),
            "simulated_detected": float((anomalies >= image).mean()),
            "normal_passed": float((np.asarray(normal_scores) < image).mean()),
            "simulated_pixel_f1": float(pixel_f1),
            "simulated_scores": _rounded(anomalies),
        },
    )


def recheck_image_threshold(
    thresholds: Thresholds, learned_normal_scores: Sequence[float], max_rise: float
) -> Thresholds:
    """The image threshold chosen again with the scores of images an operator declared normal (once learned)
    beside the calibration's normals.

    The same rule as at fit time (the false-alarm bound, and the balanced cut against the simulated defects where
    the model has them), never below the fit's threshold and never more than ``max_rise`` (a fraction) above it,
    so that no set of marks, whoever made them, can loosen the model beyond that. The pixel threshold is kept,
    capped at the image threshold as at fit time. With no learned scores the fit's thresholds come back.
    """
    details = thresholds.details
    fitted = float(details.get("fitted_image_threshold", thresholds.image))
    fitted_pixel = float(details.get("fitted_pixel_threshold", thresholds.pixel))
    base = {key: value for key, value in details.items() if key not in _RECHECK_KEYS}
    normals = np.concatenate([np.asarray(details["normal_scores"], np.float64), learned_normal_scores])
    simulated = np.asarray(details.get("simulated_scores", []), dtype=np.float64)
    image = fitted
    if len(learned_normal_scores):
        image = false_alarm_threshold(normals, float(details.get("max_false_alarm_rate", DEFAULT_MAX_FALSE_ALARM_RATE)))
        if simulated.size:
            image = max(image, best_balanced_threshold(normals, simulated))
        # marks of normal images never make the model stricter than the fit (stored scores are rounded)
        image = max(image, fitted)
        base |= {
            "fitted_image_threshold": fitted,
            "fitted_pixel_threshold": fitted_pixel,
            "learned_normal_scores": _rounded(np.asarray(learned_normal_scores, dtype=np.float64)),
            "max_threshold_rise": max_rise,
            "threshold_rise_capped": bool(image > fitted * (1.0 + max_rise)),
        }
    capped = min(image, fitted * (1.0 + max_rise))
    if simulated.size:
        base["simulated_detected"] = float((simulated >= capped).mean())
        base["normal_passed"] = float((normals < capped).mean())
    return Thresholds(capped, min(fitted_pixel, capped), thresholds.method, base)


_RECHECK_KEYS = (
    "fitted_image_threshold",
    "fitted_pixel_threshold",
    "learned_normal_scores",
    "max_threshold_rise",
    "threshold_rise_capped",
)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
