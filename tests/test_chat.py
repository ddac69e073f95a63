"""Multi-turn chat about one result: offline answers, fallback when the model fails, and the CLI."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from anomalens.cli.main import main
from anomalens.explanation import offline
from anomalens.explanation.chat import ChatAnswer, ChatSession, GroundedLLM
from anomalens.explanation.llm import LLMClient, LLMConfig, LLMExplainer
from conftest import build_record

FINDINGS = build_record(
    normalized_score=1.8,
    regions=[
        {"position": "bottom left", "grid": ["bottom left", "left"], "area_fraction": 0.02, "severity": "high"},
        {"position": "top right", "grid": ["top right"], "area_fraction": 0.01, "severity": "medium"},
    ],
)


class BrokenModel:
    def chat(self, messages):
        raise ConnectionError("server went away")


def test_offline_chat_answers_the_standard_questions_and_keeps_the_turns():
    session = ChatSession(FINDINGS, seen_before=["seen before: crack at the bottom left, cause was tool wear"])
    assert "Seen before: crack" in session.opening()
    yes = session.ask("Is there any anomaly in the image?")
    assert yes.text.startswith("Yes") and (yes.source, yes.reason) == ("offline", "no LLM configured")
    where = session.ask("Where?").text
    assert "bottom left" in where and "top right" in where
    how_many = session.ask("How many?").text
    assert "2" in how_many or "two" in how_many
    assert [m["role"] for m in session.messages] == ["system"] + ["user", "assistant"] * 3
    assert "bottom left" in session.messages[0]["content"]  # the model would see the measured facts


def test_a_failing_model_falls_back_to_the_offline_answer():
    session = ChatSession(FINDINGS, backend=BrokenModel())
    reply = session.ask("How many?")
    assert reply.source == "offline" and ("2" in reply.text or "two" in reply.text)
    assert reply.reason == "LLM failed: server went away"


def test_chat_cli_answers_given_questions(tiny_mvtec, tmp_path, capsys):
    model = tmp_path / "model"
    assert (
        main(
            [
                "fit",
                str(tiny_mvtec.root),
                "--category",
                tiny_mvtec.category,
                "-o",
                str(model),
                "--image-size",
                "64",
                "--calibration",
                "normal",
            ]
        )
        == 0
    )
    capsys.readouterr()
    spot = tiny_mvtec.test_spot[0]
    assert (
        main(
            [
                "chat",
                str(model),
                str(spot),
                "--question",
                "Is there any anomaly in the image?",
                "--question",
                "How many?",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("anomalens (offline):") == 2
    assert "you: How many?" in out


@pytest.mark.parametrize("question", ["quit", "exit"])
def test_chat_cli_stops_on_quit(tiny_mvtec, tmp_path, capsys, question):
    model = tmp_path / "model"
    main(["fit", str(tiny_mvtec.root), "--category", tiny_mvtec.category, "-o", str(model), "--image-size", "64"])
    capsys.readouterr()
    assert main(["chat", str(model), str(tiny_mvtec.test_good[0]), "--question", question, "--question", "Where?"]) == 0
    assert "anomalens (offline)" not in capsys.readouterr().out


class QuestionAwareClient(LLMClient):
    """An OpenAI-compatible client stand-in: a grounded reply to "how many", a wrong place for "where".

    The grounded turn's reply is held back until the other turn is producing its offline fallback, so both
    chats are in flight on the shared explainer at once."""

    def __init__(self, other_is_falling_back: threading.Event):
        super().__init__(LLMConfig(provider="openai-compatible", model="fake", base_url="http://x/v1", vision=False))
        self.other_is_falling_back = other_is_falling_back

    def complete(self, messages, max_tokens=None, temperature=None, json_mode=False):
        question = messages[-1]["content"]
        if question.startswith("How many"):
            assert self.other_is_falling_back.wait(10)
            return "There are two regions."
        return "It is in the center."


def test_concurrent_chats_on_one_explainer_keep_their_own_source(monkeypatch):
    """Two chats share one LLM explainer, as the service's request threads do: one answer is grounded, the other
    contradicts the findings and falls back offline. Each turn must report its own source, whatever the order."""
    falling_back, grounded_done = threading.Event(), threading.Event()
    real_answer = offline.answer

    def slow_answer(question, findings):
        falling_back.set()
        assert grounded_done.wait(10)  # the grounded chat finishes while this one builds its fallback
        return real_answer(question, findings)

    monkeypatch.setattr(offline, "answer", slow_answer)
    explainer = LLMExplainer(client=QuestionAwareClient(falling_back))

    def ask(question):
        return ChatSession(FINDINGS, GroundedLLM(explainer, FINDINGS)).ask(question)

    def grounded():
        try:
            return ask("How many regions are there?")
        finally:
            grounded_done.set()

    with ThreadPoolExecutor(2) as pool:
        where = pool.submit(ask, "Where is the anomaly?")
        how_many = pool.submit(grounded)
        where, how_many = where.result(), how_many.result()
    assert how_many == ChatAnswer("There are two regions.", "llm", "grounded")
    assert where.text == real_answer("Where is the anomaly?", FINDINGS) and where.source == "offline"
    assert "center" in where.reason and where.rejected == "It is in the center."
