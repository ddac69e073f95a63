"""What the sub-commands print: the shared console, the results and metrics tables, the threshold's promise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anomalens.results.record import InspectionRecord

console = Console()


def describe_expected(expected: dict[str, float]) -> str:
    """What the automatic threshold promises, in a line."""
    parts = []
    if "false_alarm_rate" in expected:
        parts.append(
            f"flags {100 * expected['false_alarm_rate']:.1f} % of {expected['n_normal']} held-out good "
            f"images (new good parts: at most {100 * expected['false_alarm_rate_bound']:.1f} % with 90 % "
            "confidence, if they look like the training images)"
        )
    if "simulated_detection_rate" in expected:
        parts.append(f"catches {100 * expected['simulated_detection_rate']:.0f} % of simulated defects")
    return "expected at the automatic threshold: " + "; ".join(parts) if parts else ""


def results_table(results: list[InspectionRecord], truth: dict[str, str] | None = None) -> Table:
    """One row per image; ``truth`` (path -> defect type, "good" for normal) adds a ground-truth column."""
    table = Table(title="inspection results")
    for column in (
        "image",
        *(("truth",) if truth else ()),
        "verdict",
        "score",
        "score / threshold",
        "area %",
        "regions",
        "where",
    ):
        table.add_column(column)
    for r in results:
        style = "red" if r.anomalous else "green"
        known = (truth.get(r.image, "?"),) if truth else ()
        where = ", ".join(region.position for region in r.regions[:2]) or "-"
        table.add_row(
            Path(r.image).name,
            *known,
            f"[{style}]{r.verdict}[/]",
            f"{r.score:.4f}",
            f"{r.normalized_score:.2f}",
            f"{100 * r.anomalous_area_fraction:.2f}",
            str(r.region_count),
            where,
        )
    return table


def _format(value: Any) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def metrics_table(report: dict[str, Any]) -> Table:
    """The evaluation metrics of the whole test set, then of each defect type."""
    columns = (
        "image_auroc",
        "pixel_auroc",
        "pixel_aupro",
        "pixel_aupro_5",
        "accuracy",
        "recall",
        "false_positive_rate",
        "oracle_accuracy",
        "pixel_f1",
    )
    table = Table(
        title="evaluation (accuracy, recall, false_positive_rate: at the model's automatic threshold; "
        "-: absent, e.g. no masks)"
    )
    table.add_column("subset")
    table.add_column("n")
    for column in columns:
        table.add_column(column)
    rows = [("all", report)] + list(report["per_defect_type"].items())
    for name, metrics in rows:
        table.add_row(name, str(metrics["n_images"]), *(_format(metrics[c]) for c in columns))
    return table
