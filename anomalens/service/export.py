"""Stored results as CSV (one row per result) for spreadsheets, every text cell safe to open in one; JSON export is
the records themselves."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

from anomalens.service.schemas import StoredResult

CSV_COLUMNS = (
    "id",
    "created_at",
    "station",
    "model",
    "image",
    "anomalous",
    "score",
    "normalized_score",
    "region_count",
    "severity",
    "defect_types",
    "feedback_status",
    "explanation_source",
    "explanation",
)


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP, "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: Any) -> Any:
    """``value``, with a text that a spreadsheet would run as a formula made plain text by a leading quote;
    numbers and booleans unchanged."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_row(result: StoredResult) -> dict[str, Any]:
    row = {
        "id": result.id,
        "created_at": datetime.fromtimestamp(result.created_at, timezone.utc).isoformat(timespec="seconds"),
        "station": result.station,
        "model": result.model,
        "image": result.image,
        "anomalous": result.anomalous,
        "score": result.score,
        "normalized_score": result.normalized_score,
        "region_count": len(result.regions),
        "severity": result.severity,
        "defect_types": ";".join(sorted({r.defect_type for r in result.regions if r.defect_type})),
        "feedback_status": result.feedback_status or "",
        "explanation_source": result.explanation.source,
        "explanation": result.explanation.text,
    }
    return {column: spreadsheet_text(value) for column, value in row.items()}


def to_csv(records: list[StoredResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(r) for r in records)
    return buffer.getvalue()
