"""The offline explainer (explain, answer) on hand-built findings, and findings/explanations in api.inspect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from anomalens import api
from anomalens.cli.output import results_table
from anomalens.explanation import answer, explain
from anomalens.models import PatchCore
from anomalens.results.record import InspectionRecord
from anomalens.types import Prediction, Thresholds
from conftest import build_record

H, W = 90, 120
THRESHOLDS = Thresholds(image=1.0, pixel=0.5, method="test")


def findings_for(boxes: list[tuple[slice, slice, float]], image: np.ndarray | None = None, score: float = 1.7):
    """The record of an anomalous prediction with one square region per (rows, cols, peak)."""
    amap = np.full((H, W), 0.1, np.float32)
    for rows, cols, peak in boxes:
        amap[rows, cols] = peak
    mask = amap >= THRESHOLDS.pixel
    image = np.full((H, W, 3), 0.5, np.float32) if image is None else image
    return api.inspection_record("part.png", image, Prediction(score, amap, bool(mask.any()), mask, THRESHOLDS), 1.0)


@pytest.fixture
def normal():
    amap = np.full((H, W), 0.1, np.float32)
    return api.inspection_record(
        "part.png", None, Prediction(0.82, amap, False, np.zeros((H, W), bool), THRESHOLDS), 1.0
    )


@pytest.fixture
def two():
    """A strong dark elongated bar at the bottom left and a weaker square at the top right."""
    image = np.full((H, W, 3), 0.5, np.float32)
    image[75:79, 5:35] = 0.1
    return findings_for([(slice(75, 79), slice(5, 35), 1.8), (slice(8, 16), slice(95, 103), 1.1)], image)


def test_explain_anomalous(two):
    text = explain(two)
    assert text.startswith("Yes, there is an anomaly in the image: 2 regions")
    assert "bottom left" in text and "top right" in text
    assert "darker than its surroundings" in text and "elongated" in text
    assert "severity: high" in text and "severity: low" in text
    # the strongest region is described first
    assert text.index("bottom left") < text.index("top right")
    assert explain(InspectionRecord.model_validate_json(json.dumps(two.to_dict()))) == text
    assert two.explanation.text == text


def test_explain_one_region_and_normal(normal):
    one = findings_for([(slice(40, 50), slice(50, 60), 3.0)])
    text = explain(one)
    assert "1 region," in text and "It is in the center" in text and "severity: critical" in text
    assert "compact" in text and "about the same brightness" in text
    assert explain(normal) == "No, the image looks normal (score 0.82 of the threshold)."


def test_explain_never_names_a_defect_type(two):
    text = explain(two).lower()
    for word in ("scratch", "crack", "stain", "dent", "contamination", "hole", "because"):
        assert word not in text


def test_answer_standard_questions(two, normal):
    assert answer("Is there any anomaly in the image?", two).startswith("Yes")
    assert answer("is there any defect?", two).startswith("Yes")
    assert answer("Is there any anomaly in the image?", normal).startswith("No")
    where = answer("Where?", two)
    assert "at the bottom left" in where and "at the top right" in where
    assert where.index("bottom left") < where.index("top right")
    assert (
        answer("Where is the anomaly?", findings_for([(slice(40, 50), slice(50, 60), 3.0)]))
        == "The anomaly is in the center of the image."
    )
    assert "nothing to locate" in answer("WHERE is the defect located?", normal)
    assert "2 regions" in answer("How many?", two)
    assert "There is 1 region" in answer(
        "how many anomalies are there", findings_for([(slice(40, 50), slice(50, 60), 3.0)])
    )
    assert "no anomalous regions" in answer("How many?", normal)
    size = answer("How large is it?", two)
    assert "120 pixels" in size and "64 pixels" in size and "1.7%" in size
    assert "high" in answer("How severe is it?", two)
    other = answer("What colour is the sky?", two)
    assert "anomalous" in other and "I can answer" in other


def test_inspect_writes_findings_and_explanations(textures, png_writer, tmp_path):
    detector = PatchCore(image_size=64, min_bank_size=256, augment_below=4)
    detector.fit(textures.normals([(64, 80)] * 4, first_seed=0))
    good = tmp_path / "in" / "good.png"
    spot = tmp_path / "in" / "spot.png"
    png_writer(good, textures.normal(64, 80, seed=50))
    image, _ = textures.defect(textures.normal(64, 80, seed=51), "blob", center=(48, 14), size=9)
    png_writer(spot, image)
    run = api.inspect(detector, [good, spot], tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved) == 2
    for record in saved:  # the result contract: image, anomalous, score, regions, explanation {text, source}
        assert {"image", "anomalous", "score", "regions", "explanation"} <= set(record)
        assert record["region_count"] == len(record["regions"])
        assert (len(record["regions"]) > 0) == record["anomalous"]
        assert all({"grid", "bbox", "area_fraction", "severity"} <= set(r) for r in record["regions"])
        assert record["explanation"]["source"] == "offline"
        assert record["explanation"]["text"].startswith("Yes" if record["anomalous"] else "No")
    # the planted blob is found, and its strongest region's box holds the blob's centre (x=14, y=48)
    assert saved[1]["anomalous"] and not saved[0]["anomalous"]
    x0, y0, x1, y1 = saved[1]["regions"][0]["bbox"]
    assert x0 <= 14 < x1 and y0 <= 48 < y1
    assert saved[1]["regions"][0]["position"] in saved[1]["explanation"]["text"]
    line = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert "regions" in line and "explanation" in line
    console = Console(width=200, record=True)
    console.print(results_table(run.results))
    table = console.export_text()
    assert "regions" in table and "where" in table
    assert saved[1]["regions"][0]["position"] in table


def test_types_from_a_taxonomy_reach_the_text_the_answers_and_the_prompt():
    from anomalens.explanation.llm.prompts import findings_text
    from anomalens.explanation.offline import answer, explain

    region = {
        "position": "bottom left",
        "grid": ["bottom left"],
        "area_fraction": 0.02,
        "severity": "high",
        "brightness": "darker",
        "appearance": ["darker"],
        "shape": "compact",
    }
    typed = build_record(regions=[{**region, "defect_type": "blowhole", "type_confidence": 0.83}])
    assert "looks most like blowhole (type confidence 0.83)" in explain(typed)
    assert answer("What kind of defect is it?", typed) == "The region looks most like blowhole (type confidence 0.83)."
    assert "type by the user's examples: blowhole (confidence 0.83)" in findings_text(typed)
    unknown = build_record(regions=[{**region, "defect_type": "unknown", "type_confidence": 0.4}])
    assert "matches none of the known defect types" in explain(unknown)
    untyped = build_record(regions=[region])
    assert "looks most like" not in explain(untyped)
    assert "--taxonomy" in answer("What type is it?", untyped)


def test_the_record_type_writes_results_json_exactly_as_the_untyped_records_did():
    """Two entries of the demo's results.json written before the record became a type: read and written again,
    the bytes are the same (key order, rounding, keys left out)."""
    saved = (Path(__file__).parent / "data" / "results_before_record_type.json").read_text()
    records = [InspectionRecord.model_validate(entry) for entry in json.loads(saved)]
    assert records[0].regions and records[0].overlay and not records[1].anomalous
    assert json.dumps([record.to_dict() for record in records], indent=2) == saved
