"""A local history of past defects, fed by operator feedback, searched for cases like a new finding.

SQLite (one file, no server) holds each confirmed or corrected finding with its type, description, cause and
action, the region's measured facts as JSON and, when available, the region's embedding as raw float32 bytes
(no pickle). A case judged on a stored result keeps the result's id and the region's index: a later judgement
of that region replaces it, so the history holds one current judgement per region. A new finding is matched by
cosine similarity of embeddings and/or by TF-IDF similarity of text, and the matches are offered to explainers
as "seen before: ... cause was ..., fixed by ...".
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from anomalens.results.record import InspectionRecord, RegionRecord

Status = Literal["confirmed", "corrected", "false_alarm"]
STATUSES = ("confirmed", "corrected", "false_alarm")

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    image TEXT NOT NULL,
    status TEXT NOT NULL,
    defect_type TEXT,
    description TEXT NOT NULL DEFAULT '',
    cause TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    region_json TEXT NOT NULL DEFAULT '{}',
    embedding BLOB,
    result_id TEXT,
    region_index INTEGER
)
"""
# columns added after the first release: a history file made before lacks them and gets them on opening
ADDED_COLUMNS = {"result_id": "TEXT", "region_index": "INTEGER"}
# unique where both are set: SQLite treats NULLs as distinct, so cases entered without a result never collide
JUDGED_REGION_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS cases_judged_region ON cases (result_id, region_index)"
CASE_COLUMNS = (
    "created_at",
    "image",
    "status",
    "defect_type",
    "description",
    "cause",
    "action",
    "region_json",
    "embedding",
    "result_id",
    "region_index",
)


@dataclass
class Case:
    """One past finding as an operator judged it."""

    image: str
    status: Status
    defect_type: str | None = None
    description: str = ""
    cause: str = ""
    action: str = ""
    region: RegionRecord | None = None
    embedding: np.ndarray | None = None
    id: int | None = None
    created_at: float | None = None
    result_id: str | None = None
    region_index: int | None = None

    @property
    def text(self) -> str:
        return " ".join(t for t in (self.defect_type or "", self.description, self.cause, self.action) if t)

    def seen_before(self) -> str:
        """One sentence for explainers and prompts."""
        if self.status == "false_alarm":
            return f"seen before: a similar finding on {Path(self.image).name} was a false alarm"
        parts = [f"seen before: {self.defect_type or 'a defect'}"]
        if self.region is not None:
            parts[0] += f" at the {self.region.position}"
        if self.cause:
            parts.append(f"cause was {self.cause}")
        if self.action:
            parts.append(f"fixed by {self.action}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "image": self.image,
            "status": self.status,
            "defect_type": self.defect_type,
            "description": self.description,
            "cause": self.cause,
            "action": self.action,
            "region": self.region.to_dict() if self.region is not None else {},
            "result_id": self.result_id,
            "region_index": self.region_index,
            "seen_before": self.seen_before(),
        }


def region_query(
    record: InspectionRecord, index: int = 0, image: np.ndarray | None = None, outline: np.ndarray | None = None
) -> tuple[np.ndarray | None, str]:
    """``(embedding, text)`` describing region ``index`` of an inspection record, to store or to search with.

    The embedding (:func:`~anomalens.explanation.taxonomy.region_embedding`: what the region looks like) needs
    the inspected ``image`` and its ``outline`` (the record's mask, at the image's size; the region is its part
    inside the region's box); the text is the region's type, position, brightness and shape.
    """
    if not 0 <= index < len(record.regions):
        return None, ""
    region = record.regions[index]
    words = (region.defect_type, region.position, region.brightness, region.shape)
    text = " ".join(w for w in words if w and w not in ("unknown", "similar"))
    if image is None or outline is None:
        return None, text
    from anomalens.explanation.taxonomy import region_embedding

    x0, y0, x1, y1 = region.bbox
    part = np.zeros(np.asarray(outline).shape[:2], dtype=bool)
    part[y0:y1, x0:x1] = np.asarray(outline)[y0:y1, x0:x1] > 0
    return (region_embedding(image, part) if part.any() else None), text


def _region(stored: str) -> RegionRecord | None:
    """A case's region from its stored JSON (``{}`` for a case entered without one)."""
    data = json.loads(stored)
    return RegionRecord.model_validate(data) if data else None


