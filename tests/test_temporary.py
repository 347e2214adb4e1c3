"""Temporary chats: they stream like any conversation, live in the worker's
memory only, write nothing to the database, end after their last tab or when
idle, never show anywhere else, and still count against limits and budgets."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client
from django.urls import reverse

from chatsite.asgi import application
from conversations import generation, temporary
from conversations.models import Budget, Conversation, Message, UsageDay
from devtools.fakeprovider import expected_text
from tests.wsclient import composer_error, connect, delta_text, first_delta, send, session_cookie, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

CLOSED_NOT_FOUND = {"type": "websocket.close", "code": 4404}


@pytest.fixture
def offered(openai_fake, settings):
    """The fake provider's models on offer (no conversation points at them)."""

    def offer(*models: str) -> str:
        settings.CHAT_MODELS = ",".join(f"openai:{m}" for m in models)
        return f"openai:{models[0]}"

    return offer


@pytest.fixture(autouse=True)
def _no_chats_left():
    yield
    for chat in temporary.chats():
        temporary.end(chat.id)


async def _open(user, chat) -> WebsocketCommunicator:
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", await session_cookie(user))]
    communicator = WebsocketCommunicator(application, f"/ws/temporary/{chat.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def test_a_temporary_chat_streams_a_reply_and_writes_nothing(alice, offered, sql_writes):
    chat = temporary.create(alice, offered("fake-normal"))
    communicator = await _open(alice, chat)
    sql_writes.statements.clear()
    await send(communicator, action="send", text="你好, nothing kept 👋🏽")
    frames = await until_final(communicator)
    await communicator.disconnect()

    assert delta_text(frames) == expected_text("fake-normal")
    assert sql_writes.statements == []
    assert not await database_sync_to_async(Message.objects.exists)()
    assert not await database_sync_to_async(UsageDay.objects.exists)()
    assert [m.role for m in chat.messages] == ["user", "assistant"] and chat.messages[1].status == "complete"
    assert "temporary-notice" not in frames[-1] and 'name="action" value="regenerate"' not in frames[-1]


async def test_the_page_says_nothing_is_kept_and_never_lists_it(alice, offered):
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.post(reverse("new_temporary"), {"text": "a secret 秘密", "model": offered("fake-normal")})
    [chat] = temporary.chats()
    await asyncio.wait_for(generation.get_active(chat.id).done.wait(), 20)
    page = (await client.get(response["Location"])).content.decode()
    assert "Nothing of this chat is saved" in page and "a secret 秘密" in page
    assert "/ws/temporary/" in page
    assert str(chat.id) not in (await client.get(reverse("index"))).content.decode()
    assert not await database_sync_to_async(Message.objects.exists)()
    assert not await database_sync_to_async(Conversation.objects.exists)()
    download = await client.get(reverse("account_export"))
    assert "秘密" not in "".join([piece.decode() async for piece in download.streaming_content])


def test_another_user_cannot_open_a_temporary_chat(alice, charlie_client, offered):
    chat = temporary.create(alice, offered("fake-normal"))
    assert charlie_client.get(reverse("temporary_chat", args=[chat.id])).status_code == 404
    assert charlie_client.post(reverse("temporary_send", args=[chat.id]), {"text": "hi"}).status_code == 404


async def test_another_users_socket_to_a_temporary_chat_is_closed(alice, charlie, offered):
    chat = temporary.create(alice, offered("fake-normal"))
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", await session_cookie(charlie))]
    communicator = WebsocketCommunicator(application, f"/ws/temporary/{chat.id}/", headers=headers)
    await communicator.connect(timeout=5)
    assert await communicator.receive_output(timeout=5) == CLOSED_NOT_FOUND
    await communicator.disconnect()
    assert chat.sockets == 0


async def test_a_reload_rejoins_the_chat_and_its_reply(alice, offered):
    chat = temporary.create(alice, offered("fake-long@tokens=60,delay=0.01"))
    first = await _open(alice, chat)
    await send(first, action="send", text="a long one")
    await first_delta(first)
    await first.disconnect()  # the tab reloads

    again = await _open(alice, chat)
    frames = await until_final(again)
    await again.disconnect()
    assert "status-complete" in frames[-1] and temporary.get(chat.id, alice) is chat


async def test_the_chat_ends_after_its_last_tab_closes(alice, offered, settings):
    settings.CHAT_TEMPORARY_GRACE_SECONDS = 0.05
    chat = temporary.create(alice, offered("fake-normal"))
    communicator = await _open(alice, chat)
    await communicator.disconnect()
    await asyncio.wait_for(chat.ended.wait(), 5)
    assert temporary.get(chat.id, alice) is None


async def test_an_idle_chat_ends_and_its_tab_is_told(alice, offered, settings):
    settings.CHAT_TEMPORARY_IDLE_MINUTES = 0.002  # 120 ms
    chat = temporary.create(alice, offered("fake-normal"))
    communicator = await _open(alice, chat)
    ended = await communicator.receive_from(timeout=5)
    assert "This temporary chat has ended; nothing of it was kept." in ended
    assert await communicator.receive_output(timeout=5) == CLOSED_NOT_FOUND
    await communicator.disconnect()
    assert temporary.get(chat.id, alice) is None


async def test_stop_ends_a_temporary_reply(alice, offered):
    chat = temporary.create(alice, offered("fake-long@tokens=400,delay=0.01"))
    communicator = await _open(alice, chat)
    await send(communicator, action="send", text="long")
    await first_delta(communicator)
    await send(communicator, action="stop")
    frames = await until_final(communicator)
    await communicator.disconnect()
    assert "status-stopped" in frames[-1] and chat.messages[-1].status == "stopped"


async def test_only_send_and_stop_work_in_a_temporary_chat(alice, offered):
    chat = temporary.create(alice, offered("fake-normal"))
    communicator = await _open(alice, chat)
    await send(communicator, action="regenerate", message=str(chat.id))
    assert "only Send and Stop work here" in await composer_error(communicator)
    await communicator.disconnect()


async def test_a_temporary_reply_counts_against_the_concurrent_replies_allowed(alice, conversation, offered, settings):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    chat = temporary.create(alice, offered("fake-long@tokens=200,delay=0.01", "fake-normal"))
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(model_key="openai:fake-normal")
    busy = await _open(alice, chat)
    await send(busy, action="send", text="long")
    await first_delta(busy)
    refused = await connect(alice, conversation)
    await send(refused, action="send", text="at the same time")
    assert "1 reply being written, the most allowed" in await composer_error(refused)
    await send(busy, action="stop")
    await until_final(busy)
    await busy.disconnect()
    await refused.disconnect()
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_temporary_replies_count_against_replies_per_minute_and_the_budget(alice, offered, settings):
    chat = temporary.create(alice, offered("fake-normal"))
    communicator = await _open(alice, chat)
    await send(communicator, action="send", text="one")
    await until_final(communicator)

    settings.CHAT_REPLIES_PER_MINUTE = 1
    await send(communicator, action="send", text="two")
    assert "1 replies in the last minute" in await composer_error(communicator)

    settings.CHAT_REPLIES_PER_MINUTE = 0
    await database_sync_to_async(Budget.objects.create)(user=alice, max_tokens=5)
    await send(communicator, action="send", text="three")
    assert "You have used your daily budget (" in await composer_error(communicator)
    await communicator.disconnect()
    assert not await database_sync_to_async(UsageDay.objects.exists)()
    assert [m.content for m in chat.messages if m.role == "user"] == ["one"]


async def test_the_no_js_forms_send_and_stop(alice, offered):
    chat = temporary.create(alice, offered("fake-normal"))
    client = Client()
    await sync_to_async(client.force_login)(alice)
    response = await sync_to_async(client.post)(reverse("temporary_send", args=[chat.id]), {"text": "no js"})
    assert response.status_code == 302
    await asyncio.wait_for(generation.get_active(chat.id).done.wait(), 20)
    assert chat.messages[-1].content == expected_text("fake-normal")
    response = await sync_to_async(client.post)(reverse("temporary_stop", args=[chat.id]))
    assert response.status_code == 302
