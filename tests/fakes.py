"""Fixtures and helpers shared by the provider tests.

A plain module (not a conftest): test modules bind the fixtures they use,
``fake_server = fakes.fake_server`` and so on, so pytest finds them there.
"""

from __future__ import annotations

import pytest

from conversations.providers import anthropic as anthropic_provider
from conversations.providers import get_provider
from conversations.providers import openai as openai_provider
from conversations.providers.base import ChatMessage, ChatRequest, Event, ModelSpec, ProviderError
from devtools.fakeprovider import FakeProvider

OPENAI_KEY = "sk-test-openai-SECRET-0123456789"
ANTHROPIC_KEY = "fake-anthropic-key-SECRET-9876543210"
TOKENS = 20  # the fake server's default reply length
PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_CUSTOM_HEADERS",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "CHAT_MODEL_OPTIONS",
)


@pytest.fixture(scope="module")
def fake_server():
    """One fake provider server per test module."""
    with FakeProvider(tokens=TOKENS, delay=0.001) as server:
        yield server


@pytest.fixture
def clean_env(monkeypatch):
    """No provider keys or endpoints from the developer's own environment."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake(fake_server, clean_env, monkeypatch, settings):
    """The fake server, cleared, with both SDKs pointed at it."""
    fake_server.clear()
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.anthropic_base_url)
    settings.CHAT_PROVIDER_MAX_RETRIES = 2
    settings.CHAT_PROVIDER_CONNECT_TIMEOUT = 2.0
    settings.CHAT_PROVIDER_READ_TIMEOUT = 5.0
    yield fake_server
    await openai_provider.clients.aclose()
    await anthropic_provider.clients.aclose()


def chat(
    provider: str,
    model: str,
    messages: tuple[str | ChatMessage, ...] = ("Hello there",),
    *,
    system: str = "",
    temperature: float | None = None,
    max_tokens: int | None = None,
    **spec_fields,
) -> ChatRequest:
    """A request; plain strings in ``messages`` are user turns."""
    history = [m if isinstance(m, ChatMessage) else ChatMessage("user", m) for m in messages]
    spec = ModelSpec(provider, model, model, **spec_fields)
    return ChatRequest(spec, history, system=system, temperature=temperature, max_tokens=max_tokens)


async def run(request: ChatRequest) -> tuple[list[Event], ProviderError | None]:
    """All events of one call, and the ProviderError that ended it (if any)."""
    events: list[Event] = []
    try:
        async for event in get_provider(request.model.provider).events(request):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


def of_type(events: list[Event], kind: type) -> list:
    return [event for event in events if isinstance(event, kind)]


def assert_no_secret(error: ProviderError, secret: str) -> None:
    assert secret not in error.message
    assert secret not in error.detail
    assert secret not in str(error)
