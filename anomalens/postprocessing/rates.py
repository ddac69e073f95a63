"""What a user can expect at a threshold, from the calibration scores a model keeps: the share of held-out normal
images it flags, an upper bound on that share for new ones, and the share of simulated defects it catches."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import beta

# how sure the false-alarm bound is: the rate on new normal images stays below the target with this probability
BOUND_CONFIDENCE = 0.9


def exceedance_upper_bound(exceedances: int, n: int, confidence: float = BOUND_CONFIDENCE) -> float:
    """Clopper-Pearson upper bound on a rate seen as ``exceedances`` out of ``n``."""
    return 1.0 if exceedances >= n else float(beta.ppf(confidence, exceedances + 1, n - exceedances))


def expected_rates(image_threshold: float, details: dict[str, Any]) -> dict[str, float]:
    """The rates at ``image_threshold`` from the calibration ``details`` of a model's thresholds (empty where
    they hold no calibration scores)."""
    # images an operator declared normal after the fit count as normals too
    normals = np.asarray(details.get("normal_scores", []) + details.get("learned_normal_scores", []), np.float64)
    expected: dict[str, float] = {}
    if normals.size:
        flagged = int((normals >= image_threshold).sum())
        expected["false_alarm_rate"] = flagged / normals.size
        expected["false_alarm_rate_bound"] = exceedance_upper_bound(flagged, int(normals.size))
        expected["n_normal"] = int(normals.size)
    if "simulated_detected" in details:
        expected["simulated_detection_rate"] = float(details["simulated_detected"])
    return expected
