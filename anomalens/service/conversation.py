"""Chat turns about a stored result: a ``ChatSession`` rebuilt from the record and the stored turns."""

from __future__ import annotations

from typing import Any

from anomalens.explanation.chat import ChatAnswer, ChatSession, GroundedLLM
from anomalens.results.record import InspectionRecord


def reply(
    record: InspectionRecord, turns: list[dict[str, Any]], message: str, explainer: Any, past: list[str]
) -> ChatAnswer:
    """The answer to ``message`` after the earlier ``turns`` (role/content)."""
    backend = GroundedLLM(explainer, record, past) if explainer is not None else None
    session = ChatSession(record, backend, past)
    session.messages += [{"role": t["role"], "content": t["content"]} for t in turns]
    return session.ask(message)
