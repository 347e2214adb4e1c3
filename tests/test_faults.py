"""The fault matrix on real services: PostgreSQL restarted, Redis restarted and
the provider paused while a reply streams (a worker killed or stopped
mid-reply is in test_multiworker).  Each time the user's message is kept, the
reply ends with the right status and text, and the page shows it."""

import asyncio
import contextlib
import json
import os
import re
import signal
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, connections
from django.test import Client

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from devtools.processes import fake_provider
from devtools.streamview import StreamView, has_delta, text_of
from tests import services
from tests.livesite import server_on_test_db, two_workers

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.restarts_services,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: the faults need Redis and PostgreSQL"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]

MODEL = "fake-normal@tokens=200,delay=0.02"  # 4 s
REPLY = expected_text(MODEL)
# Every kind of markdown block, each token stamped with its send time: what a
# tab showed can be checked stamp by stamp against what was saved.
MARKDOWN = "fake-markdown@tokens=200,delay=0.02"
STAMP = re.compile(r"t(\d{19})(?!\d)")
LONG = "fake-normal@tokens=400,delay=0.02"  # 8 s: time for PostgreSQL to stop and start
OUTAGE = 0.5  # s that a service is away in a fault
READ_TIMEOUT = 3  # s: the impatient worker's CHAT_PROVIDER_READ_TIMEOUT


@database_sync_to_async
def _alice_conversation(alice, model=MODEL) -> tuple[Conversation, str]:
    client = Client()
    client.force_login(alice)
    conversation = Conversation.objects.create(owner=alice, model_key=f"openai:{model}")
    return conversation, f"sessionid={client.cookies['sessionid'].value}"


def _connect(worker, conversation, cookie):
    return websockets.connect(
        f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
        origin=worker.url,
        additional_headers={"Cookie": cookie},
    )


def _is_final(frame: str) -> bool:
    return 'class="msg msg-assistant' in frame and "status-streaming" not in frame and "outerHTML" in frame


async def _until(ws, done, within: float = 20) -> list[str]:
    frames = []
    while True:
        frames.append(await asyncio.wait_for(ws.recv(), within))
        if done(frames[-1]):
            return frames


def _bubble_text(final: str) -> str:
    """The reply's text as its final bubble shows it."""
    start = final.index('<div class="content markdown"')
    return text_of(final[start : final.index("</div>", start)])


@database_sync_to_async
def _saved(conversation, reply_to="first") -> tuple[list[str], Message]:
    """The user's messages, oldest first, and the reply to ``reply_to``."""
    users = Message.objects.filter(conversation=conversation, role="user").order_by("created_at")
    reply = Message.objects.get(conversation=conversation, role="assistant", parent__content=reply_to)
    return list(users.values_list("content", flat=True)), reply


@pytest.fixture
def provider():
    """The fake provider in a process of its own, so that it can be paused."""
    with fake_provider({"DJANGO_SECRET_KEY": settings.SECRET_KEY}) as process:
        yield process


def _worker_env(provider, **more) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": provider.url + "/v1",
        "CHAT_MODELS": f"openai:{MODEL},openai:{MARKDOWN},openai:{LONG}",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
        **more,
    }


@pytest.fixture
def fault_workers(django_db_blocker, provider):
    """Two workers whose sockets ask about a reply silent for a second."""
    with two_workers(_worker_env(provider, CHAT_STREAM_SILENCE_SECONDS="1"), django_db_blocker) as workers:
        yield workers


@pytest.fixture
def checkpointing_worker(django_db_blocker, provider):
    """A worker that checkpoints every half second, so an outage shows soon."""
    with django_db_blocker.unblock(), server_on_test_db(_worker_env(provider, CHAT_CHECKPOINT_SECONDS="0.5")) as worker:
        yield worker


@pytest.fixture
def impatient_worker(django_db_blocker, provider):
    """A worker that gives up on a provider silent for READ_TIMEOUT seconds."""
    env = _worker_env(provider, CHAT_PROVIDER_READ_TIMEOUT=str(READ_TIMEOUT))
    with django_db_blocker.unblock(), server_on_test_db(env) as worker:
        yield worker


@pytest.fixture
def redis_restartable():
    reason = services.redis_uncontrollable(settings.REDIS_URL)
    if reason:
        pytest.skip(reason)


