"""Checkpoints, heartbeats and the sweep of replies whose worker died, in one
process (the two-process kill test is in test_multiworker.py)."""

import asyncio
import math
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.utils import timezone

from chatsite.asgi import application
from conversations import durability, generation
from conversations.models import Message
from devtools.fakeprovider import expected_text
from tests.wsclient import connect, first_delta, is_final, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SLOW = "fake-long@tokens=200,delay=0.02"  # about 4 s


@pytest.fixture
def sweeps_now(monkeypatch):
    """The next tick sweeps, whenever the last sweep of this process was."""
    monkeypatch.setattr(durability, "_last_sweep", -math.inf)


@pytest.fixture
def no_background_sweep(monkeypatch):
    """Only the test sweeps: this process's loop has just swept, as far as it knows."""
    monkeypatch.setattr(durability, "_last_sweep", math.inf)


@pytest.fixture
def many_workers(settings):
    """Behave as one worker among several (without Redis itself): a reply this
    process does not run may belong to a live worker elsewhere."""
    settings.REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:6379/15"


async def _until(condition, within=10.0):
    """Wait for ``condition()`` (a database read) to hold, in small awaits, bounded."""
    async with asyncio.timeout(within):
        while True:
            if await database_sync_to_async(condition)():
                return
            await asyncio.sleep(0.02)  # sleep-ok: the poll interval of a bounded wait on a database row


@database_sync_to_async
def _left_streaming(conversation, *, content="half a thought", heartbeat_age=None) -> Message:
    """A reply as a worker leaves it when it dies mid-stream."""
    question = Message.objects.create(conversation=conversation, role="user", content="Tell me everything")
    beat = None if heartbeat_age is None else timezone.now() - timedelta(seconds=heartbeat_age)
    created = timezone.now() - timedelta(seconds=heartbeat_age or 0)
    return Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        status="streaming",
        content=content,
        provider="openai",
        model="fake-normal",
        heartbeat_at=beat,
        created_at=created,
    )


async def _until_complete(communicator) -> list[str]:
    frames = []
    while "status-complete" not in (frames or [""])[-1]:
        frames += await until_final(communicator)
    return frames


async def _refresh(message) -> Message:
    return await database_sync_to_async(Message.objects.get)(pk=message.pk)


async def test_it_checkpoints_the_text_while_streaming(alice, conversation, openai_fake, settings, sql_writes):
    settings.CHAT_CHECKPOINT_SECONDS = 0.2
    await sync_to_async(openai_fake)(conversation, SLOW)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="write slowly")
    await first_delta(communicator)
    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
    started_beat = reply.heartbeat_at

    def checkpointed() -> bool:
        row = Message.objects.get(pk=reply.pk)
        return row.status == "streaming" and len(row.content) > 0

    await _until(checkpointed)
    midway = await _refresh(reply)
    frames = await until_final(communicator)
    await communicator.disconnect()

    assert expected_text(SLOW).startswith(midway.content)
    assert midway.heartbeat_at > started_beat
    final = await _refresh(reply)
    assert final.status == "complete" and final.content == expected_text(SLOW)
    assert is_final(frames[-1])
    updates = [sql for sql in sql_writes.statements if sql.startswith('UPDATE "conversations_message"')]
    # Checkpoints every 0.2 s over the reply's duration, plus the final save:
    # bounded by time, not by the 200 tokens.
    assert 3 <= len(updates) <= final.duration_ms / 1000 / 0.2 + 3 < 200


async def test_it_checkpoints_all_replies_of_a_worker_in_one_statement(conversation, alice, sql_writes):
    first = await _left_streaming(conversation, heartbeat_age=1)
    other = await database_sync_to_async(conversation.__class__.objects.create)(owner=alice, model_key="demo:demo")
    second = await _left_streaming(other, heartbeat_age=1)
    done = await _left_streaming(other, content="final text")
    await database_sync_to_async(Message.objects.filter(pk=done.pk).update)(status="complete")
    sql_writes.statements.clear()

    await database_sync_to_async(Message.objects.checkpoint)(
        {first.pk: ("one 你好", ""), second.pk: ("two 🎉", "because"), done.pk: ("stale checkpoint", "")}, []
    )

    assert len(sql_writes.statements) == 1
    first, second, done = [await _refresh(m) for m in (first, second, done)]
    assert (first.content, second.content, second.reasoning) == ("one 你好", "two 🎉", "because")
    assert done.content == "final text"  # a reply that ended keeps its final text
    assert first.heartbeat_at > timezone.now() - timedelta(seconds=1)


