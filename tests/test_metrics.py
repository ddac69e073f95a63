"""Metrics checked against values worked out by hand and against slow reference implementations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomalens.evaluation.metrics import (
    f1_max,
    image_auroc,
    oracle_accuracy,
    pixel_aupro,
    pixel_auroc,
    pixel_f1,
    pixel_f1_max,
    threshold_metrics,
)

# A small image set used by several hand-worked cases:
#   scores: 0.1 0.3 0.4 0.6 0.7 0.9
#   labels:  0   0   1   1   0   1
LABELS = [0, 0, 1, 1, 0, 1]
SCORES = [0.1, 0.3, 0.4, 0.6, 0.7, 0.9]


# ------------------------------------------------------------------------------------------- image AUROC
def test_image_auroc_counts_pairs():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won = (0.35>0.1) + (0.8>0.1) + (0.8>0.4) = 3 of 4.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_image_auroc_ties_count_half():
    # negatives 0.2, 0.5; positives 0.5, 0.7, 0.1
    # 0.5: beats 0.2 (1), ties 0.5 (0.5); 0.7: beats both (2); 0.1: beats none (0) -> 3.5 / 6
    assert image_auroc([0, 0, 1, 1, 1], [0.2, 0.5, 0.5, 0.7, 0.1]) == pytest.approx(3.5 / 6)


def test_image_auroc_perfect_and_inverted():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert image_auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert image_auroc([0, 1, 0, 1], [5, 5, 5, 5]) == 0.5


def test_image_auroc_single_class_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
        assert math.isnan(image_auroc([1, 1], [0.1, 0.2]))


# ------------------------------------------------------------------------------------------- pixel AUROC
def test_pixel_auroc_hand_case_with_ties_over_different_shapes():
    # Same numbers as the image tie case, split over a 1x3 and a 2x1 image: 3.5 / 6.
    masks = [np.array([[0, 1, 1]]), np.array([[0], [1]])]
    maps = [np.array([[0.2, 0.5, 0.7]]), np.array([[0.5], [0.1]])]
    assert pixel_auroc(masks, maps) == pytest.approx(3.5 / 6)


def test_pixel_auroc_matches_sklearn_on_concatenated_pixels():
    rng = np.random.default_rng(0)
    shapes = [(17, 23), (40, 9)]
    masks = [rng.random(s) < 0.2 for s in shapes]
    # Rounded maps give plenty of ties; signal makes it non-trivial.
    maps = [np.round(rng.random(s) + 0.3 * m, 2).astype(np.float32) for s, m in zip(shapes, masks)]
    expected = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps]))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_more_positives_than_negatives():
    # Here the negatives are the smaller class and get sorted (the test above sorts the positives).
    rng = np.random.default_rng(1)
    masks = [rng.random((30, 30)) < 0.8, rng.random((10, 50)) < 0.8]
    maps = [np.round(rng.random(m.shape) + 0.2 * m, 2) for m in masks]
    expected = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps]))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_perfect_inverted_and_one_class():
    mask = np.array([[0, 0], [1, 1]])
    assert pixel_auroc([mask], [np.array([[0.1, 0.2], [0.8, 0.9]])]) == 1.0
    assert pixel_auroc([mask], [np.array([[0.8, 0.9], [0.1, 0.2]])]) == 0.0
    assert math.isnan(pixel_auroc([np.zeros((3, 3))], [np.ones((3, 3))]))


def test_pixel_inputs_are_not_modified_and_shapes_checked():
    mask = np.array([[0, 1], [1, 0]])
    amap = np.array([[0.9, 0.1], [0.5, 0.3]], dtype=np.float32)
    before = amap.copy()
    pixel_auroc([mask], [amap])
    pixel_aupro([mask], [amap])
    np.testing.assert_array_equal(amap, before)
    with pytest.raises(ValueError):
        pixel_auroc([mask], [np.zeros((2, 3))])
    with pytest.raises(ValueError):
        pixel_aupro([mask, mask], [amap])


# -------------------------------------------------------------------------------------------- AU-PRO
def _reference_aupro(masks, maps, fpr_limit):
    """Slow, direct definition: loop over every distinct map value as a threshold."""
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity
    regions = []  # (image index, boolean region mask)
    for i, m in enumerate(masks):
        lab, k = ndimage.label(np.asarray(m) > 0, structure=structure)
        regions += [(i, lab == r) for r in range(1, k + 1)]
    normals = [np.asarray(m) == 0 for m in masks]
    n_normal = sum(int(n.sum()) for n in normals)
    thresholds = np.unique(np.concatenate([np.ravel(a) for a in maps]))[::-1]
    points = [(0.0, 0.0)]
    for t in thresholds:
        fp = sum(int((a[n] >= t).sum()) for a, n in zip(maps, normals))
        pro = np.mean([(maps[i][r] >= t).mean() for i, r in regions])
        points.append((fp / n_normal, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def _blob_masks(rng, shapes, max_blobs=3, max_radius=6):
    masks = []
    for h, w in shapes:
        yy, xx = np.ogrid[:h, :w]
        mask = np.zeros((h, w), dtype=bool)
        for _ in range(rng.integers(0, max_blobs + 1)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(1, max_radius + 1)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        masks.append(mask)
    return masks


def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(2)
    masks = _blob_masks(rng, [(20, 30), (25, 25), (16, 40)], max_blobs=3)
    masks[0][2:5, 2:5] = True  # at least one region
    maps = [np.where(m, 1.0 + rng.random(m.shape), rng.random(m.shape)) for m in masks]
    assert pixel_aupro(masks, maps) == pytest.approx(1.0)
    assert pixel_aupro(masks, maps, fpr_limit=0.05) == pytest.approx(1.0)
    # and a perfectly inverted map detects no region pixel before every normal pixel is flagged
    assert pixel_aupro(masks, [-a for a in maps]) == pytest.approx(0.0)


def test_aupro_hand_worked_two_regions():
    # Image 1 (1x6): region A = 2 pixels scored 0.9; 4 normal pixels: one at 0.5, three at 0.1.
    # Image 2 (2x4): region B = pixels (0,0)=0.5 and (1,0)=0.2; 6 normal pixels: two at 0.3, four at 0.1.
    # Image 3 (3x3): empty mask, all 9 normals at 0.05 (only adds to the normal pixel count).
    # Normal pixels: 4 + 6 + 9 = 19. Walking the thresholds down:
    #   t=0.9: PRO = (1 + 0)/2 = 0.5,  FPR 0
    #   t=0.5: PRO = (1 + 0.5)/2 = 0.75, FPR 1/19      (B's first pixel ties a normal pixel -> sloped)
    #   t=0.3: PRO 0.75, FPR 3/19
    #   t=0.2: PRO 1.0,  FPR 3/19
    #   lower thresholds only add normal pixels.
    mask1 = np.array([[1, 1, 0, 0, 0, 0]])
    map1 = np.array([[0.9, 0.9, 0.5, 0.1, 0.1, 0.1]])
    mask2 = np.array([[1, 0, 0, 0], [1, 0, 0, 0]])
    map2 = np.array([[0.5, 0.3, 0.3, 0.1], [0.2, 0.1, 0.1, 0.1]])
    mask3 = np.zeros((3, 3))
    map3 = np.full((3, 3), 0.05)
    masks, maps = [mask1, mask2, mask3], [map1, map2, map3]
    n = 19
    # fpr_limit = 0.5/19: halfway along the first sloped segment, PRO there = 0.625.
    lim = 0.5 / n
    assert pixel_aupro(masks, maps, fpr_limit=lim) == pytest.approx((lim * (0.5 + 0.625) / 2) / lim)
    # fpr_limit = 0.3: trapezoid (0,0.5)-(1/19,0.75), flat 0.75 to 3/19, flat 1.0 from 3/19 to 0.3.
    area = (1 / n) * (0.5 + 0.75) / 2 + (2 / n) * 0.75 + (0.3 - 3 / n) * 1.0
    assert pixel_aupro(masks, maps, fpr_limit=0.3) == pytest.approx(area / 0.3)
    assert pixel_aupro(masks, maps, fpr_limit=0.3) == pytest.approx(_reference_aupro(masks, maps, 0.3))


def test_aupro_regions_are_8_connected():
    # p1=(0,0) and p2=(1,1) touch diagonally -> one region of 2; p3=(3,3) alone -> a second region.
    mask = np.zeros((4, 4), dtype=int)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = 1
    amap = np.full((4, 4), 0.1)
    amap[0, 0] = amap[3, 3] = 1.0
    amap[1, 1] = 0.0  # found only after all normal pixels
    # PRO = (1/2 + 1)/2 = 0.75 from FPR 0 up to FPR 1 (with 4-connectivity it would be 2/3).
    assert pixel_aupro([mask], [amap], fpr_limit=0.3) == pytest.approx(0.75)


def test_aupro_no_regions_is_nan_and_limit_checked():
    assert math.isnan(pixel_aupro([np.zeros((4, 4))], [np.random.rand(4, 4)]))
    assert math.isnan(pixel_aupro([], []))
    with pytest.raises(ValueError):
        pixel_aupro([np.ones((2, 2))], [np.ones((2, 2))], fpr_limit=0.0)


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force_reference(quantize, fpr_limit):
    rng = np.random.default_rng(3 + int(quantize))
    shapes = [(20, 30), (25, 25), (16, 40), (12, 12), (30, 18)]
    masks = _blob_masks(rng, shapes)
    masks[1][3:8, 4:9] = True
    masks[3][:] = False  # one defect-free image
    maps = [rng.random(s) + 0.6 * ndimage.gaussian_filter(m.astype(float), 1.5) for s, m in zip(shapes, masks)]
    if quantize:  # many ties between region and normal pixels; negative scores, -0.0 and +0.0 among them
        maps = [np.round(a - 0.8, 1) for a in maps]
        assert any(np.signbit(a[a == 0]).any() for a in maps) and any((a > 0).any() for a in maps)
    maps = [a.astype(np.float32) for a in maps]
    got = pixel_aupro(masks, maps, fpr_limit=fpr_limit)
    assert got == pytest.approx(_reference_aupro(masks, maps, fpr_limit), abs=1e-3)
    assert 0.0 < got < 1.0


def test_aupro_runs_on_250_full_size_maps():
    rng = np.random.default_rng(4)
    shapes = [(256, 256)] * 250
    masks = _blob_masks(rng, shapes, max_blobs=3, max_radius=25)
    maps = [(rng.random(m.shape, dtype=np.float32) + 0.5 * m).astype(np.float32) for m in masks]
    value = pixel_aupro(masks, maps)
    assert 0.0 < value <= 1.0


# ------------------------------------------------------------------------ thresholds, F1 and accuracy
def test_pixel_f1_max_is_the_pooled_f1_max():
    rng = np.random.default_rng(3)
    masks = [rng.random(shape) < 0.2 for shape in [(17, 23), (30, 11), (5, 5)]]
    # coarse levels, so that many pixels of both classes tie
    maps = [(np.round(rng.random(m.shape) * 12) / 12 + 0.3 * m).astype(np.float32) for m in masks]
    pooled = f1_max(np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps]))
    assert pixel_f1_max(masks, maps) == pytest.approx(pooled, rel=1e-12)
    assert np.isnan(pixel_f1_max([np.zeros((4, 4), bool)], [np.ones((4, 4), np.float32)])[0])


def test_f1_max_hand_case():
    # threshold: 0.9 -> 2/4=0.5, 0.7 -> 0.4, 0.6 -> 2/3, 0.4 -> tp3 fp1 fn0 = 6/7, 0.3 -> 0.75, 0.1 -> 2/3
    f1, threshold = f1_max(LABELS, SCORES)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.4)


def test_f1_max_without_anomalies_is_nan():
    f1, threshold = f1_max([0, 0], [0.2, 0.4])
    assert math.isnan(f1) and math.isnan(threshold)


def test_threshold_metrics_hand_case():
    m = threshold_metrics(LABELS, SCORES, 0.5)
    # predicted anomalous: 0.6 (1), 0.7 (0), 0.9 (1); predicted normal: 0.1 (0), 0.3 (0), 0.4 (1)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["false_positive_rate"] == pytest.approx(1 / 3)
    # the threshold itself counts as anomalous
    m = threshold_metrics(LABELS, SCORES, 0.4)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 2, 0)


def test_threshold_metrics_zero_division_is_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = threshold_metrics(LABELS, SCORES, 2.0)  # nothing predicted anomalous
        assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
        assert m["accuracy"] == pytest.approx(0.5)
        m = threshold_metrics([0, 0], [0.1, 0.2], 0.15)  # no anomalous images
        assert m["recall"] == 0.0 and m["false_positive_rate"] == pytest.approx(0.5)
        m = threshold_metrics([1, 1], [0.1, 0.2], 0.0)  # no normal images
        assert m["false_positive_rate"] == 0.0 and m["accuracy"] == 1.0


def test_oracle_accuracy_hand_case():
    # inf -> 3/6, 0.9 -> 4/6, 0.7 -> 3/6, 0.6 -> 4/6, 0.4 -> 5/6, 0.3 -> 4/6, 0.1 -> 3/6
    acc, threshold = oracle_accuracy(LABELS, SCORES)
    assert acc == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.4)
    assert threshold_metrics(LABELS, SCORES, threshold)["accuracy"] == pytest.approx(acc)


def test_oracle_accuracy_may_call_everything_normal():
    # inf -> 2/3, 0.9 -> 1/3, 0.1 -> 0/3, 0.05 -> 1/3
    acc, threshold = oracle_accuracy([0, 0, 1], [0.9, 0.1, 0.05])
    assert acc == pytest.approx(2 / 3)
    assert threshold == math.inf


def test_oracle_accuracy_single_class():
    assert oracle_accuracy([0, 0], [0.3, 0.1]) == (1.0, math.inf)
    assert oracle_accuracy([1, 1], [0.3, 0.1]) == (1.0, 0.1)


def test_pixel_f1_pooled_hand_case():
    masks = [np.array([[1, 1], [0, 0]]), np.array([[0, 1, 0]])]
    maps = [np.array([[0.9, 0.2], [0.6, 0.1]]), np.array([[0.5, 0.5, 0.0]])]
    # threshold 0.5: image 1 tp1 (0.9) fn1 (0.2) fp1 (0.6); image 2 tp1 fp1 -> tp2 fp2 fn1 -> 4/7
    assert pixel_f1(masks, maps, 0.5) == pytest.approx(4 / 7)
    assert pixel_f1([np.zeros((2, 2))], [np.zeros((2, 2))], 0.5) == 0.0
