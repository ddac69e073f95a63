"""Chat turns about a stored result: a ``ChatSession`` rebuilt from the record and the stored turns."""
from __future__ import annotations

from typing import Any

from anomalens.explanation.chat import ChatAnswer, ChatSession, GroundedLLM, findings_of

__all__ = ["findings_of", "reply"]


def reply(record: dict[str, Any], turns: list[dict[str, Any]], message: str, explainer: Any,
          past: list[str]) -> ChatAnswer:
    """The answer to ``message`` after the earlier ``turns`` (role/content)."""
    findings = findings_of(record)
    backend = GroundedLLM(explainer, findings, past) if explainer is not None else None
    session = ChatSession(findings, backend, past)
    session.messages += [{"role": t["role"], "content": t["content"]} for t in turns]
    return session.ask(message)
