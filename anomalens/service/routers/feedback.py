"""An operator's judgement of a stored result: every one kept with the result (its audit trail), the newest
one per region fed into the defect history in place of the one before."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from anomalens.service.dependencies import HistoryDep, PixelsDep, StoredDep, StoreDep
from anomalens.service.errors import error_responses
from anomalens.service.feedback import FeedbackError
from anomalens.service.schemas import FeedbackEntry, FeedbackReceipt, FeedbackRequest

router = APIRouter(tags=["feedback"])


@router.post(
    "/results/{result_id}/feedback",
    response_model=FeedbackReceipt,
    responses=error_responses(400, 404, 413, 422, e404="no stored result with this id, or no such region in it"),
)
def feedback(
    stored: StoredDep, judgement: FeedbackRequest, store: StoreDep, history: HistoryDep, pixels: PixelsDep
) -> FeedbackReceipt:
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
    return FeedbackReceipt(feedback_id=feedback_id, status=judgement.status, history_case_ids=case_ids)


@router.get("/results/{result_id}/feedback", response_model=list[FeedbackEntry], responses=error_responses(404, 422))
def feedback_trail(stored: StoredDep, store: StoreDep) -> list[FeedbackEntry]:
    """Every judgement of the result, oldest first; the newest is the current one."""
    return [FeedbackEntry.model_validate(entry) for entry in store.feedback(stored.id)]
