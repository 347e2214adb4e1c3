"""Start-up warm-up: the first reply's one-off costs are paid before anyone streams."""

import asyncio

from conversations.lifecycle import warm_up
from conversations.providers import anthropic as anthropic_provider
from conversations.providers import openai as openai_provider


async def test_it_builds_the_configured_providers_client(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    loop = asyncio.get_running_loop()

    warm_up()

    try:
        assert any(key[0] is loop for key in openai_provider.clients._clients)
    finally:
        await openai_provider.clients.aclose()


async def test_it_warms_up_without_any_provider_key():
    warm_up()  # no key: nothing to build, and no error
    assert not any(key[0] is asyncio.get_running_loop() for key in openai_provider.clients._clients)


async def test_it_builds_a_client_for_each_configured_endpoint_with_its_key(monkeypatch, settings):
    monkeypatch.setenv("LOCAL_KEY", "sk-local")
    settings.CHAT_ENDPOINTS = {
        "local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "key_env": "LOCAL_KEY", "models": ["m"]},
        "keyless": {"kind": "anthropic", "base_url": "http://127.0.0.1:9", "models": ["m"]},
    }
    loop = asyncio.get_running_loop()

    warm_up()

    try:
        assert any(key[0] is loop and key[2] == "http://127.0.0.1:9/v1" for key in openai_provider.clients._clients)
        assert any(key[0] is loop and key[2] == "http://127.0.0.1:9" for key in anthropic_provider.clients._clients)
    finally:
        await openai_provider.clients.aclose()
        await anthropic_provider.clients.aclose()
