"""An operator's judgement of a stored result: every one kept with the result (its audit trail), the newest
one per region fed into the defect history in place of the one before; a false alarm also teaches the model
(``anomalens.service.learning``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from anomalens.service.dependencies import (
    HistoryDep,
    InspectorDep,
    MetricsDep,
    PixelsDep,
    SettingsDep,
    StoredDep,
    StoreDep,
)
from anomalens.service.errors import error_responses
from anomalens.service.feedback import FeedbackError
from anomalens.service.learning import learn_false_alarm
from anomalens.service.schemas import FeedbackEntry, FeedbackReceipt, FeedbackRequest, Verdict

router = APIRouter(tags=["feedback"])


@router.post(
    "/results/{result_id}/feedback",
    response_model=FeedbackReceipt,
    responses=error_responses(400, 404, 413, 422, e404="no stored result with this id, or no such region in it"),
)
def feedback(
    stored: StoredDep,
    judgement: FeedbackRequest,
    store: StoreDep,
    history: HistoryDep,
    pixels: PixelsDep,
    inspector: InspectorDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> FeedbackReceipt:
    """Store the judgement. A false alarm judged by the model's current version then teaches the model the image
    as normal (a new model version) unless the guard refuses it; ``learning`` says what happened and why."""
    try:
        case_ids = history.record(stored, judgement, *pixels)
    except FeedbackError as error:
        raise HTTPException(404, str(error)) from error
    feedback_id = store.add_feedback(
        stored.id,
        judgement.status,
        judgement.region_index,
        judgement.defect_type,
        judgement.cause,
        judgement.action,
        judgement.note,
        case_ids,
    )
    learning = None
    if isinstance(judgement, Verdict) and judgement.status == "false_alarm":
        learning = learn_false_alarm(stored, judgement, pixels[0], inspector, settings)
        metrics.false_alarm_marks.labels(learning.model, learning.outcome).inc()
    return FeedbackReceipt(
        feedback_id=feedback_id, status=judgement.status, history_case_ids=case_ids, learning=learning
    )


@router.get("/results/{result_id}/feedback", response_model=list[FeedbackEntry], responses=error_responses(404, 422))
def feedback_trail(stored: StoredDep, store: StoreDep) -> list[FeedbackEntry]:
    """Every judgement of the result, oldest first; the newest is the current one."""
    return [FeedbackEntry.model_validate(entry) for entry in store.feedback(stored.id)]
