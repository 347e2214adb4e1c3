"""The OpenAI-compatible gateway, /v1/, driven by the real openai SDK against a live server."""

import openai
import pytest
from channels.db import database_sync_to_async

from conversations.models import ApiKey, Conversation, Message
from devtools.fakeprovider import expected_reasoning, expected_text
from tests.conftest import API_TOKENS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

REPLY = expected_text("fake-normal", tokens=API_TOKENS)


@database_sync_to_async
def _key(user) -> str:
    return ApiKey.issue(user, "sdk")[1]


def _sdk(server, key) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _counts():
    return Conversation.objects.count(), Message.objects.count()


async def test_the_openai_sdk_gets_a_whole_completion_and_nothing_is_stored(api_server, alice):
    client = _sdk(api_server, await _key(alice))
    before = await database_sync_to_async(_counts)()
    completion = await client.chat.completions.create(
        model="anthropic:fake-normal",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    await client.close()
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "anthropic:fake-normal" and completion.usage.completion_tokens == API_TOKENS
    assert await database_sync_to_async(_counts)() == before


async def test_the_openai_sdk_streams_deltas_reasoning_and_usage(api_server, alice):
    client = _sdk(api_server, await _key(alice))
    stream = await client.chat.completions.create(
        model="openai:fake-reasoning",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Think, 请"}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, reasoning, finishes, usage = [], [], [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    await client.close()
    assert "".join(text) == expected_text("fake-reasoning", tokens=API_TOKENS)
    assert "".join(reasoning) == expected_reasoning("fake-reasoning")
    assert finishes == ["stop"] and usage.completion_tokens > 0


async def test_a_stored_completion_is_recorded_as_a_conversation(api_server, alice):
    client = _sdk(api_server, await _key(alice))
    completion = await client.chat.completions.create(
        model="openai:fake-normal",
        messages=[
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ],
        store=True,
    )
    await client.close()
    conversation = await database_sync_to_async(Conversation.objects.get)(owner=alice)
    transcript = await database_sync_to_async(lambda: [(m.role, m.content) for m in conversation.transcript()])()
    assert transcript == [
        ("user", "First question"),
        ("assistant", "First answer"),
        ("user", "Second question"),
        ("assistant", REPLY),
    ]
    assert completion.id == f"chatcmpl-{(await database_sync_to_async(conversation.transcript)())[-1].id}"
    assert conversation.title == "First question"


async def test_the_openai_sdk_sees_errors_in_its_own_types(api_server, alice):
    client = _sdk(api_server, await _key(alice))
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope:nope", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.APIStatusError) as failed:
        await client.chat.completions.create(
            model="openai:fake-error-500", messages=[{"role": "user", "content": "Hi"}]
        )
    assert failed.value.status_code == 502
    stream = await client.chat.completions.create(
        model="openai:fake-error-500", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _chunk in stream:
            pass
    await client.close()
    bad = _sdk(api_server, "chat_not-a-key")
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    await bad.close()


async def test_models_lists_what_the_server_offers(api_server, alice):
    client = _sdk(api_server, await _key(alice))
    listed = [model.id async for model in client.models.list()]
    await client.close()
    assert "openai:fake-normal" in listed and "anthropic:fake-normal" in listed
