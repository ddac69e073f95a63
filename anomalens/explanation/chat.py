"""A multi-turn conversation about one inspection result.

The context is what was measured (verdict, regions, positions, sizes, severity) and, when a defect history is
given, similar past cases. Without an LLM the offline explainer answers the standard questions; with one
(any :class:`ChatBackend`, such as the LLM explainer bound by :class:`GroundedLLM`) the model answers from that
context, and the offline answer is used whenever the model fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from anomalens.explanation.offline import answer, explain
from anomalens.results.record import InspectionRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatAnswer:
    """One chat turn's answer: its ``text``, who gave it (``source``), why (``reason``), and the model's
    ``rejected`` reply when the grounding check replaced it by the offline answer.

    Returned by each call rather than kept on the backend, so that concurrent chats sharing one backend (the
    service's request threads) each get their own source and reason."""

    text: str
    source: Literal["llm", "offline"]
    reason: str
    rejected: str | None = None


class ChatBackend(Protocol):
    """Answers the conversation so far (falling back to offline answers itself, or raising)."""

    def chat(self, messages: list[dict[str, Any]]) -> ChatAnswer: ...


class GroundedLLM:
    """An LLM explainer's chat bound to one result's findings (it falls back to offline answers itself)."""

    def __init__(self, explainer: Any, findings: InspectionRecord, seen_before: list[str] | None = None):
        self.explainer, self.findings, self.seen_before = explainer, findings, seen_before

    def chat(self, messages: list[dict[str, Any]]) -> ChatAnswer:
        return self.explainer.chat(messages, findings=self.findings, seen_before=self.seen_before)


def context_prompt(findings: InspectionRecord, seen_before: list[str]) -> str:
    """The system message: the measured facts, which the answers must not contradict."""
    facts = explain(findings, seen_before)
    return (
        "You are an assistant for visual quality inspection. Answer briefly and only from these measured "
        f"facts about the inspected image; say so when they do not answer a question.\nFacts: {facts}"
    )


@dataclass
class ChatSession:
    findings: InspectionRecord
    backend: ChatBackend | None = None
    seen_before: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.messages = [{"role": "system", "content": context_prompt(self.findings, self.seen_before)}]

    def opening(self) -> str:
        """The first thing said: the offline explanation, which needs no model."""
        return explain(self.findings, self.seen_before)

    def ask(self, question: str) -> ChatAnswer:
        """Answer one question: the backend's answer, or the offline one without a backend or when it fails."""
        self.messages.append({"role": "user", "content": question})
        reply, reason = None, "no LLM configured"
        if self.backend is not None:
            try:
                reply = self.backend.chat(self.messages)
            except Exception as error:  # a failing model must not end the conversation
                log.warning("LLM failed, answering offline: %s", error)
                reason = f"LLM failed: {error}"
            else:
                reason = "empty reply"
        if reply is None or not reply.text.strip():
            reply = ChatAnswer(answer(question, self.findings), "offline", reason)
        self.messages.append({"role": "assistant", "content": reply.text})
        return reply
