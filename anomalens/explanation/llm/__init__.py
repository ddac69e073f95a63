"""LLM explanations through the official ``openai`` SDK (OpenAI, Azure OpenAI, Ollama, llama.cpp, vLLM...),
grounded in the measured findings and falling back to :mod:`anomalens.explanation.offline`.

Needs the optional extra: ``pip install 'anomalens[llm]'``. See ``docs/llm.md``.
"""

from anomalens.explanation.llm.client import LLMClient, LLMUnavailable
from anomalens.explanation.llm.config import LLMConfig
from anomalens.explanation.llm.explainer import LLMExplainer, compose_text
from anomalens.explanation.llm.grounding import allowed_positions, check, check_text
from anomalens.explanation.llm.prompts import findings_text, load_template
from anomalens.explanation.llm.schema import LLMExplanation, ReplyError, extract_json, parse_reply

__all__ = [
    "LLMClient",
    "LLMConfig",
    "LLMExplainer",
    "LLMExplanation",
    "LLMUnavailable",
    "ReplyError",
    "allowed_positions",
    "check",
    "check_text",
    "compose_text",
    "extract_json",
    "findings_text",
    "load_template",
    "parse_reply",
]