async def test_it_sweeps_replies_whose_worker_stopped_beating(
    alice, conversation, settings, many_workers, no_background_sweep
):
    settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS = 30
    dead = await _left_streaming(conversation, heartbeat_age=5)
    other = await database_sync_to_async(conversation.__class__.objects.create)(owner=alice, model_key="demo:demo")
    alive = await _left_streaming(other, heartbeat_age=5)
    communicator = await connect(alice, conversation)  # joins while the reply still looks alive elsewhere
    assert "status-streaming" in await communicator.receive_from(timeout=5)
    await database_sync_to_async(Message.objects.filter(pk=dead.pk).update)(
        heartbeat_at=timezone.now() - timedelta(seconds=31)
    )

    assert await durability.sweep() == 1
    frame = await communicator.receive_from(timeout=5)
    while not is_final(frame):
        frame = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    dead, alive = await _refresh(dead), await _refresh(alive)
    assert dead.status == "interrupted" and dead.content == "half a thought" and dead.completed_at
    assert alive.status == "streaming"
    assert "status-interrupted" in frame and "half a thought" in frame
    assert ">Continue<" in frame and ">Retry<" in frame


async def test_it_sweeps_when_a_worker_starts_serving(conversation, settings, many_workers, sweeps_now):
    settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS = 30
    dead = await _left_streaming(conversation, heartbeat_age=60)

    response = await HttpCommunicator(
        application, "GET", "/accounts/login/", headers=[(b"host", b"localhost")]
    ).get_response(timeout=10)

    assert response["status"] == 200
    await _until(lambda: Message.objects.get(pk=dead.pk).status == "interrupted")


async def test_it_marks_a_dead_reply_interrupted_when_a_socket_joins(alice, conversation, settings):
    settings.REDIS_URL = ""  # one process: a streaming reply it does not run is dead, however fresh
    dead = await _left_streaming(conversation, heartbeat_age=1)

    communicator = await connect(alice, conversation)
    frame = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    assert "status-interrupted" in frame and "half a thought" in frame and ">Continue<" in frame
    assert (await _refresh(dead)).status == "interrupted"


async def test_it_refuses_a_send_while_a_live_worker_streams(alice, conversation, openai_fake, many_workers):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    alive = await _left_streaming(conversation, heartbeat_age=2)
    communicator = await connect(alice, conversation)
    await communicator.receive_from(timeout=5)  # the current bubble

    await send(communicator, action="send", text="are you there?")
    refusal = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    assert 'id="composer-error"' in refusal and "still being written" in refusal
    assert (await _refresh(alive)).status == "streaming"
    assert not await database_sync_to_async(Message.objects.filter(content="are you there?").exists)()


async def test_it_sends_after_a_dead_workers_reply_and_keeps_its_text(
    alice, conversation, openai_fake, many_workers, settings
):
    settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS = 30
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    dead = await _left_streaming(conversation, heartbeat_age=45)
    # The socket joins before the sweep would run, so the send itself settles it.
    await database_sync_to_async(Message.objects.filter(pk=dead.pk).update)(heartbeat_at=timezone.now())
    communicator = await connect(alice, conversation)
    await communicator.receive_from(timeout=5)
    await database_sync_to_async(Message.objects.filter(pk=dead.pk).update)(
        heartbeat_at=timezone.now() - timedelta(seconds=45)
    )

    await send(communicator, action="send", text="start again")
    frames = await _until_complete(communicator)
    await communicator.disconnect()

    assert any("status-interrupted" in f and f"msg-{dead.pk}" in f for f in frames)
    dead = await _refresh(dead)
    assert dead.status == "interrupted" and dead.content == "half a thought"
    newest = await database_sync_to_async(Message.objects.select_related("parent").filter(role="assistant").latest)(
        "created_at"
    )
    assert newest.status == "complete" and newest.parent.content == "start again"


async def test_it_continues_an_interrupted_reply_from_its_checkpoint(alice, conversation, openai_fake, settings):
    settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS = 30
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    dead = await _left_streaming(conversation, content="The first half, ", heartbeat_age=60)
    communicator = await connect(alice, conversation)
    await communicator.receive_from(timeout=5)  # settled: interrupted

    await send(communicator, action="continue", message=str(dead.pk))
    await _until_complete(communicator)
    await communicator.disconnect()

    reply = await _refresh(dead)
    assert reply.status == "complete"
    assert reply.content == "The first half, " + expected_text("fake-normal")
    assert reply.parameters.get("continuations") == 1
    assert not generation.running()
