"""The inspection store: every result with its images, chat turns and operator feedback, in any SQL database.

SQLite (a file in the data directory) by default; any SQLAlchemy URL, such as PostgreSQL, lets several
stations share one store. The schema is created and upgraded by Alembic (``migrations/``) when the store
opens. Images are kept in the database as PNG bytes, so a shared store needs no shared file system.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from anomalens.results.record import ExplanationRecord, InspectionRecord
from anomalens.service.schemas import StoredResult

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATING = threading.Lock()


class Base(DeclarativeBase):
    pass


class Inspection(Base):
    __tablename__ = "inspections"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    station: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128), index=True)
    image_name: Mapped[str] = mapped_column(String(255))
    anomalous: Mapped[bool] = mapped_column(Boolean, index=True)
    score: Mapped[float] = mapped_column(Float)
    # comma-separated, with leading and trailing commas, so that a type filters with LIKE '%,crack,%'
    defect_types: Mapped[str] = mapped_column(String(512), default=",")
    explanation_source: Mapped[str] = mapped_column(String(32))
    feedback_status: Mapped[str | None] = mapped_column(String(32), index=True)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class InspectionImage(Base):
    __tablename__ = "inspection_images"
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(32))


class Feedback(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32))
    region_index: Mapped[int | None] = mapped_column(Integer)
    defect_type: Mapped[str | None] = mapped_column(String(128))
    cause: Mapped[str] = mapped_column(Text, default="")
    action: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text, default="")
    history_case_ids: Mapped[list[int]] = mapped_column(JSON)


class IdempotencyKey(Base):
    """A key a station's client sent with a request, and the digest of what that request uploaded."""

    __tablename__ = "idempotency_keys"
    station: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class IdempotencyResult(Base):
    """The result stored for file ``item`` (its place in the request) of a request sent under a key."""

    __tablename__ = "idempotency_results"
    __table_args__ = (
        ForeignKeyConstraint(
            ["station", "key"], ["idempotency_keys.station", "idempotency_keys.key"], ondelete="CASCADE"
        ),
    )
    station: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    item: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)


class KeyReused(ValueError):
    """An idempotency key sent again with a request that uploads something else."""


@dataclass(frozen=True)
class Claim:
    """File ``item`` of a request sent under idempotency ``key``, and the result an earlier attempt of the same
    request stored for it (None: not stored yet)."""

    key: str
    item: int
    stored_id: str | None = None


