"""LLM explanations: unit tests without a model, and @pytest.mark.llm tests against a real llama.cpp server
running SmolLM2-135M (tests/llm_server.py) through the official openai SDK."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from anomalens import api
from anomalens.explanation import offline
from anomalens.explanation.chat import ChatAnswer
from anomalens.explanation.llm import (
    LLMClient,
    LLMConfig,
    LLMExplainer,
    LLMExplanation,
    LLMUnavailable,
    ReplyError,
    check,
    check_text,
    compose_text,
    extract_json,
    findings_text,
    parse_reply,
)
from anomalens.explanation.llm.prompts import explain_messages, load_template, render
from anomalens.types import Prediction, Thresholds
from conftest import build_record
from llm_server import free_port, llm_server  # noqa: F401  (session fixture)

H, W = 90, 120
THRESHOLDS = Thresholds(image=1.0, pixel=0.5, method="test")


def findings_for(boxes, score: float = 1.7, dark: bool = True):
    """The record of a prediction with one rectangle per (rows, cols, peak); no boxes gives a normal image."""
    amap = np.full((H, W), 0.1, np.float32)
    image = np.full((H, W, 3), 0.5, np.float32)
    for rows, cols, peak in boxes:
        amap[rows, cols] = peak
        image[rows, cols] = 0.15 if dark else 0.9
    mask = amap >= THRESHOLDS.pixel
    anomalous = bool(mask.any())
    prediction = Prediction(score if anomalous else 0.7, amap, anomalous, mask, THRESHOLDS)
    return api.inspection_record("part.png", image, prediction, 1.0), image, prediction


@pytest.fixture
def one_bottom_left():
    return findings_for([(slice(70, 80), slice(8, 22), 1.9)])[0]


@pytest.fixture
def normal_findings():
    return findings_for([])[0]


def good_reply(**changes):
    data = {
        "anomalous": True,
        "count": 1,
        "positions": ["bottom left"],
        "description": "Dark compact spot",
        "defect_type": "stain",
        "likely_causes": ["contamination"],
        "recommended_action": "clean and re-inspect",
    }
    data.update(changes)
    return LLMExplanation.model_validate(data)


# ---------------------------------------------------------------- grounding, schema, parsing (no model)


def test_grounded_reply_passes(one_bottom_left):
    assert check(good_reply(), one_bottom_left) == []


def test_grounding_catches_wrong_count(one_bottom_left):
    problems = check(good_reply(count=3), one_bottom_left)
    assert len(problems) == 1 and '"count" is 3' in problems[0] and "1 region" in problems[0]


def test_grounding_catches_wrong_position(one_bottom_left):
    problems = check(good_reply(positions=["top right"]), one_bottom_left)
    assert any("'top right'" in p and "bottom left" in p for p in problems)
    assert check(good_reply(description="Dark spot at the top right"), one_bottom_left)
    assert check(good_reply(description="Dark spot on the left"), one_bottom_left) == []  # edge of bottom left


def test_grounding_catches_wrong_verdict(one_bottom_left, normal_findings):
    problems = check(good_reply(anomalous=False), one_bottom_left)
    assert any("verdict is anomalous" in p for p in problems)
    assert any("denies a defect" in p for p in check(good_reply(description="No defects visible"), one_bottom_left))
    normal_problems = check(good_reply(), normal_findings)
    assert any("verdict is normal" in p for p in normal_problems)
    assert any('"count" is 1' in p for p in normal_problems)
    assert any("positions" in p for p in normal_problems)
    ok = LLMExplanation(
        anomalous=False,
        count=0,
        positions=[],
        description="Surface looks normal",
        defect_type="none",
        likely_causes=[],
        recommended_action="pass the part",
    )
    assert check(ok, normal_findings) == []


def test_grounding_catches_copied_placeholders(one_bottom_left):
    assert any("placeholder" in p for p in check(good_reply(description="<at most 10 words>"), one_bottom_left))


def test_grounding_catches_counts_in_the_description(one_bottom_left):
    assert any(
        "two scratches" in p.lower()
        for p in check(good_reply(description="Two scratches near the left"), one_bottom_left)
    )


def test_check_text_accepts_the_offline_explanation():
    findings = findings_for([(slice(75, 79), slice(5, 35), 1.8), (slice(8, 16), slice(95, 103), 1.1)])[0]
    assert check_text(offline.explain(findings), findings) == []
    assert check_text("There is no anomaly in the image.", findings)


def test_schema_rejects_an_eleven_word_description():
    with pytest.raises(ValueError, match="11 words"):
        good_reply(description="one two three four five six seven eight nine ten eleven")
    assert good_reply(description="one two three four five six seven eight nine ten").description


def test_tolerant_json_parsing():
    chatty = (
        'Sure! Here is the analysis:\n```json\n{"anomalous": "true", "count": "1", "positions": '
        '"Bottom-Left corner", "description": "A dark {odd} stain", "defect_type": "stain",'
        ' "likely_causes": "oil", "recommended_action": "clean",}\n```\nHope this helps {really}.'
    )
    reply = parse_reply(chatty)
    assert reply.anomalous is True and reply.count == 1
    assert reply.positions == ["bottom left"] and reply.likely_causes == ["oil"]
    assert reply.description == "A dark {odd} stain"
    assert extract_json('text {not json} then {"a": {"b": 1}} tail') == {"a": {"b": 1}}
    with pytest.raises(ReplyError, match="no JSON"):
        parse_reply("I think the image is fine.")
    with pytest.raises(ReplyError, match="count"):
        parse_reply('{"anomalous": true, "description": "x"}')


# ---------------------------------------------------------------- config, prompts (no model)


def test_config_never_exposes_the_key(monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    env = {
        "ANOMALENS_LLM_PROVIDER": "openai",
        "ANOMALENS_LLM_MODEL": "gpt-4o-mini",
        "ANOMALENS_LLM_API_KEY_ENV": "MY_LLM_KEY",
        "ANOMALENS_LLM_VISION": "auto",
        "ANOMALENS_LLM_TIMEOUT_S": "12.5",
        "ANOMALENS_LLM_MAX_RETRIES": "1",
    }
    config = LLMConfig.from_env(env)
    assert config.api_key() == secret  # read from the environment when needed
    assert (config.timeout_s, config.max_retries, config.vision) == (12.5, 1, None)
    client = LLMClient(config)
    for shown in (
        repr(config),
        str(config),
        json.dumps(config.model_dump()),
        config.model_dump_json(),
        repr(client),
        repr(LLMExplainer(config)),
    ):
        assert secret not in shown
    assert "MY_LLM_KEY" in repr(config)
    with pytest.raises(ValueError) as info:
        LLMConfig(model="m", api_key_env=secret)  # a key pasted where a name belongs
    assert secret not in str(info.value)
    with pytest.raises(ValueError):
        LLMConfig(model="m", api_key=secret)  # no field for keys at all


def test_config_providers():
    assert (
        LLMConfig.from_env(
            {"ANOMALENS_LLM_PROVIDER": "ollama", "ANOMALENS_LLM_MODEL": "smollm2:135m"}
        ).resolved_base_url
        == "http://127.0.0.1:11434/v1"
    )
    assert LLMConfig(provider="ollama", model="x").api_key({}) == "no-key-required"
    with pytest.raises(ValueError, match="api_version"):
        LLMConfig(provider="azure", model="deployment", base_url="https://x.openai.azure.com")
    with pytest.raises(ValueError, match="base_url"):
        LLMConfig(provider="openai-compatible", model="x")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        LLMConfig(model="gpt-4o-mini").api_key({})
    with pytest.raises(ValueError, match="ANOMALENS_LLM_MODEL"):
        LLMConfig.from_env({})


def test_missing_key_is_unavailable_not_a_crash(one_bottom_left, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = LLMExplainer(LLMConfig(model="gpt-4o-mini")).explain(one_bottom_left)
    assert result.source == "offline" and "OPENAI_API_KEY" in result.reason
    assert result.text == offline.explain(one_bottom_left)


def test_prompt_override_directory(tmp_path, monkeypatch, one_bottom_left):
    assert "$findings" in load_template("explain.txt")
    (tmp_path / "explain.txt").write_text("CUSTOM $count regions\n$findings", encoding="utf-8")
    messages = explain_messages(one_bottom_left, prompts_dir=tmp_path)
    assert messages[1]["content"].startswith("CUSTOM 1 regions\nverdict: anomalous")
    assert messages[0]["content"] == render("system.txt")  # not overridden: the packaged one
    monkeypatch.setenv("ANOMALENS_PROMPTS_DIR", str(tmp_path))
    assert load_template("explain.txt").startswith("CUSTOM")
    assert "bottom left" in findings_text(one_bottom_left) and "darker" in findings_text(one_bottom_left)


class ScriptedClient(LLMClient):
    """Replies from a list, records the messages it was sent."""

    def __init__(self, replies, vision=False):
        super().__init__(
            LLMConfig(provider="openai-compatible", model="scripted", base_url="http://x/v1", vision=vision)
        )
        self.replies, self.sent = list(replies), []

    def complete(self, messages, max_tokens=None, temperature=None, json_mode=False):
        self.sent.append(messages)
        return self.replies.pop(0)


def test_retry_once_with_the_contradictions_then_accept(one_bottom_left):
    wrong = json.dumps(good_reply(count=2).model_dump())
    right = "Here you go: " + json.dumps(good_reply().model_dump())
    client = ScriptedClient([wrong, right])
    result = LLMExplainer(client=client).explain(one_bottom_left)
    assert result.source == "llm" and result.attempts == 2 and result.llm["count"] == 1
    follow_up = client.sent[1][-1]["content"]
    assert '"count" is 2' in follow_up and client.sent[1][-2] == {"role": "assistant", "content": wrong}


def test_second_contradiction_falls_back_to_offline(one_bottom_left):
    client = ScriptedClient(["no json at all", json.dumps(good_reply(anomalous=False).model_dump())])
    result = LLMExplainer(client=client).explain(one_bottom_left)
    assert result.source == "offline" and result.attempts == 2
    assert "contradicted" in result.reason and "verdict is anomalous" in result.reason
    assert result.text == offline.explain(one_bottom_left)


def test_vision_models_get_the_composite_and_the_reference():
    findings, image, prediction = findings_for([(slice(70, 80), slice(8, 22), 1.9)])
    client = ScriptedClient([json.dumps(good_reply().model_dump())], vision=True)
    LLMExplainer(client=client).explain(findings, image=image, prediction=prediction, reference=image)
    parts = client.sent[0][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts[1:])


# ---------------------------------------------------------------- a real SmolLM2 server (llama.cpp)
# What a 135M model says cannot be asserted; the protocol around it can: every request goes over the OpenAI API
# to the loopback server, and a reply (the model's own, or one planted into the server's response) is kept
# exactly when the grounding check accepts it. How often SmolLM2's own replies are rejected is a quality figure:
# bench/llm_grounding.py.


class Wire(httpx.BaseTransport):
    """The openai SDK's HTTP transport: forwards each request to the server and keeps it; ``plant(own)``
    replaces the content of the server's chat replies (``own``: what the model said, kept in ``model_replies``)."""

    def __init__(self, plant=None):
        self.inner, self.plant = httpx.HTTPTransport(), plant
        self.requests, self.model_replies = [], []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        self.requests.append(request)
        if self.plant is None or not request.url.path.endswith("/chat/completions"):
            return response
        data = json.loads(response.read())
        response.close()
        self.model_replies.append(data["choices"][0]["message"]["content"])
        data["choices"][0]["message"]["content"] = self.plant(self.model_replies[-1])
        return httpx.Response(response.status_code, json=data)

    def completions(self) -> list[dict]:
        """The JSON bodies of the chat-completion requests sent, in order."""
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith("/chat/completions")]


