"""Named endpoints: many OpenAI-compatible and Anthropic servers at once,
each with its own base URL, key variable and headers (CHAT_ENDPOINTS)."""

import asyncio
import json
import os
import re
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from conversations import actions
from conversations.models import Conversation, Message
from conversations.providers import anthropic as anthropic_provider
from conversations.providers import get_model, offered_models, prices
from conversations.providers import openai as openai_provider
from conversations.providers.catalog import configured_endpoints, refresh_discovered
from devtools.fakeprovider import SCENARIOS, FakeProvider, expected_text
from tests import fakes

clean_env = fakes.clean_env
TOKENS = 12


@pytest.fixture(scope="module")
def servers():
    """Two OpenAI-compatible servers and one Anthropic one, each wanting its own key."""
    with (
        FakeProvider(tokens=TOKENS, delay=0, api_key="key-of-one") as one,
        FakeProvider(tokens=TOKENS, delay=0, api_key="key-of-two") as two,
        FakeProvider(tokens=TOKENS, delay=0, api_key="key-of-claude") as claude,
    ):
        yield one, two, claude


@pytest.fixture
async def endpoints(servers, clean_env, monkeypatch, settings):
    one, two, claude = servers
    for server in servers:
        server.clear()
    monkeypatch.setenv("ONE_KEY", "key-of-one")
    monkeypatch.setenv("TWO_KEY", "key-of-two")
    monkeypatch.setenv("CLAUDE_KEY", "key-of-claude")
    monkeypatch.setenv("APP_URL", "https://chat.example")
    settings.CHAT_PROVIDER_MAX_RETRIES = 0
    settings.CHAT_ENDPOINTS = json.dumps(
        {
            "one": {"kind": "openai", "base_url": one.openai_base_url, "key_env": "ONE_KEY", "models": ["fake-normal"]},
            "two": {
                "kind": "openai",
                "base_url": two.openai_base_url,
                "key_env": "TWO_KEY",
                "headers": {"HTTP-Referer": "${APP_URL}/", "X-Title": "Chat"},
                "models": [{"id": "fake-normal", "label": "Two", "price_in": "1", "price_out": "2"}],
            },
            "claude": {
                "kind": "anthropic",
                "base_url": claude.anthropic_base_url,
                "key_env": "CLAUDE_KEY",
                "models": [{"id": "fake-normal", "max_tokens": 100}],
            },
        }
    )
    yield servers
    await openai_provider.clients.aclose()
    await anthropic_provider.clients.aclose()


async def _finished(running) -> Message:
    await asyncio.wait_for(running.done.wait(), 10)
    return await Message.objects.aget(pk=running.message.id)


def _chat_posts(server) -> list:
    return [r for r in server.requests if r.method == "POST"]


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_switches_between_three_endpoints_of_two_kinds_each_with_its_own_key(
    alice, alice_client, endpoints
):
    one, two, claude = endpoints
    conversation = await Conversation.objects.acreate(owner=alice, model_key="one:fake-normal")
    switch = reverse("set_model", args=[conversation.id])

    replies = []
    for key in ("one:fake-normal", "two:fake-normal", "claude:fake-normal"):
        switched = await database_sync_to_async(alice_client.post)(
            switch, {"model": key}, headers={"HX-Request": "true"}
        )
        assert switched.status_code == 204
        replies.append(await _finished(await actions.start_reply(conversation.id, alice, f"Hello {key}")))

    assert [(r.provider, r.model, r.status) for r in replies] == [
        ("one", "fake-normal", "complete"),
        ("two", "fake-normal", "complete"),
        ("claude", "fake-normal", "complete"),
    ]
    assert all(r.content == expected_text("fake-normal", TOKENS) for r in replies)
    [to_one], [to_two], [to_claude] = _chat_posts(one), _chat_posts(two), _chat_posts(claude)
    assert (to_one.path, to_one.headers["authorization"]) == ("/v1/chat/completions", "Bearer key-of-one")
    assert (to_two.path, to_two.headers["authorization"]) == ("/v1/chat/completions", "Bearer key-of-two")
    assert (to_claude.path, to_claude.headers["x-api-key"]) == ("/v1/messages", "key-of-claude")
    assert to_claude.json["max_tokens"] == 100
    # Only "two" sends the extra headers, its variable read at call time.
    assert (to_two.headers["http-referer"], to_two.headers["x-title"]) == ("https://chat.example/", "Chat")
    assert "http-referer" not in to_one.headers and "x-title" not in to_claude.headers


@pytest.mark.django_db
def test_an_endpoints_models_are_offered_only_while_its_key_is_set(endpoints, monkeypatch):
    assert [m.key for m in offered_models()] == ["one:fake-normal", "two:fake-normal", "claude:fake-normal"]
    assert [(m.provider, m.endpoint_name, m.label) for m in offered_models()][1] == ("openai", "two", "Two")

    monkeypatch.delenv("TWO_KEY")

    assert [m.key for m in offered_models()] == ["one:fake-normal", "claude:fake-normal"]
    assert get_model("two:fake-normal") is None