class DefectHistory:
    """Past defects in an SQLite file (``":memory:"`` for a throw-away store)."""

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(cases)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE cases ADD COLUMN {column} {kind}")
        self._db.execute(JUDGED_REGION_INDEX)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def add(self, case: Case) -> int:
        """Store ``case``; returns its id. A case of a stored result's region (``result_id`` and ``region_index``
        set) replaces the case of that region judged before, keeping its id."""
        if case.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {case.status!r}")
        blob = None if case.embedding is None else np.asarray(case.embedding, dtype=np.float32).tobytes()
        values = (
            case.created_at or time.time(),
            case.image,
            case.status,
            case.defect_type,
            case.description,
            case.cause,
            case.action,
            json.dumps(case.region.to_dict() if case.region is not None else {}),
            blob,
            case.result_id,
            case.region_index,
        )
        replaced = ", ".join(f"{c} = excluded.{c}" for c in CASE_COLUMNS)
        cursor = self._db.execute(
            f"INSERT INTO cases ({', '.join(CASE_COLUMNS)}) VALUES ({', '.join('?' * len(values))})"
            f" ON CONFLICT (result_id, region_index) DO UPDATE SET {replaced}",
            values,
        )
        self._db.commit()
        if case.result_id is None or case.region_index is None:
            return int(cursor.lastrowid)
        # an update leaves lastrowid unset: the id is looked up
        found = self._db.execute(
            "SELECT id FROM cases WHERE result_id = ? AND region_index = ?", (case.result_id, case.region_index)
        )
        return int(found.fetchone()[0])

    def record_feedback(
        self,
        record: InspectionRecord,
        region_index: int,
        status: Status,
        defect_type: str | None = None,
        cause: str = "",
        action: str = "",
        description: str = "",
        embedding: np.ndarray | None = None,
        result_id: str | None = None,
    ) -> int:
        """Store an operator's judgement of one region of an inspection record (``results.json`` entry).

        ``confirmed`` keeps the predicted type unless one is given; ``corrected`` needs the right type. With the
        stored result's ``result_id`` the judgement replaces the one of that region given before (same case id).
        """
        regions = record.regions
        if not 0 <= region_index < len(regions):
            raise ValueError(f"the result has {len(regions)} regions; no region {region_index}")
        region = regions[region_index]
        if status == "corrected" and not defect_type:
            raise ValueError("a correction needs the right defect type")
        text = description or record.explanation.text
        return self.add(
            Case(
                image=record.image,
                status=status,
                defect_type=defect_type or region.defect_type,
                description=text,
                cause=cause,
                action=action,
                region=region,
                embedding=embedding,
                result_id=result_id,
                region_index=region_index,
            )
        )

    def cases(self, include_false_alarms: bool = True) -> list[Case]:
        rows = self._db.execute(f"SELECT id, {', '.join(CASE_COLUMNS)} FROM cases ORDER BY id").fetchall()
        found = [
            Case(
                id=r[0],
                created_at=r[1],
                image=r[2],
                status=r[3],
                defect_type=r[4],
                description=r[5],
                cause=r[6],
                action=r[7],
                region=_region(r[8]),
                embedding=None if r[9] is None else np.frombuffer(r[9], dtype=np.float32).copy(),
                result_id=r[10],
                region_index=r[11],
            )
            for r in rows
        ]
        return [c for c in found if include_false_alarms or c.status != "false_alarm"]

    def seen_before(
        self, record: InspectionRecord, image: np.ndarray | None = None, outline: np.ndarray | None = None, k: int = 3
    ) -> list[str]:
        """Sentences about the past cases most like the strongest region of ``record``: by what it looks like
        (with ``image`` and ``outline``, see :func:`region_query`) and by its type and position words. A record
        without regions has nothing to compare."""
        embedding, text = region_query(record, 0, image, outline)
        if embedding is None and not text:
            return []
        return [case.seen_before() for case, _ in self.similar(embedding, text or None, k)]

    def similar(
        self,
        embedding: np.ndarray | None = None,
        text: str | None = None,
        k: int = 3,
        include_false_alarms: bool = True,
    ) -> list[tuple[Case, float]]:
        """The ``k`` past cases most like a new finding: mean of embedding and text similarity where both exist."""
        if embedding is None and not text:
            raise ValueError("give an embedding, a text, or both")
        cases = self.cases(include_false_alarms)
        if not cases:
            return []
        scores = np.zeros(len(cases))
        weights = np.zeros(len(cases))
        if embedding is not None:
            query = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
            for i, case in enumerate(cases):
                if case.embedding is not None and case.embedding.size == query.size:
                    scores[i] += float(cosine_similarity(query, case.embedding.reshape(1, -1))[0, 0])
                    weights[i] += 1
        if text:
            corpus = [c.text for c in cases]
            if any(corpus):
                vectorizer = TfidfVectorizer().fit(corpus + [text])
                text_scores = cosine_similarity(vectorizer.transform([text]), vectorizer.transform(corpus))[0]
                scores += text_scores
                weights += 1
        ranked = [
            (cases[i], float(scores[i] / weights[i]))
            for i in np.argsort(-scores / np.maximum(weights, 1))
            if weights[i] > 0
        ]
        return ranked[:k]
