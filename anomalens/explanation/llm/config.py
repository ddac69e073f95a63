"""Where the LLM lives and how to talk to it: :class:`LLMConfig`.

API keys are never part of the configuration: ``api_key_env`` names the environment variable that holds the
key, and the key is read from the environment only when a client is built (:meth:`LLMConfig.api_key`). So a
config can be printed, logged, dumped to JSON or written to a file without leaking anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Provider = Literal["openai", "azure", "ollama", "openai-compatible"]

OLLAMA_BASE_URL = "http://127.0.0.1:11434/v1"
DEFAULT_KEY_ENV: dict[str, str | None] = {
    "openai": "OPENAI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "ollama": None,
    "openai-compatible": None,
}
# Local servers (Ollama, llama.cpp, vLLM) accept any key, but the SDK insists on a non-empty one.
PLACEHOLDER_KEY = "no-key-required"
ENV_PREFIX = "ANOMALENS_LLM_"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LLMConfig(BaseModel):
    """Provider, model and connection settings (no secrets).

    * ``provider``: "openai" (api.openai.com, or ``base_url``), "azure" (Azure OpenAI: ``base_url`` is the
      resource endpoint, ``model`` the deployment name, ``api_version`` required), "ollama" (defaults to
      ``http://127.0.0.1:11434/v1``) or "openai-compatible" (llama.cpp server, vLLM, LM Studio...: ``base_url``
      required).
    * ``api_key_env``: name of the environment variable holding the key (default ``OPENAI_API_KEY`` /
      ``AZURE_OPENAI_API_KEY``; none for local servers).
    * ``vision``: True / False, or None to ask the server once (see ``LLMClient.supports_images``).
    * ``timeout_s`` / ``max_retries``: per request; retries use the SDK's own exponential back-off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    provider: Provider = "openai"
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_version: str | None = None
    api_key_env: str | None = None
    vision: bool | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=400, gt=0)
    json_mode: bool = (
        True  # response_format {"type": "json_object"} for explanations (grammar-constrained on llama.cpp)
    )

    @field_validator("api_key_env")
    @classmethod
    def _is_a_name(cls, value: str | None) -> str | None:
        # A key pasted here by mistake ("sk-...") is refused without echoing it back.
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return value

    @model_validator(mode="after")
    def _check_provider(self) -> LLMConfig:
        if self.provider == "azure" and (not self.base_url or not self.api_version):
            raise ValueError("provider 'azure' needs base_url (the resource endpoint) and api_version")
        if self.provider == "openai-compatible" and not self.base_url:
            raise ValueError("provider 'openai-compatible' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self

    @property
    def resolved_base_url(self) -> str | None:
        if self.base_url:
            return self.base_url
        return OLLAMA_BASE_URL if self.provider == "ollama" else None

    @property
    def key_env(self) -> str | None:
        """The environment variable the key is read from (explicit, else the provider's default)."""
        return self.api_key_env or DEFAULT_KEY_ENV[self.provider]

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The key, read from the environment now (never stored on the config).

        Local providers get a placeholder when no variable is set; "openai" and "azure" raise ``ValueError``
        (naming the variable, not the key).
        """
        environ = os.environ if environ is None else environ
        name = self.key_env
        value = environ.get(name) if name else None
        if value:
            return value
        if self.provider in ("ollama", "openai-compatible"):
            return PLACEHOLDER_KEY
        raise ValueError(f"no API key: set the environment variable {name} (provider {self.provider!r})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> LLMConfig:
        """Build from ``ANOMALENS_LLM_*`` variables; keyword ``overrides`` win.

        PROVIDER, MODEL, BASE_URL, API_VERSION, API_KEY_ENV, VISION (true / false / auto), TIMEOUT_S,
        MAX_RETRIES, TEMPERATURE, MAX_TOKENS, JSON_MODE.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in (
            "provider",
            "model",
            "base_url",
            "api_version",
            "api_key_env",
            "timeout_s",
            "max_retries",
            "temperature",
            "max_tokens",
            "json_mode",
        ):
            raw = environ.get(ENV_PREFIX + field.upper())
            if raw not in (None, ""):
                values[field] = raw
        vision = environ.get(ENV_PREFIX + "VISION", "").strip().lower()
        if vision in ("1", "true", "yes", "on"):
            values["vision"] = True
        elif vision in ("0", "false", "no", "off"):
            values["vision"] = False
        elif vision not in ("", "auto", "none", "detect"):
            raise ValueError(f"{ENV_PREFIX}VISION must be true, false or auto, not {vision!r}")
        values.update(overrides)
        if "model" not in values:
            raise ValueError(f"no model: set {ENV_PREFIX}MODEL (and {ENV_PREFIX}PROVIDER, {ENV_PREFIX}BASE_URL)")
        return cls.model_validate(values)
