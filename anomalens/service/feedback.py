"""Operator feedback on a stored result, fed into the defect history through ``record_feedback``."""
from __future__ import annotations

import threading
from typing import Any

from anomalens.explanation.history import DefectHistory
from anomalens.service.schemas import FeedbackRequest


class FeedbackError(ValueError):
    """Feedback that does not fit the result (no such region, a correction without a type)."""


class HistoryFeed:
    """The defect history shared by all requests; its SQLite connection is used by one thread at a time."""

    def __init__(self, history: DefectHistory):
        self.history = history
        self._lock = threading.Lock()

    def seen_before(self, record: dict[str, Any]) -> list[str]:
        """Sentences about similar past cases, matched by the regions' positions (as ``anomalens chat`` does)."""
        text = " ".join(r["position"] for r in record.get("regions", []) if r.get("position"))
        with self._lock:
            return [case.seen_before() for case, _ in self.history.similar(text=text or "defect")]

    def record(self, record: dict[str, Any], judgement: FeedbackRequest) -> list[int]:
        """History case ids for the judged regions (all regions unless one is named; none for a clean image)."""
        regions = record.get("regions", [])
        if judgement.status == "corrected" and not judgement.defect_type:
            raise FeedbackError("a correction needs the right defect_type")
        if judgement.region_index is not None and judgement.region_index >= len(regions):
            raise FeedbackError(f"the result has {len(regions)} regions; there is no region {judgement.region_index}")
        indices = [judgement.region_index] if judgement.region_index is not None else range(len(regions))
        with self._lock:
            return [self.history.record_feedback(record, i, judgement.status, judgement.defect_type,
                                                 cause=judgement.cause, action=judgement.action,
                                                 description=judgement.note)
                    for i in indices]