def server_config(server, **changes) -> LLMConfig:
    values = {
        "provider": "openai-compatible",
        "model": server.model,
        "base_url": server.base_url,
        "timeout_s": 60,
        "max_retries": 0,
        "max_tokens": 160,
    }
    values.update(changes)
    return LLMConfig(**values)


def wired_client(server, wire: Wire, **changes) -> LLMClient:
    """An ``LLMClient`` for ``server`` whose SDK client sends through ``wire``."""
    import openai

    config = server_config(server, **changes)
    sdk = openai.OpenAI(
        base_url=config.base_url,
        api_key="no-key-required",
        timeout=config.timeout_s,
        max_retries=0,
        http_client=httpx.Client(transport=wire),
    )
    return LLMClient(config, sdk_client=sdk)


@pytest.mark.llm
def test_plain_completion_returns_text(llm_server):
    client = LLMClient(server_config(llm_server, max_tokens=20))
    text = client.complete([{"role": "user", "content": "Say hello in one short sentence."}])
    assert isinstance(text, str) and text.strip()


@pytest.mark.llm
def test_text_only_server_is_detected_once_and_sent_no_images(llm_server):
    wire = Wire()
    client = wired_client(llm_server, wire, vision=None, max_tokens=16)
    assert client.supports_images is False
    findings, image, prediction = findings_for([(slice(70, 80), slice(8, 22), 1.9)])
    result = LLMExplainer(client=client).explain(findings, image=image, prediction=prediction)
    probe, *asked = wire.completions()
    assert [part["type"] for part in probe["messages"][0]["content"]] == ["text", "image_url"]
    assert len(asked) == result.attempts >= 1  # probed once, then only text
    assert all(isinstance(message["content"], str) for body in asked for message in body["messages"])


