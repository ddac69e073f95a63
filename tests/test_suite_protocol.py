"""The multi-product protocol: validation/report halves, the working scale chosen from the training images,
the false-alarm bound, and evaluation of a category without masks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalens.data import mvtec_samples
from anomalens.data.scale import MAX_SQUASH_ASPECT, choose_working_scale
from anomalens.data.splits import select_half, split_halves
from anomalens.evaluation.evaluate import evaluate, json_ready
from anomalens.models import PatchCore, load_detector
from anomalens.postprocessing.rates import exceedance_upper_bound
from anomalens.postprocessing.thresholds import false_alarm_threshold

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_suite = pytest.mark.skipif(not (DATA_ROOT / "ball_screw_drive").is_dir(), reason="suite data not present")


@needs_suite
@pytest.mark.parametrize("category", ["magnetic_tile", "ball_screw_drive", "solar_cell_poly"])
def test_halves_are_disjoint_stratified_and_fixed(category):
    samples = mvtec_samples(DATA_ROOT, category, "test")
    halves = split_halves(samples)
    validation, report = ({s.path for s in halves[h]} for h in ("validation", "report"))
    assert not validation & report
    assert validation | report == {s.path for s in samples}
    per_type = Counter(s.defect_type for s in samples)
    in_validation = Counter(s.defect_type for s in halves["validation"])
    for defect_type, count in per_type.items():  # every type split in two, the odd image to validation
        assert in_validation[defect_type] == (count + 1) // 2
    assert [s.path for s in split_halves(list(reversed(samples)))["report"]] == [s.path for s in halves["report"]]
    assert select_half(samples, "all") == list(samples)
    with pytest.raises(ValueError):
        select_half(samples, "test")


def test_working_scale_keeps_native_resolution_within_the_budget_and_tiles_long_frames():
    square = choose_working_scale([(300, 300)] * 5, pixel_budget=512 * 512)
    assert (square.image_size, square.tile_size) == (288, None)  # native, to the backbone's stride
    frames = choose_working_scale([(460, 1130)] * 3, pixel_budget=512 * 512)
    assert frames.tile_size == 460  # square tiles of the short side, aspect ratio kept
    assert frames.image_size == 320 and frames.scale == pytest.approx(320 / 460)
    # beyond the budget the image shrinks to it, uniformly
    shrunk = choose_working_scale([(2000, 2000)], pixel_budget=512 * 512)
    assert shrunk.image_size == 512 and shrunk.tile_size is None
    # a tile size the user sets is kept, seen at its own size up to the budget
    for tile, side in ((256, 256), (800, 512)):
        fixed = choose_working_scale([(720, 1280)], 512 * 512, tile_size=tile)
        assert (fixed.image_size, fixed.tile_size, fixed.chosen_by) == (side, tile, "settings")
    slightly_long = choose_working_scale([(300, int(300 * MAX_SQUASH_ASPECT))], pixel_budget=512 * 512)
    assert slightly_long.tile_size is None


def test_patchcore_at_defaults_sees_a_long_frame_at_its_own_scale_and_finds_a_small_defect(textures, tmp_path):
    train = textures.normals([(96, 320)] * 10, first_seed=0)
    detector = PatchCore().fit(train)  # defaults: the working scale comes from the images
    scale = detector.working_scale_
    assert scale.tile_size == 96 and scale.image_size == 128 and scale.source_shape == (96, 320)
    defective, mask = textures.defect(textures.normal(96, 320, seed=50), "blob", center=(48, 250), size=5)
    normal = textures.normal(96, 320, seed=51)
    found, passed = detector.predict(defective), detector.predict(normal)
    assert found.anomaly_map.shape == (96, 320)
    assert found.image_score > passed.image_score
    peak = np.unravel_index(np.argmax(found.anomaly_map), found.anomaly_map.shape)
    assert abs(peak[0] - 48) <= 16 and abs(peak[1] - 250) <= 16
    detector.save(tmp_path / "m")
    loaded = load_detector(tmp_path / "m")
    assert loaded.working_scale_ == scale
    assert loaded.predict(defective).image_score == pytest.approx(found.image_score, rel=1e-5)


def test_false_alarm_bound_holds_on_new_normals_and_widens_with_fewer():
    rng = np.random.default_rng(0)
    population = np.exp(rng.normal(0.0, 0.3, 200_000))
    for n in (100, 400, 2000):
        held_out = population[:n]
        threshold = false_alarm_threshold(held_out, 0.05)
        # the share of new normals above it stays under the target (90 % confidence: checked on one draw each)
        assert np.mean(population[n:] >= threshold) <= 0.05
        assert np.mean(held_out >= threshold) <= 0.05
    # a 1 % target cannot be proven from 100 normals: the fitted tail extrapolates past the highest of them
    few = population[:100]
    assert false_alarm_threshold(few, 0.01) > few.max()
    assert exceedance_upper_bound(0, 230) < 0.01 < exceedance_upper_bound(0, 200)
    for impossible in (0.0, 1.0, 5.0):  # a rate of 0 would flag nothing ever; refused, not silently inf
        with pytest.raises(ValueError):
            false_alarm_threshold(few, impossible)


def test_fit_stores_what_the_user_can_expect(textures):
    detector = PatchCore(image_size=96, max_false_alarm_rate=0.1).fit(textures.normals([(96, 96)] * 12, 0))
    expected = detector.thresholds_.expected
    assert expected["n_normal"] == 12
    assert 0.0 <= expected["false_alarm_rate"] <= 0.1 < expected["false_alarm_rate_bound"]
    assert 0.0 <= expected["simulated_detection_rate"] <= 1.0
    record = detector.predict(textures.normal(96, 96, seed=99)).to_dict()
    assert record["expected_false_alarm_rate"] == pytest.approx(expected["false_alarm_rate"], abs=1e-4)


def test_evaluation_without_masks_reports_pixel_metrics_as_absent(textures, tmp_path):
    root = tmp_path / "data" / "cells"
    for folder, seeds in (("train/good", range(10)), ("test/good", range(20, 24)), ("test/defect", range(30, 34))):
        (root / folder).mkdir(parents=True)
        for seed in seeds:
            image = textures.normal(96, 96, seed=seed)
            if folder.endswith("defect"):
                image = textures.defect(image, "blob", size=12, seed=seed)[0]
            cv2.imwrite(str(root / folder / f"{seed}.png"), (image * 255).astype(np.uint8))
    detector = PatchCore(image_size=96).fit(textures.normals([(96, 96)] * 10, 0))
    report = evaluate(detector, mvtec_samples(tmp_path / "data", "cells", "test"))
    assert report["has_masks"] is False
    assert np.isnan(report["pixel_auroc"]) and np.isnan(report["pixel_aupro_5"])
    assert report["image_auroc"] > 0.9
    written = json_ready(report)
    assert written["pixel_auroc"] is None and written["per_defect_type"]["defect"]["pixel_aupro"] is None
