"""The records of learning: each image an operator declared normal is a mark, kept in the model's info so that
it travels with the model version it changed, and can be undone by its id."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from anomalens.models.base import BaseDetector

MARKS_KEY = "marks"
NEXT_MARK_KEY = "next_mark"


class Declared(BaseModel):
    """An image an operator declared normal: who, when, and what it scored against which threshold then."""

    image: str = Field(description="the image's file name, or the stored result it came from")
    by: str
    at: datetime
    score: float = Field(description="its image score when declared normal (held out, like a calibration normal)")
    threshold: float = Field(description="the image threshold it was judged against")


class Mark(Declared):
    """One image declared normal and learned, and what it taught."""

    mark: int = Field(ge=1, description="the mark's id; an undo names it")
    patches: int = Field(description="memory-bank patches it added (PatchCore; 0 when learned by fine-tuning)")
    score_after: float | None = Field(default=None, description="its image score once learned")


class QueuedImage(Declared):
    """An image declared normal for a model that learns by training (EfficientAD): it waits in the model's
    fine-tuning queue until the queue is applied, then becomes a mark."""

    entry: int = Field(ge=1, description="its id in the queue; dropping it names it")
    file: str = Field(description="the PNG copy kept in the queue's folder")
    version: int = Field(description="the model version that scored it")


class Refusal(BaseModel):
    """An image that was not learned, and why."""

    image: str
    score: float
    reason: str


class FineTuning(BaseModel):
    """How long a fine-tune trained (EfficientAD)."""

    steps: int
    seconds: float


class LearnReport(BaseModel):
    """What one learn (or undo) did to a model."""

    learned: list[Mark] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    forgotten: list[int] = Field(default_factory=list, description="marks taken out again (an undo)")
    queued: list[QueuedImage] = Field(
        default_factory=list, description="images waiting to be learned by fine-tuning (EfficientAD)"
    )
    threshold_before: float
    threshold_after: float
    fitted_threshold: float = Field(description="the image threshold the fit chose; the cap is measured from it")
    threshold_capped: bool = Field(description="the re-checked threshold would have risen beyond the cap")
    fine_tuning: FineTuning | None = Field(default=None, description="the training that learned the marks, if any")
    version: int | None = Field(default=None, description="the model version it made (none when nothing changed)")


def active_marks(detector: BaseDetector) -> list[Mark]:
    """The marks the model has learned and not forgotten, oldest first."""
    return [Mark.model_validate(entry) for entry in _info(detector).get(MARKS_KEY, [])]


def store_marks(detector: BaseDetector, marks: list[Mark], next_mark: int) -> None:
    info = _info(detector)
    info[MARKS_KEY] = [mark.model_dump(mode="json") for mark in marks]
    info[NEXT_MARK_KEY] = next_mark


def next_mark_id(detector: BaseDetector) -> int:
    """Ids are never reused, so an undo of a forgotten mark cannot hit a newer one."""
    return int(_info(detector).get(NEXT_MARK_KEY, 1))


def _info(detector: BaseDetector) -> dict[str, Any]:
    info = getattr(detector, "info_", None)
    if info is None:
        raise TypeError(f"{type(detector).__name__} keeps no info to record marks in")
    return info
