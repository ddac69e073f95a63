"""A multi-turn conversation about one inspection result.

The context is what was measured (verdict, regions, positions, sizes, severity) and, when a defect history is
given, similar past cases. Without an LLM the offline explainer answers the standard questions; with one
(any object with ``chat(messages) -> str``, such as the LLM explainer) the model answers from that context,
and the offline answer is used whenever the model fails.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from anomalens.explanation.offline import answer, explain
from anomalens.results.record import InspectionRecord

log = logging.getLogger(__name__)


class ChatBackend(Protocol):
    """Answers the conversation so far; may set ``last_chat = {"source": ..., "reason": ...}`` when it fell back."""

    def chat(self, messages: list[dict[str, Any]]) -> str: ...


class GroundedLLM:
    """An LLM explainer's chat bound to one result's findings (it falls back to offline answers itself)."""

    def __init__(self, explainer: Any, findings: InspectionRecord, seen_before: list[str] | None = None):
        self.explainer, self.findings, self.seen_before = explainer, findings, seen_before

    def chat(self, messages: list[dict[str, Any]]) -> str:
        return self.explainer.chat(messages, findings=self.findings, seen_before=self.seen_before)

    @property
    def last_chat(self) -> dict[str, Any]:
        return self.explainer.last_chat


def context_prompt(findings: InspectionRecord, seen_before: list[str]) -> str:
    """The system message: the measured facts, which the answers must not contradict."""
    facts = explain(findings, seen_before)
    return ("You are an assistant for visual quality inspection. Answer briefly and only from these measured "
            f"facts about the inspected image; say so when they do not answer a question.\nFacts: {facts}")


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

    def ask(self, question: str) -> tuple[str, str]:
        """Answer one question; returns (answer, source) with source "llm" or "offline"."""
        self.messages.append({"role": "user", "content": question})
        reply, source = None, "offline"
        if self.backend is not None:
            try:
                reply = self.backend.chat(self.messages).strip() or None
                source = getattr(self.backend, "last_chat", {}).get("source", "llm") if reply else "offline"
            except Exception as error:  # a failing model must not end the conversation
                log.warning("LLM failed, answering offline: %s", error)
        if reply is None:
            reply = answer(question, self.findings)
        self.messages.append({"role": "assistant", "content": reply})
        return reply, source
