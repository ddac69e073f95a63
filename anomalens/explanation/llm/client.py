"""A thin wrapper around the official ``openai`` SDK: one client for OpenAI, Azure OpenAI, Ollama and any
OpenAI-compatible server (llama.cpp, vLLM, LM Studio).

Every failure to get an answer (no connection, time-out, HTTP error, missing key) becomes one
:class:`LLMUnavailable` with a message that says what went wrong and where, never the key.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from anomalens.explanation.llm.config import LLMConfig

log = logging.getLogger(__name__)

# An 8x8 mid-grey PNG: the smallest honest image for the vision probe.
_PROBE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAH0lEQVQIHSXBsQEAAACCIP3c0xsC44wzzjjjjDPOuAGfjAQJQUCzHAAAAABJRU5ErkJggg=="
)
PROBE_IMAGE_URL = "data:image/png;base64," + base64.b64encode(_PROBE_PNG).decode("ascii")


class LLMUnavailable(RuntimeError):
    """The LLM could not be reached or did not answer (connection, time-out, HTTP status, configuration)."""


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LLMUnavailable("the 'openai' package is not installed: pip install 'anomalens[llm]'") from exc
    return openai


class LLMClient:
    """``complete(messages) -> str`` over the chat-completions API, and ``supports_images``.

    ``sdk_client`` replaces the SDK client (tests, or a client configured elsewhere).
    """

    def __init__(self, config: LLMConfig, sdk_client: Any | None = None) -> None:
        self.config = config
        self._sdk = sdk_client
        self._vision: bool | None = config.vision

    def __repr__(self) -> str:  # the SDK client holds the key: never show it
        return f"LLMClient(provider={self.config.provider!r}, model={self.config.model!r}, base_url={self.where!r})"

    @property
    def where(self) -> str:
        return self.config.resolved_base_url or ("the OpenAI API" if self.config.provider == "openai" else "?")

    @property
    def sdk(self) -> Any:
        """The ``openai.OpenAI`` / ``openai.AzureOpenAI`` client, built on first use."""
        if self._sdk is None:
            config = self.config
            try:
                key = config.api_key()
            except ValueError as exc:
                raise LLMUnavailable(str(exc)) from None
            openai = _import_openai()
            common = {"api_key": key, "timeout": config.timeout_s, "max_retries": config.max_retries}
            if config.provider == "azure":
                self._sdk = openai.AzureOpenAI(azure_endpoint=config.base_url, api_version=config.api_version, **common)
            else:
                self._sdk = openai.OpenAI(base_url=config.resolved_base_url, **common)
        return self._sdk

    def _create(
        self, messages: list[dict[str, Any]], max_tokens: int | None, temperature: float | None, json_mode: bool = False
    ) -> Any:
        extra = {"response_format": {"type": "json_object"}} if json_mode else {}
        return self.sdk.chat.completions.create(
            model=self.config.model,
            messages=messages,
            max_tokens=max_tokens if max_tokens is not None else self.config.max_tokens,
            temperature=self.config.temperature if temperature is None else temperature,
            **extra,
        )

    def _unavailable(self, exc: Exception) -> LLMUnavailable:
        openai = _import_openai()
        config = self.config
        if isinstance(exc, openai.APITimeoutError):
            text = f"the LLM at {self.where} timed out after {config.timeout_s:g} s (connection time-out)"
        elif isinstance(exc, openai.APIConnectionError):
            text = f"connection error: cannot reach the LLM at {self.where} ({exc})"
        elif isinstance(exc, openai.APIStatusError):
            text = f"the LLM at {self.where} answered HTTP {exc.status_code}: {_short(exc.message)}"
        else:
            text = f"the LLM at {self.where} failed: {type(exc).__name__}: {_short(str(exc))}"
        return LLMUnavailable(f"{text} [provider {config.provider}, model {config.model}]")

    def complete(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
    ) -> str:
        """The assistant's reply text for a list of chat messages (raises :class:`LLMUnavailable`).

        ``json_mode`` asks for a JSON object (``response_format``; llama.cpp enforces it with a grammar)."""
        self.sdk  # noqa: B018 - builds the client: a missing key or SDK is reported before anything else
        openai = _import_openai()
        try:
            response = self._create(messages, max_tokens, temperature, json_mode)
        except openai.OpenAIError as exc:
            raise self._unavailable(exc) from exc
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise LLMUnavailable(f"the LLM at {self.where} sent a reply without a message") from exc
        return content or ""

    @property
    def supports_images(self) -> bool:
        """``config.vision`` when set; otherwise one tiny request with an image part, answered once and kept.

        A server that rejects the image part with an HTTP error (a text-only llama.cpp server answers 500 or
        400) has no vision; connection errors raise :class:`LLMUnavailable` and are not remembered.
        """
        if self._vision is None:
            openai = _import_openai()
            probe = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Reply with the single word OK."},
                        {"type": "image_url", "image_url": {"url": PROBE_IMAGE_URL}},
                    ],
                }
            ]
            try:
                self._create(probe, max_tokens=1, temperature=0.0)
                self._vision = True
            except openai.APIStatusError as exc:
                log.info("LLM at %s refused an image part (HTTP %s): text only", self.where, exc.status_code)
                self._vision = False
            except openai.OpenAIError as exc:
                raise self._unavailable(exc) from exc
        return self._vision


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
