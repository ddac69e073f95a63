"""An operator's judgement of a stored result, kept with the result and fed into the defect history."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from anomalens.service.dependencies import HistoryDep, PixelsDep, StoredDep, StoreDep
from anomalens.service.feedback import FeedbackError
from anomalens.service.schemas import FeedbackReceipt, FeedbackRequest

router = APIRouter(tags=["feedback"])


@router.post("/results/{result_id}/feedback", response_model=FeedbackReceipt)
def feedback(
    stored: StoredDep, judgement: FeedbackRequest, store: StoreDep, history: HistoryDep, pixels: PixelsDep
) -> FeedbackReceipt:
    try:
        case_ids = history.record(stored, judgement, *pixels)
    except FeedbackError as error:
        raise HTTPException(422, str(error)) from error
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
