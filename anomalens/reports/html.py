"""A self-contained HTML report of inspection results: summary, score histogram, ROC and PR curves when labels
exist, defect types, and a card per anomalous image. Images are embedded as data URLs, charts are inline SVG,
so the one file can be mailed.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import TypeAdapter, ValidationError
from sklearn.metrics import precision_recall_curve, roc_curve

from anomalens.evaluation.metrics import image_auroc
from anomalens.postprocessing.drift import DriftAssessment
from anomalens.results.record import InspectionRecord, RegionRecord

RESULTS_FILE = TypeAdapter(list[InspectionRecord])
THUMBNAIL_SIDE = 320
CHART_W, CHART_H, PAD = 360, 220, 36


@dataclass
class ReportItem:
    """One result record (``results.json`` entry) with its images as encoded files and its label if known."""

    record: InspectionRecord
    image_png: bytes | None = None
    overlay_png: bytes | None = None
    label: int | None = None  # 1 defective, 0 good, None unknown


def label_from_path(image: str) -> int | None:
    """The label of an MVTec-layout test image: ``.../test/good/x.png`` is 0, ``.../test/<type>/x.png`` 1."""
    parts = Path(image).parts
    if len(parts) >= 3 and parts[-3] == "test":
        return 0 if parts[-2] == "good" else 1
    return None


def _thumbnail(encoded: bytes) -> bytes | None:
    """A JPEG at most THUMBNAIL_SIDE pixels wide or high (keeps a report of hundreds of images mailable);
    None when the image cannot be decoded."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = THUMBNAIL_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def _img(encoded: bytes | None, alt: str) -> str:
    thumbnail = _thumbnail(encoded) if encoded is not None else None
    if thumbnail is None:
        return f'<div class="missing">{html.escape(alt)}: not available</div>'
    data = base64.b64encode(thumbnail).decode()
    return f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(alt)}">'


def _svg_frame(title: str, x_label: str, y_label: str, body: str, caption: str = "") -> str:
    """A chart: an SVG with frame and axis labels, in a figure captioned with its title (and ``caption``)."""
    svg = (
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
        f'<rect x="{PAD}" y="8" width="{CHART_W - PAD - 8}" height="{CHART_H - PAD - 8}" class="frame"/>'
        f'{body}<text x="{CHART_W / 2}" y="{CHART_H - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
        f'<text x="12" y="{(CHART_H - PAD) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(CHART_H - PAD) / 2})">{html.escape(y_label)}</text></svg>'
    )
    return f"<figure>{svg}<figcaption><b>{html.escape(title)}</b>{caption}</figcaption></figure>"


def _xy(x: float, y: float) -> tuple[float, float]:
    """Unit square -> chart pixels."""
    return PAD + x * (CHART_W - PAD - 8), 8 + (1 - y) * (CHART_H - PAD - 8)


def _curve_svg(title: str, x_label: str, y_label: str, xs: np.ndarray, ys: np.ndarray, diagonal: bool) -> str:
    points = " ".join("{:.1f},{:.1f}".format(*_xy(float(x), float(y))) for x, y in zip(xs, ys))
    guide = ""
    if diagonal:
        (x0, y0), (x1, y1) = _xy(0, 0), _xy(1, 1)
        guide = f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" class="guide"/>'
    ticks = (
        f'<text x="{PAD}" y="{CHART_H - 20}" text-anchor="middle">0</text>'
        f'<text x="{CHART_W - 8}" y="{CHART_H - 20}" text-anchor="middle">1</text>'
        f'<text x="{PAD - 4}" y="16" text-anchor="end">1</text>'
    )
    return _svg_frame(title, x_label, y_label, f'{guide}<polyline points="{points}" class="curve"/>{ticks}')


