"""Operator feedback on a stored result, fed into the defect history through ``record_feedback``: one current
case per judged region of the result (a new judgement replaces it); the store keeps every judgement."""

from __future__ import annotations

import threading

import numpy as np

from anomalens.explanation.history import DefectHistory, region_query
from anomalens.results.record import InspectionRecord
from anomalens.service.schemas import FeedbackRequest, StoredResult


class FeedbackError(ValueError):
    """Feedback about a region the result does not have."""


class HistoryFeed:
    """The defect history shared by all requests; its SQLite connection is used by one thread at a time."""

    def __init__(self, history: DefectHistory):
        self.history = history
        self._lock = threading.Lock()

    def seen_before(
        self, record: InspectionRecord, image: np.ndarray | None = None, outline: np.ndarray | None = None
    ) -> list[str]:
        """Sentences about past cases like the record's strongest region (its look and its words)."""
        with self._lock:
            return self.history.seen_before(record, image, outline)

    def record(
        self,
        record: StoredResult,
        judgement: FeedbackRequest,
        image: np.ndarray | None = None,
        outline: np.ndarray | None = None,
    ) -> list[int]:
        """History case ids for the judged regions (all regions unless one is named; none for a clean image),
        each stored with its embedding when the image and its outline are given, in place of the region's case
        judged before."""
        regions = record.regions
        if judgement.region_index is not None and judgement.region_index >= len(regions):
            raise FeedbackError(f"the result has {len(regions)} regions; there is no region {judgement.region_index}")
        indices = [judgement.region_index] if judgement.region_index is not None else range(len(regions))
        embeddings = {i: region_query(record, i, image, outline)[0] for i in indices}
        with self._lock:
            return [
                self.history.record_feedback(
                    record,
                    i,
                    judgement.status,
                    judgement.defect_type,
                    cause=judgement.cause,
                    action=judgement.action,
                    description=judgement.note,
                    embedding=embeddings[i],
                    result_id=record.id,
                )
                for i in indices
            ]