@pytest.mark.llm
def test_grounded_reply_from_the_server_is_kept_with_source_llm(llm_server, one_bottom_left):
    planted = json.dumps(good_reply().model_dump())
    wire = Wire(plant=lambda own: planted)
    result = LLMExplainer(client=wired_client(llm_server, wire, vision=False, max_tokens=16)).explain(one_bottom_left)
    assert (result.source, result.reason, result.attempts) == ("llm", "grounded", 1)
    assert result.text == compose_text(good_reply()) and result.model == llm_server.model
    [body] = wire.completions()
    assert wire.requests[-1].method == "POST" and wire.requests[-1].url == llm_server.base_url + "/chat/completions"
    assert body["model"] == llm_server.model and body["response_format"] == {"type": "json_object"}
    assert "bottom left" in body["messages"][1]["content"]  # the findings went to the model
    assert wire.model_replies[0].strip()  # and the model itself answered


@pytest.mark.llm
def test_contradiction_planted_in_the_reply_is_retried_then_answered_offline(llm_server, one_bottom_left):
    wrong = json.dumps(good_reply(count=3).model_dump())
    wire = Wire(plant=lambda own: wrong)
    result = LLMExplainer(client=wired_client(llm_server, wire, vision=False, max_tokens=16)).explain(one_bottom_left)
    problem = '"count" is 3, but the findings have 1 region'
    assert (result.source, result.attempts, result.problems) == ("offline", 2, [[problem], [problem]])
    assert result.reason == "the LLM's answer contradicted the findings after one retry: " + problem
    assert result.text == offline.explain(one_bottom_left) and result.llm["count"] == 3
    first, retry = wire.completions()
    assert retry["messages"][:-2] == first["messages"]
    assert (
        retry["messages"][-2] == {"role": "assistant", "content": wrong} and problem in retry["messages"][-1]["content"]
    )


