"""extract_findings on hand-built predictions: regions, grid positions, shape, appearance, severity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomalens.postprocessing.findings import Findings, extract_findings, group_regions, severity_for
from anomalens.types import Prediction, Thresholds

H, W = 90, 120
THRESHOLDS = Thresholds(image=1.0, pixel=0.5, method="test")


def prediction(
    mask: np.ndarray, peaks: dict[int, float] | None = None, anomalous: bool | None = None, score: float = 1.5
) -> Prediction:
    """Map 0.1 outside the mask and 1.0 inside (or per-blob peaks via ``peaks``: label index -> value)."""
    from skimage import measure

    amap = np.full(mask.shape, 0.1, np.float32)
    amap[mask] = 1.0
    if peaks:
        labels = measure.label(mask, connectivity=2)
        for label, value in peaks.items():
            amap[labels == label] = value
    anomalous = bool(mask.any()) if anomalous is None else anomalous
    return Prediction(score, amap, anomalous, mask if anomalous else np.zeros_like(mask), THRESHOLDS)


def grey(value: float = 0.5) -> np.ndarray:
    return np.full((H, W, 3), value, np.float32)


def test_one_blob_bottom_left():
    mask = np.zeros((H, W), bool)
    mask[70:80, 10:20] = True  # rows 70..79, cols 10..19: bottom third, left third
    findings = extract_findings(prediction(mask), grey())
    assert findings.verdict == "anomalous" and findings.is_anomalous
    assert findings.count == 1
    region = findings.regions[0]
    assert region.position == "bottom left" and region.positions == ["bottom left"]
    assert region.box == (10, 70, 20, 80)
    assert region.area_pixels == 100
    assert region.area_fraction == pytest.approx(100 / (H * W))
    assert region.centroid == pytest.approx((14.5, 74.5))
    assert region.shape == "compact" and region.elongation == pytest.approx(1.0)
    assert findings.total_area_fraction == pytest.approx(100 / (H * W))


def test_horizontal_bar_across_the_top_is_elongated_and_spans_the_row():
    mask = np.zeros((H, W), bool)
    mask[10:14, 5:115] = True
    region = extract_findings(prediction(mask), grey()).regions[0]
    assert set(region.positions) == {"top left", "top", "top right"}
    assert region.position == "top"
    assert region.positions[0] == "top"  # the middle cell holds the largest share (40 of 110 cols)
    assert region.shape == "elongated" and region.elongation >= 3
    assert region.orientation_degrees == pytest.approx(0.0, abs=1.0)


def test_small_share_cells_are_left_out():
    mask = np.zeros((H, W), bool)
    mask[40:50, 37:60] = True  # 23 cols, 3 of them (13%) in the left third (x < 40)
    region = extract_findings(prediction(mask), grey()).regions[0]
    assert region.position == "center" and region.positions == ["center", "left"]
    mask[40:50, 37:39] = False  # 1 of 21 cols (5%) left: "left" no longer counts
    region = extract_findings(prediction(mask), grey()).regions[0]
    assert region.positions == ["center"]


def test_two_blobs_sorted_by_peak():
    mask = np.zeros((H, W), bool)
    mask[5:15, 5:15] = True  # label 1 (top left), weaker
    mask[60:80, 90:110] = True  # label 2 (bottom right), stronger
    findings = extract_findings(prediction(mask, peaks={1: 1.3, 2: 2.5}), grey())
    assert findings.count == 2
    assert [r.position for r in findings.regions] == ["bottom right", "top left"]
    assert [r.peak_score for r in findings.regions] == pytest.approx([2.5, 1.3])
    assert [r.index for r in findings.regions] == [0, 1]
    assert [r.severity for r in findings.regions] == ["critical", "medium"]
    assert findings.severity == "critical"


def test_darker_and_brighter_regions():
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True
    dark, bright = grey(), grey()
    dark[mask] = 0.2
    bright[mask] = 0.9
    region = extract_findings(prediction(mask), dark).regions[0]
    assert region.brightness == "darker" and region.appearance == ["darker"]
    assert region.mean_intensity == pytest.approx(0.2, abs=1e-4)
    assert region.surround_intensity == pytest.approx(0.5, abs=1e-4)
    assert region.intensity_difference == pytest.approx(-0.3, abs=1e-4)
    assert extract_findings(prediction(mask), bright).regions[0].appearance == ["brighter"]
    same = extract_findings(prediction(mask), grey()).regions[0]
    assert same.appearance == ["similar"] and same.intensity_difference == pytest.approx(0.0, abs=1e-6)


def test_red_spot_on_grey_is_other_colour():
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True
    image = grey(0.45)
    image[mask] = (0.85, 0.25, 0.2)  # luma ~0.42: about as bright as the grey around it
    region = extract_findings(prediction(mask), image).regions[0]
    assert "other colour" in region.appearance
    assert region.brightness == "similar"
    assert region.colour_difference > 0.05
    # a darker spot of the same grey is not "other colour"
    image = grey(0.45)
    image[mask] = 0.1
    assert "other colour" not in extract_findings(prediction(mask), image).regions[0].appearance


def test_tiny_specks_are_dropped():
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True  # 100 px, kept
    mask[2, 2] = mask[80, 110] = True  # single pixels
    mask[5:8, 100:103] = True  # 9 px < 16
    findings = extract_findings(prediction(mask), grey())
    assert findings.count == 1 and findings.regions[0].area_pixels == 100
    # min_area_fraction wins when it asks for more: 0.01 * 10800 = 108 px > 100 px; the only kept region is
    # then the largest, as the verdict is anomalous
    assert extract_findings(prediction(mask), grey(), min_area_fraction=0.01).regions[0].area_pixels == 100


def test_anomalous_with_only_a_speck_keeps_the_largest():
    mask = np.zeros((H, W), bool)
    mask[30, 30] = True
    mask[60:62, 60:62] = True
    findings = extract_findings(prediction(mask), grey())
    assert findings.count == 1
    assert findings.regions[0].area_pixels == 4 and findings.regions[0].box == (60, 60, 62, 62)


def test_anomalous_with_an_empty_mask_still_locates_the_peak():
    amap = np.full((H, W), 0.1, np.float32)
    amap[20:24, 100:104] = 0.9
    pred = Prediction(1.2, amap, True, np.zeros((H, W), bool), Thresholds(image=1.0, pixel=1.0, method="t"))
    findings = extract_findings(pred, grey())
    assert findings.count == 1 and findings.regions[0].position == "top right"


def test_normal_verdict_has_no_regions():
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True
    findings = extract_findings(prediction(mask, anomalous=False, score=0.8), grey())
    assert findings.verdict == "normal" and not findings.is_anomalous
    assert findings.count == 0 and findings.regions == [] and findings.severity == "none"
    assert findings.total_area_fraction == 0.0
    assert findings.normalized_score == pytest.approx(0.8)


@pytest.mark.parametrize(
    "relative, band",
    [
        (1.0, "low"),
        (1.249, "low"),
        (1.25, "medium"),
        (1.59, "medium"),
        (1.6, "high"),
        (2.19, "high"),
        (2.2, "critical"),
        (5.0, "critical"),
    ],
)
def test_severity_bands(relative, band):
    assert severity_for(relative) == band
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True
    region = extract_findings(prediction(mask, peaks={1: relative}), grey()).regions[0]
    assert region.severity == band and region.relative_peak == pytest.approx(relative)


def test_to_dict_is_json_and_works_without_an_image():
    mask = np.zeros((H, W), bool)
    mask[40:50, 50:60] = True
    mask[10:13, 5:115] = True
    for image in (grey(), None, grey()[..., 0]):
        findings = extract_findings(prediction(mask), image)
        data = json.loads(json.dumps(findings.to_dict(), allow_nan=False))
        assert data["count"] == 2 and data["verdict"] == "anomalous"
        assert set(data["regions"][0]) >= {
            "bbox",
            "area_pixels",
            "area_fraction",
            "centroid",
            "peak_score",
            "mean_score",
            "severity",
            "relative_peak",
            "grid",
            "position",
            "shape",
            "elongation",
            "orientation_degrees",
            "appearance",
            "mean_intensity",
            "surround_intensity",
            "intensity_difference",
        }
    assert extract_findings(prediction(mask), None).regions[0].appearance == []
    # no positive threshold: infinite relative peak, still JSON
    pred = prediction(mask)
    pred.thresholds = Thresholds(image=0.0, pixel=0.5, method="t")
    data = extract_findings(pred, grey()).to_dict()
    json.dumps(data, allow_nan=False)
    assert data["regions"][0]["severity"] == "critical" and data["normalized_score"] is None
    assert isinstance(Findings("normal", False, 0.1, 0.1).to_dict()["regions"], list)


def test_regions_touching_at_a_corner_are_one_region():
    mask = np.zeros((H, W), bool)
    mask[40:45, 40:45] = True
    mask[45:50, 45:50] = True  # meets the first square only diagonally
    findings = extract_findings(prediction(mask), grey())
    assert findings.count == 1 and findings.regions[0].area_pixels == 50
    assert findings.regions[0].box == (40, 40, 50, 50)


def test_parts_closer_than_the_merge_distance_are_one_region_with_all_their_pixels():
    mask = np.zeros((H, W), bool)
    mask[40:50, 20:30] = True
    mask[40:50, 36:46] = True  # a 6 px gap: under 0.16 x 90 = 14.4 px
    mask[40:50, 100:110] = True  # 54 px further: its own region
    findings = extract_findings(prediction(mask), grey())
    assert findings.count == 2
    pair = max(findings.regions, key=lambda r: r.area_pixels)
    assert pair.parts == 2 and pair.area_pixels == 200 and pair.box == (20, 40, 46, 50)
    assert findings.region_mask(pair).sum() == 200 and not (findings.region_mask(pair) & ~mask).any()
    apart = extract_findings(prediction(mask), grey(), merge_distance=0)
    assert apart.count == 3 and all(r.parts == 1 for r in apart.regions)
    serialised = json.loads(json.dumps(findings.to_dict()))["regions"]
    assert [r["parts"] for r in serialised] == [r.parts for r in findings.regions]  # the pair's 2, the lone 1
    assert sorted(r["parts"] for r in serialised) == [1, 2]


def test_grouping_a_large_mask_costs_its_pixels_not_the_merge_distance_squared():
    # 4000 px: the merge disc is 320 px in radius, which a disc-shaped dilation took many minutes to apply
    mask = np.zeros((4000, 4000), bool)
    mask[100:200, 100:200] = True
    mask[100:200, 500:600] = True  # 300 px away: under 0.16 x 4000 = 640 px, the same region
    mask[3800:3900, 3800:3900] = True  # thousands of pixels away: its own region
    labels = group_regions(mask)
    assert len(np.unique(labels[mask])) == 2 and labels[150, 150] == labels[150, 550] != labels[3850, 3850]
    assert not labels[~mask].any()
    findings = extract_findings(prediction(mask))
    boxes = sorted((r.parts, r.box) for r in findings.regions)
    assert boxes == [(1, (3800, 3800, 3900, 3900)), (2, (100, 100, 600, 200))]
