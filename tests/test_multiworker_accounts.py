"""Per-user limits, budgets and sessions hold across two real worker processes
on one database and one Redis: what one worker started or recorded counts in
the other, and a session that ends closes the user's sockets on both."""

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from django.urls import reverse

from conversations.models import Budget, Conversation, Message, UsageDay
from tests.livesite import two_workers

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def limited_workers(django_db_setup, django_db_blocker, multi_fake):
    """Two workers allowing one reply in flight per user and two a minute."""
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": multi_fake.openai_base_url,
        "CHAT_MODELS": "openai:fake-normal",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
        "CHAT_MAX_CONCURRENT_REPLIES": "1",
        "CHAT_REPLIES_PER_MINUTE": "2",
    }
    with two_workers(env, django_db_blocker) as workers:
        yield workers


@database_sync_to_async
def _conversations(alice, n: int, client: Client | None = None) -> tuple[list[Conversation], str]:
    client = client or Client()
    client.force_login(alice)
    made = [Conversation.objects.create(owner=alice, model_key="openai:fake-normal") for _ in range(n)]
    return made, f"sessionid={client.cookies['sessionid'].value}"


async def _joined(ws) -> None:
    """Once a frame is answered, the socket's handshake (joining the user's group) is done."""
    await ws.send(json.dumps({"action": "nope"}))
    await _until(ws, lambda f: "Unknown action." in f)


async def _closed_with(ws, frame: str | None = None) -> int:
    """The code the socket is closed with (sending ``frame`` first, if it is still open)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        if frame is not None:
            await ws.send(frame)
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    return closed.value.rcvd.code


def _connect(worker, conversation, cookie):
    return websockets.connect(
        f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
        origin=worker.url,
        additional_headers={"Cookie": cookie},
    )


def _is_final(frame: str) -> bool:
    return 'class="msg msg-assistant' in frame and "status-streaming" not in frame and "outerHTML" in frame


def _is_refusal(frame: str) -> bool:
    return 'id="composer-error"' in frame and "alert" in frame


async def _until(ws, done) -> str:
    while True:
        frame = await asyncio.wait_for(ws.recv(), 20)
        if done(frame):
            return frame


async def _send(worker, conversation, cookie, text: str, done=_is_final) -> str:
    async with _connect(worker, conversation, cookie) as ws:
        await ws.send(json.dumps({"action": "send", "text": text}))
        return await _until(ws, done)


@database_sync_to_async
def _user_texts(alice) -> list[str]:
    return sorted(Message.objects.of_owner(alice).filter(role="user").values_list("content", flat=True))


async def test_a_reply_in_flight_on_one_worker_counts_against_a_send_on_the_other(limited_workers, alice):
    a, b = limited_workers
    (first, second), cookie = await _conversations(alice, 2)
    async with _connect(a, first, cookie) as on_a:
        await on_a.send(json.dumps({"action": "send", "text": "a long one"}))
        await _until(on_a, lambda f: "status-streaming" in f)
        refusal = await _send(b, second, cookie, "while the other is written", _is_refusal)
        await _until(on_a, _is_final)
    assert "1 reply being written, the most allowed" in refusal
    assert await _user_texts(alice) == ["a long one"]


async def test_replies_started_on_both_workers_add_up_to_the_per_minute_limit(limited_workers, alice):
    a, b = limited_workers
    (first, second, third), cookie = await _conversations(alice, 3)
    await _send(a, first, cookie, "one")
    await _send(b, second, cookie, "two")
    refusal = await _send(a, third, cookie, "three", _is_refusal)
    assert "2 replies in the last minute, the most allowed. Try again in" in refusal
    assert await _user_texts(alice) == ["one", "two"]


async def test_what_a_reply_used_on_one_worker_counts_against_the_budget_on_the_other(limited_workers, alice):
    a, b = limited_workers
    (first, second), cookie = await _conversations(alice, 2)
    await database_sync_to_async(Budget.objects.create)(user=alice, max_tokens=5)
    await _send(a, first, cookie, "nothing used yet")
    used = await database_sync_to_async(UsageDay.objects.get)(user=alice)
    refusal = await _send(b, second, cookie, "over budget now", _is_refusal)
    assert used.calls == 1 and used.input_tokens + used.output_tokens > 5
    assert "You have used your daily budget (" in refusal and "of 5 tokens)" in refusal
    assert await _user_texts(alice) == ["nothing used yet"]


async def test_logging_out_closes_the_users_sockets_on_both_workers(limited_workers, alice):
    a, b = limited_workers
    client = Client()
    (first, second), cookie = await _conversations(alice, 2, client)
    async with _connect(a, first, cookie) as on_a, _connect(b, second, cookie) as on_b:
        await _joined(on_a)
        await _joined(on_b)
        await sync_to_async(client.post)(reverse("logout"))
        assert [await _closed_with(on_a), await _closed_with(on_b)] == [4401, 4401]


async def test_a_deactivated_account_can_send_through_neither_worker(limited_workers, alice):
    a, b = limited_workers
    (first,), cookie = await _conversations(alice, 1)
    async with _connect(b, first, cookie) as on_b:
        await _joined(on_b)
        alice.is_active = False
        await database_sync_to_async(alice.save)(update_fields=["is_active"])
        assert await _closed_with(on_b) == 4401
    async with _connect(a, first, cookie) as on_a:
        assert await _closed_with(on_a, json.dumps({"action": "send", "text": "after deactivation"})) == 4401
    assert await _user_texts(alice) == []
