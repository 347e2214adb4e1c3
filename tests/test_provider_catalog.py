"""Which models are offered, and with which settings."""

import json
import re
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from conversations.providers import default_model, get_model, get_provider, offered_models
from conversations.providers.base import Provider
from conversations.providers.catalog import DEFAULT_MODELS
from tests import fakes

clean_env = fakes.clean_env


@pytest.fixture(autouse=True)
def unconfigured(clean_env, settings):
    settings.CHAT_MODELS = ""
    settings.CHAT_DEMO_MODEL = ""
    settings.CHAT_MODEL_OPTIONS = None


@pytest.fixture
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.fixture
def anthropic_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def keys():
    return [spec.key for spec in offered_models()]


def test_with_no_key_only_the_demo_model_is_offered():
    [demo] = offered_models()

    assert (demo.key, demo.label) == ("demo:demo", "Demo (offline)")
    assert default_model() == demo


def test_an_openai_key_offers_the_openai_defaults_in_order(openai_key):
    assert keys() == ["openai:gpt-4.1-mini", "openai:gpt-4.1", "openai:gpt-4o-mini"]
    assert [spec.label for spec in offered_models()] == ["GPT-4.1 mini", "GPT-4.1", "GPT-4o mini"]


def test_both_keys_offer_both_default_lists(openai_key, anthropic_key):
    expected = [f"{provider}:{name}" for provider, names in DEFAULT_MODELS.items() for name in names]

    assert keys() == expected
    assert "anthropic:claude-sonnet-4-6" in keys()


def test_chat_models_lists_models_with_labels(settings, openai_key, anthropic_key):
    settings.CHAT_MODELS = "openai:gpt-4.1-mini, anthropic:claude-sonnet-4-6=My Claude ,openai:llama3.1:8b=Llama"

    models = offered_models()

    assert [(m.provider, m.name, m.label) for m in models] == [
        ("openai", "gpt-4.1-mini", "GPT-4.1 mini"),
        ("anthropic", "claude-sonnet-4-6", "My Claude"),
        ("openai", "llama3.1:8b", "Llama"),
    ]


def test_fake_provider_option_suffixes_stay_part_of_the_model_id(settings, openai_key):
    settings.CHAT_MODELS = (
        "openai:fake-normal@tokens=20,openai:fake-long@tokens=500,delay=0,"
        "openai:fake-stall@tokens=4=Stalling,openai:gpt-4.1=GPT @ work"
    )

    assert [(m.name, m.label) for m in offered_models()] == [
        ("fake-normal@tokens=20", "fake-normal@tokens=20"),
        ("fake-long@tokens=500,delay=0", "fake-long@tokens=500,delay=0"),
        ("fake-stall@tokens=4", "Stalling"),
        ("gpt-4.1", "GPT @ work"),
    ]


def test_a_model_whose_provider_has_no_key_is_not_offered(settings, openai_key):
    settings.CHAT_MODELS = "anthropic:claude-sonnet-4-6,openai:gpt-4.1"

    assert keys() == ["openai:gpt-4.1"]
    assert get_model("anthropic:claude-sonnet-4-6") is None


@pytest.mark.parametrize("entry", ["gpt-4.1", "openai:", ":gpt-4.1", "mistral:large", "demo:demo"])
def test_an_invalid_chat_models_entry_raises_naming_it(settings, entry):
    settings.CHAT_MODELS = f"openai:gpt-4.1,{entry}"

    with pytest.raises(ImproperlyConfigured, match=re.escape(repr(entry))):
        offered_models()


def test_the_demo_model_is_hidden_when_a_key_is_configured(openai_key):
    assert "demo:demo" not in keys()


def test_the_demo_model_is_forced_on_with_1_and_listed_last(settings, openai_key):
    settings.CHAT_DEMO_MODEL = "1"

    assert keys()[-1] == "demo:demo"
    assert keys()[0] == "openai:gpt-4.1-mini"


def test_the_demo_model_is_never_offered_with_0(settings):
    settings.CHAT_DEMO_MODEL = "0"

    assert offered_models() == []
    assert default_model() is None


def test_the_demo_model_fills_in_when_no_listed_model_has_a_key(settings, openai_key):
    settings.CHAT_MODELS = "anthropic:claude-haiku-4-5"

    assert keys() == ["demo:demo"]


def test_get_model_and_default_model_use_the_offered_list(openai_key):
    spec = get_model("openai:gpt-4.1")

    assert (spec.provider, spec.name) == ("openai", "gpt-4.1")
    assert get_model("openai:not-offered") is None
    assert get_model("nonsense") is None
    assert default_model().key == "openai:gpt-4.1-mini"


def test_per_model_settings_come_from_the_table(anthropic_key):
    spec = get_model("anthropic:claude-sonnet-4-6")

    assert spec.max_tokens == 8192
    assert (spec.price_in, spec.price_out) == (Decimal("3"), Decimal("15"))
    assert spec.streaming is True and spec.thinking is False


def test_an_unknown_model_gets_defaults(settings, openai_key):
    settings.CHAT_MODELS = "openai:my-local-model"

    [spec] = offered_models()

    assert spec.label == "my-local-model"
    assert (spec.max_tokens, spec.price_in, spec.price_out) == (None, None, None)
    assert spec.streaming is True and spec.thinking is False


def test_chat_model_options_override_the_table_from_the_environment(settings, monkeypatch, openai_key, anthropic_key):
    settings.CHAT_MODELS = "openai:o1,openai:deepseek-reasoner=DeepSeek,anthropic:claude-sonnet-4-6"
    options = {
        "openai:o1": {"streaming": False, "price_in": "15", "price_out": 60},
        "openai:deepseek-reasoner": {"thinking": True, "label": "ignored: CHAT_MODELS label wins"},
        "anthropic:claude-sonnet-4-6": {"thinking": True, "thinking_budget": 4096, "label": "Sonnet (thinking)"},
    }
    settings.CHAT_MODEL_OPTIONS = json.dumps(options)

    o1, deepseek, sonnet = offered_models()

    assert o1.streaming is False and (o1.price_in, o1.price_out) == (Decimal("15"), Decimal("60"))
    assert deepseek.thinking is True and deepseek.label == "DeepSeek"
    assert (sonnet.thinking, sonnet.thinking_budget, sonnet.label) == (True, 4096, "Sonnet (thinking)")
    assert sonnet.max_tokens == 8192  # untouched table values stay


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["openai:o1"]', "must be a JSON object"),
        ('{"openai:o1": {"stream": false}}', "unknown option 'stream'"),
        ('{"openai:o1": {"max_tokens": true}}', "wrong type"),
        ('{"openai:o1": {"price_in": "cheap"}}', "not a number"),
    ],
)
def test_invalid_chat_model_options_raise(settings, monkeypatch, openai_key, options, message):
    settings.CHAT_MODELS = "openai:o1"
    settings.CHAT_MODEL_OPTIONS = options

    with pytest.raises(ImproperlyConfigured, match=message):
        offered_models()


def test_get_provider_returns_each_provider_and_rejects_unknown_names():
    for name in ("openai", "anthropic", "demo"):
        provider = get_provider(name)
        assert isinstance(provider, Provider) and provider.name == name

    with pytest.raises(LookupError):
        get_provider("mistral")