def test_the_built_in_endpoints_keep_todays_keys_beside_configured_ones(endpoints, monkeypatch, settings):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings.CHAT_MODELS = "openai:gpt-4.1"

    spec = get_model("openai:gpt-4.1")

    assert (spec.provider, spec.endpoint_name, spec.endpoint.key_env) == ("openai", "openai", "OPENAI_API_KEY")
    assert [m.key for m in offered_models()][:2] == ["openai:gpt-4.1", "one:fake-normal"]


def test_an_endpoints_model_table_gives_its_price(endpoints):
    assert prices()["two:fake-normal"] == (Decimal("1"), Decimal("2"))
    assert get_model("two:fake-normal").price_in == Decimal("1")


async def test_a_rejected_key_names_the_endpoints_key_variable(endpoints, monkeypatch):
    monkeypatch.setenv("TWO_KEY", "sk-wrong-SECRET")

    events, error = await fakes.run(fakes.ChatRequest(get_model("two:fake-normal"), [fakes.ChatMessage("user", "Hi")]))

    assert events == [] and error.kind == "auth" and error.status == 401
    assert "TWO_KEY" in error.message and "OPENAI_API_KEY" not in error.message
    fakes.assert_no_secret(error, "sk-wrong-SECRET")


async def test_a_keyless_endpoint_is_offered_and_reached_without_a_key(servers, clean_env, settings):
    with FakeProvider(tokens=TOKENS, delay=0) as local:
        settings.CHAT_PROVIDER_MAX_RETRIES = 0
        settings.CHAT_ENDPOINTS = {"ollama": {"kind": "openai", "base_url": local.openai_base_url, "models": ["m"]}}
        spec = get_model("ollama:m")
        try:
            _events, error = await fakes.run(fakes.ChatRequest(spec, [fakes.ChatMessage("user", "Hi")]))
        finally:
            await openai_provider.clients.aclose()

        assert error.kind == "not_found"  # the fake knows no model "m": the request did reach it
        [request] = local.requests
        assert request.headers["authorization"] == "Bearer no-key"


@pytest.mark.django_db(transaction=True)
async def test_a_removed_endpoint_leaves_its_conversations_readable_and_says_its_model_is_gone(
    alice, alice_client, endpoints, settings
):
    conversation = await Conversation.objects.acreate(owner=alice, model_key="two:fake-normal")
    reply = await _finished(await actions.start_reply(conversation.id, alice, "Hello"))
    settings.CHAT_ENDPOINTS = ""  # "two" is gone

    with pytest.raises(actions.ReplyRefused, match=re.escape("This model (two:fake-normal) is no longer offered")):
        await actions.start_reply(conversation.id, alice, "Still there?")

    page = await database_sync_to_async(alice_client.get)(reverse("conversation", args=[conversation.id]))
    assert page.status_code == 200 and str(reply.id) in page.content.decode() and "你好，世界" in page.content.decode()
    assert await Message.objects.filter(conversation=conversation).acount() == 2  # the refused text was not saved


def test_an_endpoints_file_in_toml_defines_endpoints(tmp_path, clean_env, settings, monkeypatch):
    path = tmp_path / "endpoints.toml"
    path.write_text(
        """
[deepseek]
kind = "openai"
base_url = "https://api.deepseek.com/v1/"
key_env = "DEEPSEEK_API_KEY"
models = ["deepseek-chat", { id = "deepseek-reasoner", label = "DeepSeek R1", thinking = true }]
"""
    )
    settings.CHAT_ENDPOINTS_FILE = str(path)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek")

    chat, reasoner = offered_models()

    assert (chat.key, reasoner.key, reasoner.label, reasoner.thinking) == (
        "deepseek:deepseek-chat",
        "deepseek:deepseek-reasoner",
        "DeepSeek R1",
        True,
    )
    assert reasoner.endpoint.base_url == "https://api.deepseek.com/v1"


def test_an_endpoints_file_in_json_is_read_by_its_extension(tmp_path, clean_env, settings):
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"local": {"kind": "anthropic", "base_url": "http://127.0.0.1:1", "models": ["x"]}}))
    settings.CHAT_ENDPOINTS_FILE = str(path)

    assert [(m.key, m.provider) for m in offered_models()] == [("local:x", "anthropic")]


def test_an_endpoints_file_may_redefine_a_built_in_endpoint(clean_env, settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings.CHAT_ENDPOINTS = {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["only"]}}

    assert [m.key for m in offered_models()] == ["openai:only"]

    settings.CHAT_MODELS = "openai:gpt-4.1"
    with pytest.raises(ImproperlyConfigured, match="list its models there"):
        offered_models()


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"kind": "mistral", "base_url": "http://x", "models": ["m"]}, "kind must be one of"),
        ({"kind": "openai", "base_url": "api.x.com", "models": ["m"]}, "base_url must be an http(s) URL"),
        ({"kind": "openai", "base_url": "http://x", "key_env": "sk-123", "models": ["m"]}, "key_env is the NAME"),
        ({"kind": "openai", "base_url": "http://x", "models": []}, "models must be a list"),
        ({"kind": "openai", "base_url": "http://x", "models": [{"id": "m", "tokens": 1}]}, "unknown option 'tokens'"),
        ({"kind": "openai", "base_url": "http://x", "models": ["m"], "api_key": "sk"}, "unknown fields"),
    ],
)
def test_a_bad_endpoint_raises_naming_it_and_what_is_wrong(clean_env, settings, fields, complaint):
    settings.CHAT_ENDPOINTS = json.dumps({"broken": fields})

    with pytest.raises(ImproperlyConfigured, match=re.escape(complaint)) as raised:
        offered_models()

    assert "'broken'" in str(raised.value)


