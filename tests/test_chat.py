"""Multi-turn chat about one result: offline answers, fallback when the model fails, and the CLI."""
from __future__ import annotations

import pytest

from anomalens.cli.main import main
from anomalens.explanation.chat import ChatSession
from conftest import build_record

FINDINGS = build_record(normalized_score=1.8, regions=[
    {"position": "bottom left", "grid": ["bottom left", "left"], "area_fraction": 0.02, "severity": "high"},
    {"position": "top right", "grid": ["top right"], "area_fraction": 0.01, "severity": "medium"}])


class BrokenModel:
    def chat(self, messages):
        raise ConnectionError("server went away")


def test_offline_chat_answers_the_standard_questions_and_keeps_the_turns():
    session = ChatSession(FINDINGS, seen_before=["seen before: crack at the bottom left, cause was tool wear"])
    assert "Seen before: crack" in session.opening()
    yes, source = session.ask("Is there any anomaly in the image?")
    assert yes.startswith("Yes") and source == "offline"
    where, _ = session.ask("Where?")
    assert "bottom left" in where and "top right" in where
    how_many, _ = session.ask("How many?")
    assert "2" in how_many or "two" in how_many
    assert [m["role"] for m in session.messages] == ["system"] + ["user", "assistant"] * 3
    assert "bottom left" in session.messages[0]["content"]  # the model would see the measured facts


def test_a_failing_model_falls_back_to_the_offline_answer():
    session = ChatSession(FINDINGS, backend=BrokenModel())
    reply, source = session.ask("How many?")
    assert source == "offline" and ("2" in reply or "two" in reply)


def test_chat_cli_answers_given_questions(tiny_mvtec, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", str(tiny_mvtec.root), "--category", tiny_mvtec.category, "-o", str(model),
                 "--image-size", "64", "--calibration", "normal"]) == 0
    capsys.readouterr()
    spot = tiny_mvtec.test_spot[0]
    assert main(["chat", str(model), str(spot), "--question", "Is there any anomaly in the image?",
                 "--question", "How many?"]) == 0
    out = capsys.readouterr().out
    assert out.count("anomalens (offline):") == 2
    assert "you: How many?" in out


@pytest.mark.parametrize("question", ["quit", "exit"])
def test_chat_cli_stops_on_quit(tiny_mvtec, tmp_path, capsys, question):
    model = tmp_path / "model"
    main(["fit", str(tiny_mvtec.root), "--category", tiny_mvtec.category, "-o", str(model), "--image-size", "64"])
    capsys.readouterr()
    assert main(["chat", str(model), str(tiny_mvtec.test_good[0]), "--question", question,
                 "--question", "Where?"]) == 0
    assert "anomalens (offline)" not in capsys.readouterr().out