@pytest.mark.llm
def test_the_models_own_reply_is_kept_only_when_grounded(llm_server):
    findings = findings_for([(slice(75, 79), slice(5, 35), 1.8), (slice(8, 16), slice(95, 103), 1.1)])[0]
    wire = Wire(plant=lambda own: own)
    result = LLMExplainer(client=wired_client(llm_server, wire, vision=False)).explain(findings)
    print("\nSmolLM2 result:", result.model_dump_json(indent=2))
    assert len(wire.model_replies) == result.attempts == len(result.problems)
    assert all(result.problems[:-1])  # a retry only after a rejected reply
    if result.source == "llm":
        kept = parse_reply(wire.model_replies[-1])
        assert check(kept, findings) == [] and result.text == compose_text(kept)
        assert result.reason == ("grounded" if result.attempts == 1 else "grounded after one retry")
    else:
        assert result.attempts == 2 and all(result.problems) and result.text == offline.explain(findings)
        assert result.reason.startswith("the LLM's answer contradicted the findings after one retry: ")


@pytest.mark.llm
def test_chat_turn_keeps_a_grounded_reply_and_replaces_a_contradiction(llm_server, one_bottom_left):
    question = [{"role": "user", "content": "Where is the anomaly?"}]
    answers = {}
    for planted in ("The anomaly is at the bottom left.", "The anomaly is at the top right."):
        wire = Wire(plant=lambda own, planted=planted: planted)
        explainer = LLMExplainer(client=wired_client(llm_server, wire, vision=False, max_tokens=16))
        answers[planted] = explainer.chat(question, one_bottom_left)
        [body] = wire.completions()
        assert body["messages"][0]["role"] == "system" and "bottom left" in body["messages"][0]["content"]
        assert body["messages"][1:] == question and wire.model_replies[0].strip()
    grounded, contradicting = answers.values()
    assert grounded == ChatAnswer("The anomaly is at the bottom left.", "llm", "grounded")
    assert contradicting.text == offline.answer("Where is the anomaly?", one_bottom_left)
    assert contradicting.source == "offline" and contradicting.rejected == "The anomaly is at the top right."
    assert "names the top right, but no region is there" in contradicting.reason


