"""LLM explanations grounded in the measured findings, with the offline explainer as the safety net.

:meth:`LLMExplainer.explain` asks the model for the JSON of :class:`~anomalens.explanation.llm.schema.LLMExplanation`,
parses and validates it, and runs the grounding check. A reply that contradicts the findings (or does not
parse) is sent back once with the problems listed; a second failure, like an unreachable server or a
time-out, gives the offline explanation with ``source: "offline"`` and the reason.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from anomalens.explanation import offline
from anomalens.explanation.chat import ChatAnswer
from anomalens.explanation.llm.client import LLMClient, LLMUnavailable
from anomalens.explanation.llm.config import LLMConfig
from anomalens.explanation.llm.grounding import check, check_answer
from anomalens.explanation.llm.images import vision_images
from anomalens.explanation.llm.prompts import chat_system_message, explain_messages, retry_message
from anomalens.explanation.llm.schema import LLMExplanation, ReplyError, parse_reply
from anomalens.results.record import InspectionRecord, LLMExplanationResult

log = logging.getLogger(__name__)


def compose_text(reply: LLMExplanation) -> str:
    """The checked reply as a few sentences."""
    sentences = [reply.description.rstrip(".") + "."]
    if reply.positions:
        sentences.append(f"Where: {', '.join(reply.positions)}.")
    if reply.defect_type and reply.defect_type.lower() != "none":
        sentences.append(f"Likely defect type: {reply.defect_type.rstrip('.')}.")
    if reply.likely_causes:
        sentences.append(f"Possible causes: {'; '.join(c.rstrip('.') for c in reply.likely_causes)}.")
    if reply.recommended_action:
        sentences.append(f"Recommended action: {reply.recommended_action.rstrip('.')}.")
    return " ".join(sentences)


class LLMExplainer:
    """Explanations and chat through any OpenAI-compatible chat API (see :class:`LLMConfig`).

    ``client`` replaces the :class:`LLMClient` built from ``config``; ``prompts_dir`` overrides templates.
    """

    def __init__(
        self, config: LLMConfig | None = None, client: LLMClient | None = None, prompts_dir: str | None = None
    ) -> None:
        self.config = config if config is not None else (client.config if client else LLMConfig.from_env())
        self.client = client or LLMClient(self.config)
        self.prompts_dir = prompts_dir

    def __repr__(self) -> str:
        return f"LLMExplainer({self.client!r})"

    def _evaluate(self, text: str, findings: InspectionRecord) -> tuple[LLMExplanation | None, list[str]]:
        try:
            reply = parse_reply(text)
        except ReplyError as exc:
            return None, [str(exc)]
        return reply, check(reply, findings)

    def explain(
        self,
        findings: InspectionRecord,
        image: np.ndarray | None = None,
        prediction: Any = None,
        reference: np.ndarray | None = None,
        seen_before: list[str] | None = None,
    ) -> LLMExplanationResult:
        """The checked explanation with source "llm", or the offline one with the reason the LLM's was not used.

        ``image`` (and the mask of ``prediction``, and a normal ``reference``) are sent as PNG images only to
        models that take images. ``seen_before`` (similar past cases of the defect history) is quoted to the
        model and, on a fallback, in the offline text.
        """
        attempts = 0
        history: list[list[str]] = []
        reply: LLMExplanation | None = None
        try:
            images = (
                vision_images(image, prediction, reference)
                if (image is not None or reference is not None) and self.client.supports_images
                else []
            )
            messages = explain_messages(findings, images, self.prompts_dir, seen_before)
            for attempt in range(2):
                text = self.client.complete(messages, json_mode=self.config.json_mode)
                attempts += 1
                reply, problems = self._evaluate(text, findings)
                history.append(problems)
                if not problems:
                    return LLMExplanationResult(
                        text=compose_text(reply),
                        source="llm",
                        reason="grounded" if attempt == 0 else "grounded after one retry",
                        llm=reply.model_dump(),
                        attempts=attempts,
                        problems=history,
                        model=self.config.model,
                    )
                log.info("LLM reply rejected (attempt %d): %s", attempts, "; ".join(problems))
                messages = [*messages, {"role": "assistant", "content": text}, retry_message(problems)]
            reason = "the LLM's answer contradicted the findings after one retry: " + "; ".join(history[-1])
        except LLMUnavailable as exc:
            reason = f"LLM unavailable: {exc}"
        return LLMExplanationResult(
            text=offline.explain(findings, seen_before),
            source="offline",
            reason=reason,
            llm=reply.model_dump() if reply is not None else None,
            attempts=attempts,
            problems=history,
            model=self.config.model,
        )

    def chat(
        self, messages: list[dict[str, Any]], findings: InspectionRecord, seen_before: list[str] | None = None
    ) -> ChatAnswer:
        """The assistant's next turn in a conversation about ``findings``.

        ``messages`` are the user / assistant turns so far (a system message with the findings is added).
        A reply that contradicts the findings, or an unavailable LLM, gives ``offline.answer`` to the last user
        question instead, with the reason (and the ``rejected`` reply).
        """
        question = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        turns = [m for m in messages if m.get("role") != "system"]
        try:
            text = self.client.complete([chat_system_message(findings, self.prompts_dir, seen_before), *turns])
        except LLMUnavailable as exc:
            return ChatAnswer(offline.answer(question, findings), "offline", f"LLM unavailable: {exc}")
        problems = check_answer(question, text, findings)
        if problems or not text.strip():
            return ChatAnswer(
                offline.answer(question, findings),
                "offline",
                "; ".join(problems) or "empty reply",
                rejected=text.strip() or None,
            )
        return ChatAnswer(text.strip(), "llm", "grounded")
