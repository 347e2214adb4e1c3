"""The composer and Stop as plain form posts (JavaScript off): the same
generation module as the websocket, so the reply runs on after the redirect."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.urls import reverse

from conversations import generation
from conversations.models import Message
from devtools.fakeprovider import expected_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
async def alice_async(alice) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(alice)
    return client


async def _messages(conversation) -> list[tuple[str, str, str]]:
    return await database_sync_to_async(list)(
        Message.objects.filter(conversation=conversation)
        .order_by("created_at")
        .values_list("role", "status", "content")
    )


async def test_it_sends_and_the_reply_finishes_after_the_redirect(alice_async, conversation):
    response = await alice_async.post(reverse("send", args=[conversation.id]), {"text": "Hello without JS"})
    assert response.status_code == 302
    assert response["Location"] == conversation.get_absolute_url()
    running = generation.get_active(conversation.id)  # None: the instant demo reply is saved already
    if running is not None:
        await asyncio.wait_for(running.done.wait(), 20)

    (role, _, text), (reply_role, status, content) = await _messages(conversation)
    assert (role, text) == ("user", "Hello without JS")
    assert (reply_role, status) == ("assistant", "complete")
    assert "Hello without JS" in content  # the demo quotes the message


async def test_it_keeps_the_text_when_a_send_is_refused(alice_async, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=200,delay=0.01")
    await alice_async.post(reverse("send", args=[conversation.id]), {"text": "first"})
    running = generation.get_active(conversation.id)

    response = await alice_async.post(reverse("send", args=[conversation.id]), {"text": "second <b>too soon</b>"})
    body = response.content.decode()
    assert response.status_code == 409
    assert "still being written" in body
    assert "second &lt;b&gt;too soon&lt;/b&gt;</textarea>" in body
    await asyncio.wait_for(running.done.wait(), 20)
    assert [m[2] for m in await _messages(conversation) if m[0] == "user"] == ["first"]


async def test_it_refuses_an_oversized_message_and_keeps_it(alice_async, conversation, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    response = await alice_async.post(reverse("send", args=[conversation.id]), {"text": "x" * 11})
    assert response.status_code == 409
    assert "too long" in response.content.decode() and "x" * 11 in response.content.decode()
    assert await _messages(conversation) == []


async def test_it_stops_a_reply(alice_async, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=400,delay=0.02")
    await alice_async.post(reverse("send", args=[conversation.id]), {"text": "long one"})
    running = generation.get_active(conversation.id)
    response = await alice_async.post(reverse("stop", args=[conversation.id]))
    assert response.status_code == 302
    await asyncio.wait_for(running.done.wait(), 20)

    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 1.0)
    reply = (await _messages(conversation))[-1]
    assert reply[1] == "stopped"
    assert len(reply[2]) < len(expected_text("fake-long@tokens=400"))