@dataclass(frozen=True)
class ResultFilter:
    anomalous: bool | None = None
    model: str | None = None
    defect_type: str | None = None
    feedback: str | None = None
    since: float | None = None
    limit: int = 100
    offset: int = 0


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` with Alembic (creates the tables on a new database).

    Processes that start together are kept apart by the database (see ``migrations/env.py``); threads of one
    process by a lock, because Alembic's migration context is global to the process.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    with _MIGRATING:
        command.upgrade(config, revision)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # threads of one process share the file; WAL lets readers work while one request writes
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _types_key(record: InspectionRecord) -> str:
    types = sorted({r.defect_type for r in record.regions if r.defect_type})
    return "," + "".join(f"{t}," for t in types)


class Store:
    """Inspection results in the database at ``url`` (migrated to the newest schema on opening)."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        migrate(url)
        self.engine = _engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def claims(self, station: str, key: str, request_sha256: str, files: int) -> list[Claim]:
        """Take idempotency ``key`` of ``station`` for the request whose uploads have this digest, or find it taken
        by an earlier attempt of the same request: one claim per file, with what that attempt stored.

        :raises KeyReused: the key was taken by a request that uploaded something else.
        """
        try:
            with self._session.begin() as session:
                session.add(
                    IdempotencyKey(station=station, key=key, request_sha256=request_sha256, created_at=time.time())
                )
        except IntegrityError:
            pass  # taken before, by an earlier attempt or by another request: told apart by the digest below
        with self._session() as session:
            taken = session.get(IdempotencyKey, (station, key))
            if taken.request_sha256 != request_sha256:
                raise KeyReused(f"Idempotency-Key {key!r} was sent before with other files: use a new key")
            query = select(IdempotencyResult).where(IdempotencyResult.station == station, IdempotencyResult.key == key)
            stored = {row.item: row.inspection_id for row in session.scalars(query)}
        return [Claim(key, item, stored.get(item)) for item in range(files)]

    def add_inspection(
        self,
        record: InspectionRecord,
        images: dict[str, bytes],
        model: str,
        station: str,
        claim: Claim | None = None,
        model_version: int | None = None,
    ) -> str:
        """Store a result and its PNG images, with the model and model version that judged it; returns the new id.

        Under an idempotency ``claim`` the result is stored with its key and item in the same transaction, so a
        retry finds exactly what was stored; when a concurrent attempt of the same request stored that item first,
        nothing is added and that attempt's id is returned.
        """
        try:
            return self._add_inspection(record, images, model, station, claim, model_version)
        except IntegrityError:
            stored = None if claim is None else self._claimed(station, claim)
            if stored is None:
                raise
            return stored

    def _claimed(self, station: str, claim: Claim) -> str | None:
        with self._session() as session:
            row = session.get(IdempotencyResult, (station, claim.key, claim.item))
            return None if row is None else row.inspection_id

    def _add_inspection(
        self,
        record: InspectionRecord,
        images: dict[str, bytes],
        model: str,
        station: str,
        claim: Claim | None,
        model_version: int | None,
    ) -> str:
        inspection_id = uuid.uuid4().hex
        with self._session.begin() as session:
            session.add(
                Inspection(
                    id=inspection_id,
                    created_at=time.time(),
                    station=station,
                    model=model,
                    image_name=record.image[:255],
                    anomalous=record.anomalous,
                    score=record.score,
                    defect_types=_types_key(record),
                    explanation_source=record.explanation.source,
                    # kept in the record's JSON: nothing filters by it, so no column (and no migration) is needed
                    record={**record.to_dict(), "model_version": model_version},
                )
            )
            session.flush()  # the parent row first: PostgreSQL checks the images' foreign key at once
            session.add_all(
                InspectionImage(inspection_id=inspection_id, kind=kind, png=png) for kind, png in images.items()
            )
            if claim is not None:
                session.add(
                    IdempotencyResult(station=station, key=claim.key, item=claim.item, inspection_id=inspection_id)
                )
        return inspection_id

    def set_explanation(self, inspection_id: str, explanation: ExplanationRecord) -> None:
        with self._session.begin() as session:
            row = session.get(Inspection, inspection_id)
            row.record = {**row.record, "explanation": explanation.to_dict()}
            row.explanation_source = explanation.source

    def get(self, inspection_id: str) -> StoredResult | None:
        with self._session() as session:
            row = session.get(Inspection, inspection_id)
            return None if row is None else self._summary(row)

    def image(self, inspection_id: str, kind: str) -> bytes | None:
        with self._session() as session:
            row = session.get(InspectionImage, (inspection_id, kind))
            return None if row is None else row.png

    def results(self, where: ResultFilter = ResultFilter()) -> list[StoredResult]:
        """Stored results, newest first, filtered; each the full record plus its station, model and time."""
        query = select(Inspection).order_by(Inspection.created_at.desc(), Inspection.id)
        if where.anomalous is not None:
            query = query.where(Inspection.anomalous == where.anomalous)
        if where.model:
            query = query.where(Inspection.model == where.model)
        if where.defect_type:
            query = query.where(Inspection.defect_types.contains(f",{where.defect_type},", autoescape=True))
        if where.feedback:
            query = query.where(Inspection.feedback_status == where.feedback)
        if where.since is not None:
            query = query.where(Inspection.created_at >= where.since)
        with self._session() as session:
            rows = session.scalars(query.limit(where.limit).offset(where.offset)).all()
            return [self._summary(row) for row in rows]

    def count(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(Inspection)))

    def add_message(self, inspection_id: str, role: str, content: str, source: str | None = None) -> None:
        with self._session.begin() as session:
            session.add(
                ChatMessage(
                    inspection_id=inspection_id, created_at=time.time(), role=role, content=content, source=source
                )
            )

    def messages(self, inspection_id: str) -> list[dict[str, Any]]:
        query = select(ChatMessage).where(ChatMessage.inspection_id == inspection_id).order_by(ChatMessage.id)
        with self._session() as session:
            return [{"role": m.role, "content": m.content, "source": m.source} for m in session.scalars(query)]

    def add_feedback(
        self,
        inspection_id: str,
        status: str,
        region_index: int | None,
        defect_type: str | None,
        cause: str,
        action: str,
        note: str,
        history_case_ids: list[int],
    ) -> int:
        with self._session.begin() as session:
            feedback = Feedback(
                inspection_id=inspection_id,
                created_at=time.time(),
                status=status,
                region_index=region_index,
                defect_type=defect_type,
                cause=cause,
                action=action,
                note=note,
                history_case_ids=history_case_ids,
            )
            session.add(feedback)
            session.execute(update(Inspection).where(Inspection.id == inspection_id).values(feedback_status=status))
            session.flush()
            return feedback.id

    def feedback(self, inspection_id: str) -> list[dict[str, Any]]:
        query = select(Feedback).where(Feedback.inspection_id == inspection_id).order_by(Feedback.id)
        with self._session() as session:
            return [
                {
                    "id": f.id,
                    "created_at": f.created_at,
                    "status": f.status,
                    "region_index": f.region_index,
                    "defect_type": f.defect_type,
                    "cause": f.cause,
                    "action": f.action,
                    "note": f.note,
                    "history_case_ids": f.history_case_ids,
                }
                for f in session.scalars(query)
            ]

    @staticmethod
    def _summary(row: Inspection) -> StoredResult:
        return StoredResult.model_validate(
            {
                **row.record,
                "id": row.id,
                "created_at": row.created_at,
                "station": row.station,
                "model": row.model,
                "feedback_status": row.feedback_status,
            }
        )
