"""The JSON an LLM is asked for (:class:`LLMExplanation`) and tolerant parsing of chatty replies."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_DESCRIPTION_WORDS = 10
GRID_WORDS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
# Common synonyms mapped onto the 3x3 grid words used by the findings.
_SYNONYMS = {
    "centre": "center",
    "middle": "center",
    "central": "center",
    "middle center": "center",
    "center center": "center",
    "middle left": "left",
    "center left": "left",
    "middle right": "right",
    "center right": "right",
    "top center": "top",
    "top middle": "top",
    "upper": "top",
    "lower": "bottom",
    "bottom center": "bottom",
    "bottom middle": "bottom",
    "upper left": "top left",
    "upper right": "top right",
    "lower left": "bottom left",
    "lower right": "bottom right",
    "top-left": "top left",
    "top-right": "top right",
    "bottom-left": "bottom left",
    "bottom-right": "bottom right",
    "top_left": "top left",
    "top_right": "top right",
    "bottom_left": "bottom left",
    "bottom_right": "bottom right",
}


class ReplyError(ValueError):
    """The reply holds no JSON object, or one that does not fit :class:`LLMExplanation`."""


def normalize_position(text: str) -> str:
    word = " ".join(str(text).lower().replace("-", " ").replace("_", " ").split())
    word = re.sub(r"^(the|at the|in the)\s+", "", word)
    word = re.sub(r"\s+(corner|side|edge|area|part|region)$", "", word)
    return _SYNONYMS.get(word, word)


def _as_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return value


class LLMExplanation(BaseModel):
    """{"anomalous", "count", "positions", "description" (<= 10 words), "defect_type", "likely_causes",
    "recommended_action"}."""

    model_config = ConfigDict(extra="ignore")

    anomalous: bool
    count: int = Field(ge=0)
    positions: list[str] = Field(default_factory=list)
    description: str
    defect_type: str = ""
    likely_causes: list[str] = Field(default_factory=list)
    recommended_action: str = ""

    @field_validator("positions", mode="before")
    @classmethod
    def _positions(cls, value: Any) -> Any:
        value = _as_list(value)
        if isinstance(value, list):
            return [normalize_position(v) for v in value if str(v).strip()]
        return value

    @field_validator("likely_causes", mode="before")
    @classmethod
    def _causes(cls, value: Any) -> Any:
        value = _as_list(value)
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("defect_type", "recommended_action", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    @field_validator("description")
    @classmethod
    def _short(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("description is empty")
        words = len(value.split())
        if words > MAX_DESCRIPTION_WORDS:
            raise ValueError(f"description has {words} words, at most {MAX_DESCRIPTION_WORDS} allowed")
        return value


def _objects(text: str):
    """Every balanced {...} block in ``text`` (string-aware), in order of their opening brace."""
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        depth, in_string, escaped = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    yield text[start : i + 1]
                    break


def extract_json(text: str) -> dict[str, Any]:
    """The first {...} block of ``text`` that parses as a JSON object (code fences and chatter around it are
    ignored; trailing commas are forgiven). Raises :class:`ReplyError`."""
    for block in _objects(text or ""):
        for candidate in (block, re.sub(r",\s*([}\]])", r"\1", block)):
            try:
                value = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ReplyError("the reply holds no JSON object")


def parse_reply(text: str) -> LLMExplanation:
    """:class:`LLMExplanation` from an LLM reply (see :func:`extract_json`). Raises :class:`ReplyError`."""
    data = extract_json(text)
    try:
        return LLMExplanation.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors())
        raise ReplyError(f"the JSON does not fit the schema: {problems}") from None
