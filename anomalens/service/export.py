"""Stored results as CSV (one row per result) for spreadsheets; JSON export is the records themselves."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

CSV_COLUMNS = ("id", "created_at", "station", "model", "image", "anomalous", "score", "normalized_score",
               "region_count", "severity", "defect_types", "feedback_status", "explanation_source", "explanation")


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    regions = record.get("regions", [])
    return {"id": record["id"],
            "created_at": datetime.fromtimestamp(record["created_at"], timezone.utc).isoformat(timespec="seconds"),
            "station": record.get("station"), "model": record.get("model"), "image": record["image"],
            "anomalous": record["anomalous"], "score": record["score"],
            "normalized_score": record.get("normalized_score"), "region_count": len(regions),
            "severity": record.get("severity"),
            "defect_types": ";".join(sorted({r["defect_type"] for r in regions if r.get("defect_type")})),
            "feedback_status": record.get("feedback_status") or "",
            "explanation_source": record["explanation"]["source"], "explanation": record["explanation"]["text"]}


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(r) for r in records)
    return buffer.getvalue()