@pytest.fixture
def postgres(db):
    """The database settings, when PostgreSQL can be restarted here; this
    process's connections (which a restart cuts) are closed at the end."""
    reason = services.postgres_uncontrollable(connection.settings_dict)
    if reason:
        pytest.skip(reason)
    yield connection.settings_dict
    connections.close_all()  # before pytest-django flushes the database through them


@contextlib.asynccontextmanager
async def _outage(down):
    """``down`` (a ``tests.services`` outage) entered and left off the event
    loop, so that the sockets keep reading meanwhile."""
    await asyncio.to_thread(down.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(down.__exit__, None, None, None)


async def test_a_reply_streams_on_through_a_redis_restart(redis_restartable, fault_workers, alice):
    a, b = fault_workers
    conversation, cookie = await _alice_conversation(alice, MARKDOWN)
    async with _connect(a, conversation, cookie) as on_a, _connect(b, conversation, cookie) as on_b:
        await on_a.send(json.dumps({"action": "send", "text": "first"}))
        before_a = await _until(on_a, has_delta)
        before_b = await _until(on_b, has_delta)
        async with _outage(services.redis_down(settings.REDIS_URL)):
            # The fault: Redis away for a moment while frames are being published.
            await asyncio.sleep(OUTAGE)  # sleep-ok: how long the fault lasts
        after_a = await _until(on_a, _is_final)
        after_b = await _until(on_b, _is_final)

    users, reply = await _saved(conversation)
    assert users == ["first"]
    stamps = STAMP.findall(reply.content)
    assert reply.status == "complete" and len(stamps) == 200
    for before, after in ((before_a, after_a), (before_b, after_b)):
        # More than the one last frame the reply's end sends with what its window held.
        assert sum(map(has_delta, after[:-1])) > 1, "frames came again after the restart"
        # No gap and no repeat in what the tab showed while the reply streamed.
        assert STAMP.findall(StreamView.replay(before + after[:-1]).html) == stamps
        assert "status-complete" in after[-1] and STAMP.findall(after[-1]) == stamps


async def test_a_reply_that_ends_while_redis_is_down_reaches_every_tab_once_it_is_back(
    redis_restartable, fault_workers, alice
):
    a, b = fault_workers
    conversation, cookie = await _alice_conversation(alice, MARKDOWN)
    async with _connect(a, conversation, cookie) as on_a, _connect(b, conversation, cookie) as on_b:
        await on_a.send(json.dumps({"action": "send", "text": "first"}))
        await _until(on_a, has_delta)
        await _until(on_b, has_delta)
        async with _outage(services.redis_down(settings.REDIS_URL)):
            # Down until the reply has ended and been saved: its final bubble cannot be sent.
            ended = await _reply_once(conversation, lambda r: not r.is_streaming, 10)
        final_a = (await _until(on_a, _is_final))[-1]
        final_b = (await _until(on_b, _is_final))[-1]

    assert not ended.is_streaming, "the reply ended while Redis was down"
    users, reply = await _saved(conversation)
    assert users == ["first"]
    stamps = STAMP.findall(reply.content)
    assert reply.status == "complete" and len(stamps) == 200
    for final in (final_a, final_b):
        assert "status-complete" in final and STAMP.findall(final) == stamps


@database_sync_to_async
def _reply(conversation) -> Message:
    return Message.objects.get(conversation=conversation, role="assistant")


async def _reply_once(conversation, done, within: float) -> Message:
    """The reply once ``done(reply)`` holds, or as it is after ``within``
    seconds, polled every 50 ms."""
    deadline = time.monotonic() + within
    while True:
        reply = await _reply(conversation)
        if done(reply) or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.05)  # sleep-ok: a bounded poll of the database row


def _is_ack(frame: str) -> bool:
    return 'id="composer-ack"' in frame