def histogram_svg(scores: list[float], labels: list[int | None], threshold: float | None, bins: int = 20) -> str:
    """Score histogram; with labels, good and defective images as two stacked colours; the threshold marked."""
    values = np.asarray(scores, float)
    edges = np.histogram_bin_edges(values, bins=bins)
    span = edges[-1] - edges[0] or 1.0
    groups = {
        "good": [s for s, label in zip(scores, labels) if label == 0],
        "defective": [s for s, label in zip(scores, labels) if label == 1],
        "unlabelled": [s for s, label in zip(scores, labels) if label is None],
    }
    counts = {name: np.histogram(v, bins=edges)[0] for name, v in groups.items()}
    top = max(1, int(sum(counts.values()).max()))
    width = (CHART_W - PAD - 8) / bins
    bars = []
    for i in range(bins):
        bottom = 0
        for name, c in counts.items():
            if c[i]:
                x, y = _xy(i / bins, (bottom + c[i]) / top)
                height = c[i] / top * (CHART_H - PAD - 8)
                bars.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{width - 1:.1f}" height="{height:.1f}" '
                    f'class="bar {name}"><title>{name}: {c[i]}</title></rect>'
                )
                bottom += c[i]
    if threshold is not None and edges[0] <= threshold <= edges[-1]:
        (x, y0), (_, y1) = _xy((threshold - edges[0]) / span, 0), _xy(0, 1)
        bars.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" class="threshold"/>')
    axis = (
        f'<text x="{PAD}" y="{CHART_H - 20}" text-anchor="start">{edges[0]:.3g}</text>'
        f'<text x="{CHART_W - 8}" y="{CHART_H - 20}" text-anchor="end">{edges[-1]:.3g}</text>'
        f'<text x="{PAD - 4}" y="16" text-anchor="end">{top}</text>'
    )
    legend = (
        ": <span class='key good'>good</span> <span class='key defective'>defective</span> "
        "<span class='key unlabelled'>unlabelled</span>; the black line is the model's threshold"
    )
    return _svg_frame("Score histogram", "image score", "images", "".join(bars) + axis, legend)


def _region_words(region: RegionRecord) -> str:
    kind = f"{region.defect_type} " if region.defect_type else ""
    confidence = f" ({100 * region.type_confidence:.0f}% sure)" if region.type_confidence is not None else ""
    return (
        f"{kind}at the {', '.join(region.grid) or region.position}, "
        f"{100 * (region.area_fraction or 0.0):.2f}% of the image, severity {region.severity}{confidence}"
    )