def test_server_down_gives_offline_quickly(one_bottom_left):
    config = LLMConfig(
        provider="openai-compatible",
        model="x",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        timeout_s=2,
        max_retries=0,
    )
    pytest.importorskip("openai")
    start = time.monotonic()
    result = LLMExplainer(config).explain(one_bottom_left)
    assert time.monotonic() - start < 10
    assert result.source == "offline" and "connection" in result.reason.lower()
    assert result.text == offline.explain(one_bottom_left)
    answer = LLMExplainer(config).chat([{"role": "user", "content": "How many regions are there?"}], one_bottom_left)
    assert answer.text == offline.answer("How many regions are there?", one_bottom_left)
    assert answer.source == "offline" and "connection" in answer.reason.lower()
    with pytest.raises(LLMUnavailable, match="connection"):
        _ = LLMClient(config).supports_images


def test_chat_answers_must_state_the_fact_asked_for():
    from anomalens.explanation.llm.grounding import check_answer

    findings = build_record(
        regions=[{"position": "top left", "grid": ["top left", "top"]}, {"position": "bottom", "grid": ["bottom"]}]
    )
    assert check_answer("How many?", "There are 2 regions.", findings) == []
    assert check_answer("How many regions?", "The anomaly is in the image of a detector.", findings)
    assert check_answer("Where is it?", "At the top left and at the bottom.", findings) == []
    assert check_answer("Where is it?", "It is located in the image of a defect detector.", findings)
    assert check_answer("Is there any anomaly in the image?", "Yes, two regions.", findings) == []
    assert check_answer("Is there any anomaly in the image?", "The anomaly is not an anomaly.", findings)
    assert check_answer("Is there any anomaly?", "No.", build_record(anomalous=False)) == []
    sized = build_record(
        regions=[{"position": "bottom", "grid": ["bottom"], "area_fraction": 0.05, "severity": "medium"}]
    )
    assert check_answer("How large is it?", "It covers about 5% of the image.", sized) == []
    assert check_answer("How large is it?", "It is 1.2% larger than the average value.", sized)
    assert check_answer("How large is it?", "It is quite big.", sized)
    assert check_answer("How severe is it?", "Medium: the peak is 1.3 times the threshold.", sized) == []
    assert check_answer("How severe is it?", "It is critical.", sized)
    assert check_answer("How severe is it?", "About 0.3% more severe than average.", sized)


def test_every_offline_answer_passes_the_answer_check(one_bottom_left):
    questions = (
        "Is there any anomaly in the image?",
        "Where is it?",
        "How many are there?",
        "How large is it?",
        "How severe is it?",
        "What could cause it?",
    )
    normal = build_record(anomalous=False)
    for findings in (one_bottom_left, normal):
        for question in questions:
            from anomalens.explanation.llm.grounding import check_answer

            assert check_answer(question, offline.answer(question, findings), findings) == [], question


def test_similar_past_cases_reach_the_prompt_and_the_fallback(one_bottom_left):
    past = ["crack at the bottom left, seen 2026-11-02: cause was a worn press die, fixed by replacing the die"]
    client = ScriptedClient(["no json", "still no json"])
    result = LLMExplainer(client=client).explain(one_bottom_left, seen_before=past)
    prompt = client.sent[0][1]["content"]
    assert "seen before" in prompt.lower() and "worn press die" in prompt
    assert "worn press die" not in explain_messages(one_bottom_left)[1]["content"]
    assert result.source == "offline" and "worn press die" in result.text
    chat_client = ScriptedClient(["The anomaly is at the bottom left; last time a worn press die caused it."])
    LLMExplainer(client=chat_client).chat(
        [{"role": "user", "content": "What could cause it?"}], findings=one_bottom_left, seen_before=past
    )
    assert "worn press die" in chat_client.sent[0][0]["content"]