async def test_a_reply_is_checkpointed_and_saved_whole_across_a_postgresql_restart(
    postgres, checkpointing_worker, alice
):
    worker = checkpointing_worker
    conversation, cookie = await _alice_conversation(alice, LONG)
    async with _connect(worker, conversation, cookie) as ws:
        await ws.send(json.dumps({"action": "send", "text": "first"}))
        await _until(ws, has_delta)
        async with _outage(services.postgres_down(postgres)):
            # Checkpoints fail meanwhile; the reply goes on in memory.
            await asyncio.to_thread(worker.wait_for, "checkpoint or sweep failed", 10)
        await database_sync_to_async(connections.close_all)()  # the restart cut this process's connection too
        back = await _reply(conversation)
        grown = await _reply_once(conversation, lambda r: len(r.content) > len(back.content) or not r.is_streaming, 5)
        final = (await _until(ws, _is_final))[-1]
        # The socket's own database work (its session, the next send) is done on a live connection.
        await ws.send(json.dumps({"action": "send", "text": "second"}))
        await _until(ws, _is_ack)
        await ws.send(json.dumps({"action": "stop"}))
        await _until(ws, _is_final)

    assert back.is_streaming
    assert grown.is_streaming and len(grown.content) > len(back.content), "checkpoints were written again"
    users, reply = await _saved(conversation, reply_to="first")
    assert users == ["first", "second"]
    assert reply.status == "complete" and reply.content == expected_text(LONG)
    assert "status-complete" in final and _bubble_text(final) == expected_text(LONG)


async def test_a_reply_that_ends_while_postgresql_is_down_is_saved_whole_once_it_is_back(
    postgres, checkpointing_worker, alice
):
    worker = checkpointing_worker
    conversation, cookie = await _alice_conversation(alice)
    async with _connect(worker, conversation, cookie) as ws:
        await ws.send(json.dumps({"action": "send", "text": "first"}))
        streamed = await _until(ws, has_delta)
        async with _outage(services.postgres_down(postgres)):
            # Down until the provider has sent the whole reply and the worker writes it.
            streamed += await _until(ws, lambda f: StreamView.replay([*streamed, f]).text() == REPLY)
            with contextlib.suppress(TimeoutError):
                streamed += await _until(ws, _is_final, within=OUTAGE)
        shown_unsaved = [f for f in streamed if _is_final(f)]
        await database_sync_to_async(connections.close_all)()
        reply = await _reply_once(conversation, lambda r: not r.is_streaming, 20)
        final = (await _until(ws, lambda f: _is_final(f) and "Not saved yet" not in f, within=20))[-1]

    users, _ = await _saved(conversation)
    assert users == ["first"]
    assert reply.status == "complete" and reply.content == REPLY
    # While the database was down the bubble said so; once saved it no longer does.
    assert all("Not saved yet" in f for f in shown_unsaved)
    assert "status-complete" in final and _bubble_text(final) == REPLY


async def test_a_reply_completes_when_its_provider_pauses_within_the_read_timeout(impatient_worker, alice, provider):
    conversation, cookie = await _alice_conversation(alice)
    async with _connect(impatient_worker, conversation, cookie) as ws:
        await ws.send(json.dumps({"action": "send", "text": "first"}))
        await _until(ws, has_delta)
        os.kill(provider.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(OUTAGE)  # sleep-ok: the fault, the provider silent for less than the read timeout
        finally:
            os.kill(provider.pid, signal.SIGCONT)
        final = (await _until(ws, _is_final))[-1]

    users, reply = await _saved(conversation)
    assert users == ["first"]
    assert reply.status == "complete" and reply.content == REPLY
    assert "status-complete" in final and _bubble_text(final) == REPLY


async def test_a_reply_ends_in_a_timeout_error_with_its_text_when_its_provider_pauses_too_long(
    impatient_worker, alice, provider
):
    conversation, cookie = await _alice_conversation(alice)
    async with _connect(impatient_worker, conversation, cookie) as ws:
        await ws.send(json.dumps({"action": "send", "text": "first"}))
        await _until(ws, has_delta)
        os.kill(provider.pid, signal.SIGSTOP)
        try:
            final = (await _until(ws, _is_final, within=READ_TIMEOUT + 10))[-1]
        finally:
            os.kill(provider.pid, signal.SIGCONT)

    users, reply = await _saved(conversation)
    assert users == ["first"]
    assert reply.status == "error" and reply.error_kind == "timeout"
    assert reply.content and REPLY.startswith(reply.content) and reply.content != REPLY
    assert "status-error" in final and _bubble_text(final) == reply.content
    assert "The model provider took too long to respond." in final