def test_an_endpoint_name_is_checked(clean_env, settings):
    settings.CHAT_ENDPOINTS = {"Deep Seek": {"kind": "openai", "base_url": "http://x", "models": ["m"]}}

    with pytest.raises(ImproperlyConfigured, match="a-z, 0-9"):
        offered_models()


@pytest.fixture
def discovering(servers, clean_env, settings, monkeypatch):
    one, _two, claude = servers
    cache.clear()
    monkeypatch.setenv("ONE_KEY", "key-of-one")
    monkeypatch.setenv("CLAUDE_KEY", "key-of-claude")
    settings.CHAT_PROVIDER_MAX_RETRIES = 0
    settings.CHAT_ENDPOINTS = {
        "one": {"kind": "openai", "base_url": one.openai_base_url, "key_env": "ONE_KEY", "models": "discover"},
        "claude": {
            "kind": "anthropic",
            "base_url": claude.anthropic_base_url,
            "key_env": "CLAUDE_KEY",
            "models": "discover",
        },
    }
    yield servers
    cache.clear()


def test_discovered_models_are_the_endpoints_own_list_of_either_kind(discovering):
    one, _two, claude = discovering
    for configured in configured_endpoints():
        refresh_discovered(configured.endpoint)

    keys = [m.key for m in offered_models()]

    assert keys == [f"one:fake-{name}" for name in SCENARIOS] + [f"claude:fake-{name}" for name in SCENARIOS]
    assert [(r.method, r.path) for r in one.requests] == [("GET", "/v1/models")]
    assert [(r.method, r.path, r.headers["x-api-key"]) for r in claude.requests] == [
        ("GET", "/v1/models", "key-of-claude")
    ]
    assert get_model("claude:fake-normal").provider == "anthropic"


@pytest.mark.django_db
def test_the_model_picker_groups_each_endpoints_models_under_its_name(alice_client, conversation, endpoints):
    body = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    picker = body[body.index('id="model-picker"') : body.index("</select>", body.index('id="model-picker"'))]
    assert picker.count("<optgroup") == 3
    assert picker.index('label="two"') < picker.index('value="two:fake-normal"') < picker.index('label="claude"')


def test_a_stale_discovered_list_is_still_offered_while_it_is_fetched_again_in_the_background(discovering, settings):
    one, _two, claude = discovering
    for configured in configured_endpoints():
        refresh_discovered(configured.endpoint)
    one.clear()
    claude.clear()
    settings.CHAT_DISCOVERY_SECONDS = 0  # both lists are stale at once

    keys = [m.key for m in offered_models()]

    assert len(keys) == 2 * len(SCENARIOS)  # answered from the old lists, without waiting
    assert one.wait_for_requests(1, timeout=5) and claude.wait_for_requests(1, timeout=5)  # and asked again
    assert [r.path for r in one.requests + claude.requests] == ["/v1/models", "/v1/models"]


def test_a_missing_endpoints_file_raises_naming_it(tmp_path, clean_env, settings):
    settings.CHAT_ENDPOINTS_FILE = str(tmp_path / "nowhere.toml")

    with pytest.raises(
        ImproperlyConfigured, match=re.escape(f"CHAT_ENDPOINTS_FILE {str(tmp_path / 'nowhere.toml')!r}")
    ):
        offered_models()


def test_an_endpoints_file_is_read_again_when_it_changes(tmp_path, clean_env, settings):
    path = tmp_path / "endpoints.toml"
    path.write_text('[a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nmodels = ["x"]\n')
    settings.CHAT_ENDPOINTS_FILE = str(path)
    assert [m.key for m in offered_models()] == ["a:x"]

    path.write_text('[b]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nmodels = ["y", "z"]\n')
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))

    assert [m.key for m in offered_models()] == ["b:y", "b:z"]


def test_an_endpoints_model_table_takes_the_thinking_switches(clean_env, settings):
    qwen = {"id": "qwen-plus", "thinking": True, "thinking_style": "enable_thinking", "thinking_budget": 4000}
    settings.CHAT_ENDPOINTS = {"qwen": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "models": [qwen]}}

    spec = get_model("qwen:qwen-plus")

    assert (spec.thinking, spec.thinking_style, spec.thinking_budget) == (True, "enable_thinking", 4000)

    qwen["thinking_style"] = "loudly"
    with pytest.raises(ImproperlyConfigured, match=re.escape("endpoint 'qwen', model 'qwen-plus'['thinking_style']")):
        offered_models()
