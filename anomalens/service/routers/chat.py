"""A conversation about a stored result: its turns are stored with the result, each answer grounded in it."""

from __future__ import annotations

from fastapi import APIRouter

from anomalens.service.conversation import reply
from anomalens.service.dependencies import ExplainerDep, HistoryDep, PixelsDep, StoredDep, StoreDep
from anomalens.service.errors import error_responses
from anomalens.service.schemas import ChatReply, ChatRequest, ChatTurn

router = APIRouter(tags=["chat"])


@router.get("/results/{result_id}/chat", response_model=list[ChatTurn], responses=error_responses(404, 422))
def chat_turns(stored: StoredDep, store: StoreDep) -> list[dict]:
    return store.messages(stored.id)


@router.post("/results/{result_id}/chat", response_model=ChatReply, responses=error_responses(400, 404, 413, 422))
def chat_turn(
    stored: StoredDep,
    request: ChatRequest,
    store: StoreDep,
    history: HistoryDep,
    explainer: ExplainerDep,
    pixels: PixelsDep,
) -> ChatReply:
    answer = reply(stored, store.messages(stored.id), request.message, explainer, history.seen_before(stored, *pixels))
    store.add_message(stored.id, "user", request.message)
    store.add_message(stored.id, "assistant", answer.text, answer.source)
    return ChatReply(reply=answer.text, source=answer.source)