def _card(item: ReportItem) -> str:
    r = item.record
    findings = "".join(f"<li>{html.escape(_region_words(region))}</li>" for region in r.regions)
    return (
        f'<article class="card"><h3>{html.escape(Path(r.image).name)}</h3>'
        f'<div class="pair">{_img(item.image_png, "image")}{_img(item.overlay_png, "heatmap overlay")}</div>'
        f"<p>score {r.score:.4f} ({r.normalized_score:.2f} x threshold), severity {html.escape(r.severity)}</p>"
        f"<ul>{findings or '<li>no region above the pixel threshold</li>'}</ul>"
        f'<p class="explanation">{html.escape(r.explanation.text)} '
        f"<small>({html.escape(r.explanation.source)})</small></p></article>"
    )


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} th{background:#f3f3f3}
.charts{display:flex;flex-wrap:wrap;gap:16px} svg text{font-size:11px;fill:#444}
.frame{fill:none;stroke:#999} .curve{fill:none;stroke:#c0392b;stroke-width:2} .guide{stroke:#bbb;stroke-dasharray:4}
.bar.good{fill:#27ae60} .bar.defective{fill:#c0392b} .bar.unlabelled{fill:#7f8c8d}
.threshold{stroke:#222;stroke-width:2}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:16px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px} .card h3{margin:0 0 6px;font-size:15px}
.pair{display:flex;gap:6px} .pair img{width:50%;height:auto;border:1px solid #ccc}
.explanation{background:#f7f7f7;padding:6px} .missing{color:#888} figure{margin:0}
figcaption{font-size:13px;max-width:360px} .key::before{content:"\\25A0 "} .key.good{color:#27ae60}
.key.defective{color:#c0392b} .key.unlabelled{color:#7f8c8d} .drift-warning td{background:#fdecea;color:#b71c1c}
"""


def build_report(
    items: list[ReportItem],
    title: str = "anomalens inspection report",
    drift: dict[str, DriftAssessment] | None = None,
) -> str:
    """The report page for ``items``, as one HTML string; with ``drift`` (model name -> the drift watch's answer,
    as the service keeps it) a section on whether the inputs have drifted."""
    records = [i.record for i in items]
    n = len(records)
    n_anomalous = sum(r.anomalous for r in records)
    scores = [r.score for r in records]
    labels = [i.label for i in items]
    thresholds = {r.image_threshold for r in records}
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    summary = (
        f"<table><tr><th>images</th><th>anomalous (fail)</th><th>normal (pass)</th><th>pass rate</th>"
        f"<th>fail rate</th></tr><tr><td>{n}</td><td>{n_anomalous}</td><td>{n - n_anomalous}</td>"
        f"<td>{100 * (n - n_anomalous) / max(n, 1):.1f}%</td><td>{100 * n_anomalous / max(n, 1):.1f}%</td>"
        f"</tr></table>"
    )
    summary += _expectations(records)
    if drift is not None:
        summary += _drift_section(drift)
    charts = [histogram_svg(scores, labels, threshold)] if n else []
    known = [(label, s) for label, s in zip(labels, scores) if label is not None]
    curves_note = ""
    if len({label for label, _ in known}) == 2:
        y, s = np.array([label for label, _ in known]), np.array([s for _, s in known])
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        charts.append(
            _curve_svg(
                f"ROC, AUROC {image_auroc(y, s):.3f}",
                "false positive rate",
                "true positive rate",
                fpr,
                tpr,
                diagonal=True,
            )
        )
        charts.append(_curve_svg("Precision-recall", "recall", "precision", recall, precision, diagonal=False))
        curves_note = f"<p>ROC and PR curves from {len(known)} labelled images.</p>"
    elif known:
        curves_note = "<p>No ROC or PR curve: the labelled images are all of one class.</p>"
    else:
        curves_note = "<p>No ROC or PR curve: no image has a label.</p>"
    types = Counter(region.defect_type or "untyped" for r in records if r.anomalous for region in r.regions)
    type_rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(t)}</td><td>{c}</td></tr>" for t, c in types.most_common()
    )
    types_table = (
        f"<table><tr><th>defect type</th><th>regions</th></tr>{type_rows}</table>"
        if types
        else "<p>No anomalous regions.</p>"
    )
    cards = "".join(_card(i) for i in items if i.record.anomalous)
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><h2>Summary</h2>{summary}"
        f"<div class='charts'>{''.join(charts)}</div>{curves_note}<h2>Defect types</h2>{types_table}"
        f"<h2>Anomalous images ({n_anomalous})</h2><div class='cards'>{cards}</div></body></html>"
    )


def _expectations(records: list[InspectionRecord]) -> str:
    """The fail rate beside what the model's calibration said to expect on good parts."""
    expected = {r.expected_false_alarm_rate for r in records} - {None}
    if len(expected) != 1:
        return ""
    rate = expected.pop()
    detected = {r.expected_simulated_detection_rate for r in records} - {None}
    caught = f"; it caught {100 * detected.pop():.0f}% of simulated defects" if len(detected) == 1 else ""
    return (
        f"<p>The model's calibration flagged {100 * rate:.1f}% of held-out good images at this threshold"
        f"{caught}. A fail rate far above that on good parts means the parts or the imaging have changed.</p>"
    )


def _drift_section(drift: dict[str, DriftAssessment]) -> str:
    """One row per model: the warning and its reason, the CUSUM against its limit, pass rates."""

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    rows = "".join(
        f"<tr class='{'drift-warning' if a.warning else ''}'><td style='text-align:left'>{html.escape(model)}</td>"
        f"<td>{'WARNING' if a.warning else 'none'}</td><td>{a.images_seen}</td><td>{rate(a.pass_rate)}</td>"
        f"<td>{rate(a.expected_pass_rate)}</td><td>{a.statistic:.2f} / {a.threshold:g}</td>"
        f"<td style='text-align:left'>{html.escape(a.reason)}</td></tr>"
        for model, a in drift.items()
    )
    if not rows:
        return "<h2>Drift watch</h2><p>No inspections yet: nothing to compare.</p>"
    return (
        "<h2>Drift watch</h2><table><tr><th>model</th><th>drift</th><th>images</th><th>pass rate</th>"
        f"<th>calibration's pass rate</th><th>CUSUM / limit</th><th>why</th></tr>{rows}</table>"
    )


def items_from_results(results_path: str | Path) -> list[ReportItem]:
    """Report items from ``results.json`` of ``anomalens predict`` (or its folder): overlays from beside it,
    anomalous images from the paths recorded (when still there), labels from a ``label`` field or an
    MVTec-layout path."""
    path = Path(results_path)
    if path.is_dir():
        path = path / "results.json"
    try:
        records = RESULTS_FILE.validate_json(path.read_bytes())
    except ValidationError as error:
        raise ValueError(f"{path} is not a results.json list of per-image records: {error}") from error
    folder = path.parent
    return [
        ReportItem(
            record,
            _file_bytes(Path(record.image)) if record.anomalous else None,
            _file_bytes(folder / record.overlay) if record.overlay else None,
            record.label if record.label is not None else label_from_path(record.image),
        )
        for record in records
    ]


def _file_bytes(path: Path) -> bytes | None:
    """The file's bytes when it is (still) there."""
    return path.read_bytes() if path.is_file() else None
