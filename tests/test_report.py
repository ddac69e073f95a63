"""The HTML report: summary counts, SVG charts, ROC/PR only with labels of both classes, embedded images."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import cv2
import numpy as np

from anomalens.cli.main import main
from anomalens.models import load_detector
from anomalens.reports.html import ReportItem, build_report, items_from_results, label_from_path
from conftest import build_record


def record(name: str, score: float, anomalous: bool, regions: list | None = None, text: str = "text"):
    return build_record(name, anomalous, regions, text, score=score, normalized_score=score / 2, image_threshold=2.0)


REGION = {
    "grid": ["top left", "top"],
    "position": "top left",
    "bbox": [0, 0, 5, 5],
    "area_fraction": 0.0123,
    "severity": "high",
    "defect_type": "crack",
    "type_confidence": 0.8,
}


def png_bytes(side: int, value: int) -> bytes:
    return cv2.imencode(".png", np.full((side, side, 3), value, np.uint8))[1].tobytes()


class Tags(HTMLParser):
    """Counts tags and collects every src/href, to check that nothing is loaded from elsewhere."""

    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.links += [v for k, v in attrs if k in ("src", "href")]


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def test_report_summarises_and_embeds_each_anomalous_image():
    items = [
        ReportItem(
            record("a/bad1.png", 5.0, True, [REGION], text="<script>alert(1)</script>"),
            png_bytes(800, 10),
            png_bytes(800, 200),
            label=1,
        ),
        ReportItem(record("a/bad2.png", 4.0, True, [REGION]), png_bytes(64, 10), None, label=1),
        ReportItem(record("a/ok1.png", 1.0, False), png_bytes(64, 10), png_bytes(64, 10), label=0),
        ReportItem(record("a/ok2.png", 4.5, True, [REGION]), b"not a picture", None, label=0),
    ]
    page = build_report(items)
    tags = parse(page)
    assert "<td>4</td><td>3</td><td>1</td><td>25.0%</td><td>75.0%</td>" in page  # counts, pass and fail rates
    assert tags.tags["svg"] == 3 and "ROC, AUROC 0.750" in page and "Precision-recall" in page
    assert tags.tags["article"] == 3 and "ok1.png" not in page  # a card per anomalous image only
    assert all(link.startswith("data:image/jpeg;base64,") for link in tags.links) and len(tags.links) == 3
    assert page.count("image: not available") == 1 and page.count("heatmap overlay: not available") == 2
    assert "<script>" not in page and "&lt;script&gt;" in page  # explanations are escaped
    assert "crack at the top left, top, 1.23% of the image, severity high (80% sure)" in page
    assert "<td style='text-align:left'>crack</td><td>3</td>" in page
    # thumbnails are shrunk so that the file stays small enough to mail
    data = re.search(r'data:image/jpeg;base64,([^"]+)', page).group(1)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    assert max(decoded.shape[:2]) == 320


def test_no_curves_without_labels_of_both_classes():
    unlabelled = build_report([ReportItem(record("x.png", 1.0, False)), ReportItem(record("y.png", 3.0, True))])
    assert parse(unlabelled).tags["svg"] == 1 and "no image has a label" in unlabelled
    one_class = build_report([ReportItem(record("x.png", 1.0, False), label=0)])
    assert "all of one class" in one_class
    empty = build_report([])
    assert "<td>0</td><td>0</td><td>0</td>" in empty and "<svg" not in empty


def test_labels_come_from_mvtec_paths():
    assert label_from_path("data/tile/test/good/1.png") == 0
    assert label_from_path("data/tile/test/crack/1.png") == 1
    assert label_from_path("inbox/1.png") is None


def test_cli_report_from_predict_results(tmp_path, demo_data, capsys):
    model, out = tmp_path / "model", tmp_path / "out"
    assert (
        main(
            [
                "fit",
                str(demo_data),
                "--category",
                "magnetic_tile",
                "-o",
                str(model),
                "--shots",
                "6",
                "--image-size",
                "96",
            ]
        )
        == 0
    )
    tests = demo_data / "magnetic_tile" / "test"
    assert (
        main(["predict", str(model), str(tests / "good"), str(tests / "fray"), str(tests / "blowhole"), "-o", str(out)])
        == 0
    )
    report = tmp_path / "report.html"
    assert main(["report", str(out), "-o", str(report)]) == 0
    assert "written to" in capsys.readouterr().out
    page = report.read_text()
    items = items_from_results(out / "results.json")
    assert [i.label for i in items] == [0] * 4 + [1] * 4
    verdicts = [i.record.anomalous for i in items]
    assert verdicts[:4] == [False] * 4 and any(verdicts[4:]), verdicts  # the default calibration passes good tiles
    n_anomalous = sum(verdicts)
    assert parse(page).tags.get("article", 0) == n_anomalous
    assert "ROC, AUROC" in page and page.count("<img") == 2 * n_anomalous
    assert all(link.startswith("data:") for link in parse(page).links)
    expected = load_detector(model).thresholds_.expected["false_alarm_rate"]  # the calibration's promise
    assert f"flagged {100 * expected:.1f}% of held-out good images" in page


def test_cli_report_rejects_a_file_that_is_not_results(tmp_path, capsys):
    bogus = tmp_path / "results.json"
    bogus.write_text('{"summary": {}}')
    assert main(["report", str(bogus), "-o", str(tmp_path / "r.html")]) == 2
    assert "not a results.json list" in capsys.readouterr().err


def test_the_drift_watch_shows_in_the_report_only_when_given():
    from anomalens.postprocessing.drift import DriftState, DriftTest

    items = [ReportItem(record("x.png", 1.0, False))]
    test, state = DriftTest(), DriftState()
    for score in [1.0] * test.baseline_images + [5.0] * 20:  # every later score above the whole baseline
        test.observe(state, score, True, expected_pass_rate=0.95)
    page = build_report(items, drift={"tiles": test.assess(state)})
    assert "Drift watch" in page and "WARNING" in page and "risen above" in page and "95.0%" in page
    assert "Drift watch" not in build_report(items)
