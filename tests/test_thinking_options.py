"""Thinking and reasoning switches per model family, through the real SDKs
to the fake provider: what each option puts in the request body."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from conversations.providers import catalog
from conversations.providers.base import TextDelta
from tests import fakes
from tests.fakes import chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake


def sent(fake) -> dict:
    return fake.requests[-1].json


async def test_qwen_style_thinking_sends_enable_thinking_and_its_budget_in_the_body(fake):
    events, error = await run(
        chat("openai", "fake-reasoning", thinking=True, thinking_style="enable_thinking", thinking_budget=500)
    )
    assert error is None and of_type(events, TextDelta)
    body = sent(fake)
    assert body["enable_thinking"] is True and body["thinking_budget"] == 500


async def test_qwen_style_without_thinking_turns_a_hybrid_models_thinking_off(fake):
    await run(chat("openai", "fake-normal", thinking_style="enable_thinking"))
    body = sent(fake)
    assert body["enable_thinking"] is False and "thinking_budget" not in body


async def test_kimi_and_glm_style_thinking_sends_a_thinking_object(fake):
    await run(chat("openai", "fake-reasoning", thinking=True, thinking_style="thinking_type"))
    assert sent(fake)["thinking"] == {"type": "enabled"}
    await run(chat("openai", "fake-normal", thinking_style="thinking_type"))
    assert sent(fake)["thinking"] == {"type": "disabled"}


async def test_deepseek_style_thinking_sends_nothing_extra_and_shows_reasoning_content(fake):
    from conversations.providers.base import ReasoningDelta

    events, error = await run(chat("openai", "fake-reasoning", thinking=True))
    assert error is None and of_type(events, ReasoningDelta)
    body = sent(fake)
    assert not {"enable_thinking", "thinking", "reasoning_effort"} & set(body)


async def test_a_reasoning_model_gets_max_completion_tokens_and_no_temperature(fake):
    _, error = await run(
        chat(
            "openai",
            "fake-reasoning-model",
            max_tokens=50,
            temperature=0.7,
            reasoning_model=True,
            reasoning_effort="low",
        )
    )
    assert error is None, error and error.detail
    body = sent(fake)
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert "temperature" not in body and body["reasoning_effort"] == "low"


async def test_the_fake_refuses_max_tokens_for_a_reasoning_model_as_openai_does(fake):
    _, error = await run(chat("openai", "fake-reasoning-model", max_tokens=50, reasoning_model=False))
    assert error is not None and error.status == 400
    assert "max_completion_tokens" in error.detail


async def test_extra_body_reaches_both_kinds_of_server(fake):
    await run(chat("openai", "fake-normal", extra_body={"chat_template_kwargs": {"enable_thinking": False}}))
    assert sent(fake)["chat_template_kwargs"] == {"enable_thinking": False}
    await run(chat("anthropic", "fake-normal", temperature=0.5, extra_body={"top_k": 5}))
    assert sent(fake)["top_k"] == 5 and sent(fake)["temperature"] == 0.5


@pytest.mark.parametrize(
    ("name", "reasoning"),
    [("o1", True), ("o3-mini", True), ("o4-mini-2025-04-16", True), ("gpt-5", True), ("gpt-5-mini", True),
     ("gpt-4.1-mini", False), ("ollama3", False), ("deepseek-reasoner", False), ("o", False)],
)  # fmt: skip
def test_openais_reasoning_models_are_told_from_their_name(name, reasoning):
    from conversations.providers.openai import REASONING_MODEL

    assert bool(REASONING_MODEL.match(name)) is reasoning


def test_the_model_options_take_the_thinking_switches_and_refuse_an_unknown_style(settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings.CHAT_MODELS = "openai:qwen3-32b"
    options = {"thinking": True, "thinking_style": "enable_thinking", "extra_body": {"top_k": 20}}
    settings.CHAT_MODEL_OPTIONS = {"openai:qwen3-32b": options}
    spec = catalog.get_model("openai:qwen3-32b")
    assert spec.thinking and spec.thinking_style == "enable_thinking" and spec.extra_body == {"top_k": 20}
    settings.CHAT_MODEL_OPTIONS = {"openai:qwen3-32b": {"thinking_style": "qwen"}}
    with pytest.raises(ImproperlyConfigured, match="thinking_style"):
        catalog.get_model("openai:qwen3-32b")
