"""Threshold calibration with no real defect labels: normal-only tail bound and simulated anomalies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from anomalens.models import PatchCore
from anomalens.postprocessing.thresholds import best_balanced_threshold, tail_threshold, thresholds_from_simulation


def test_best_balanced_threshold_separates_two_groups_in_the_middle():
    assert best_balanced_threshold([1.0, 2.0, 3.0], [5.0, 6.0]) == pytest.approx(4.0)


def test_best_balanced_threshold_weighs_classes_equally():
    # one normal outlier at 10: passing 3 of 4 normals and catching all anomalies beats every higher cut
    threshold = best_balanced_threshold([1.0, 2.0, 3.0, 10.0], [6.0, 7.0, 8.0, 9.0])
    assert 3.0 < threshold <= 6.0


def test_tail_threshold_is_wider_with_fewer_normals():
    rng = np.random.default_rng(0)
    scores = np.exp(rng.normal(3.0, 0.1, 400))
    many = tail_threshold(scores, max_false_alarm_rate=0.01)
    assert np.isfinite(many)
    # the share of the true distribution above the bound is at most the rate, and with 400 normals not far below
    true_rate = float(norm.sf((np.log(many) - 3.0) / 0.1))
    assert 0.005 < true_rate <= 0.01, true_rate
    assert 0.0 < np.mean(scores > many) <= 0.01  # on the sample itself too
    few = scores[:5]
    logs = np.log(few)
    plain_gaussian = np.exp(logs.mean() + 2.326 * logs.std(ddof=1))
    # Student t with 4 degrees of freedom and the prediction term: 4.10 spreads above the mean instead of 2.33
    assert tail_threshold(few, max_false_alarm_rate=0.01) > plain_gaussian * np.exp(1.5 * logs.std(ddof=1))


def test_simulated_thresholds_keep_the_normal_only_figure_and_cap_the_pixel_threshold():
    normal_maps = [np.full((1, 8, 8), 1.0, np.float32)]
    masks = [np.zeros((1, 8, 8), bool)]
    masks[0][0, 2:4, 2:4] = True
    anomaly_maps = [np.where(masks[0], 9.0, 1.0).astype(np.float32)]
    thresholds = thresholds_from_simulation([1.0, 1.2, 1.1, 0.9], normal_maps, [9.0], anomaly_maps, masks)
    assert thresholds.method == "simulated-anomalies"
    assert 1.2 < thresholds.image < 9.0
    assert thresholds.pixel <= thresholds.image
    assert thresholds.details["normal_tail_image_threshold"] > 1.2
    assert thresholds.details["simulated_detected"] == 1.0 and thresholds.details["normal_passed"] == 1.0


def test_patchcore_simulated_calibration_sits_between_normals_and_defects(textures):
    train = textures.normals([(96, 96)] * 10, first_seed=0)
    simulated = PatchCore(image_size=96, min_bank_size=512, calibration="simulated").fit(train)
    normal_only = PatchCore(image_size=96, min_bank_size=512, calibration="normal").fit(train)
    details = simulated.thresholds_.details
    assert simulated.thresholds_.method == "simulated-anomalies"
    assert details["n_simulated"] == 2 * 10
    assert details["normal_score_mean"] < simulated.thresholds_.image
    # the same normal scores give the same normal-only figure either way
    assert details["normal_tail_image_threshold"] == pytest.approx(normal_only.thresholds_.image)
    # planted defects that the normal-only bound misses are still caught by the simulated threshold
    found = [
        simulated.predict(
            textures.defect(textures.normal(96, 96, seed=100 + k), "blob", center=(48, 48), size=10)[0]
        ).is_anomalous
        for k in range(4)
    ]
    assert all(found)
