"""Two real worker processes on one database and one Redis: a reply started
through worker A is joined, stopped and guarded through worker B."""

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from devtools.streamview import StreamView, has_delta
from tests.livesite import two_workers

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

REPLY = expected_text("fake-normal", tokens=80)
STAMPED = "fake-timestamped@tokens=300,delay=0.02"  # 6 s, every token its send time
STAMP = re.compile(r"t(\d{19})(?!\d)")  # markdown may drop the trailing space


@database_sync_to_async
def _alice_conversation(alice, model_key="openai:fake-normal") -> tuple[Conversation, str]:
    client = Client()
    client.force_login(alice)
    conversation = Conversation.objects.create(owner=alice, model_key=model_key)
    return conversation, f"sessionid={client.cookies['sessionid'].value}"


def _connect(worker, conversation, cookie):
    return websockets.connect(
        f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
        origin=worker.url,
        additional_headers={"Cookie": cookie},
    )


def _is_final(frame: str) -> bool:
    return 'class="msg msg-assistant' in frame and "status-streaming" not in frame and "outerHTML" in frame


async def _until(ws, done) -> list[str]:
    frames = []
    while True:
        frames.append(await asyncio.wait_for(ws.recv(), 20))
        if done(frames[-1]):
            return frames


async def _start_on_a(a, conversation, cookie):
    ws = await _connect(a, conversation, cookie).__aenter__()
    await ws.send(json.dumps({"action": "send", "text": "first"}))
    await _until(ws, has_delta)
    return ws


async def test_it_joins_a_reply_running_in_another_worker(workers, alice, multi_fake):
    a, b = workers
    conversation, cookie = await _alice_conversation(alice)
    on_a = await _start_on_a(a, conversation, cookie)
    async with _connect(b, conversation, cookie) as on_b:
        joined = await _until(on_b, _is_final)
    rest = await _until(on_a, _is_final)
    await on_a.close()

    streaming = [i for i, f in enumerate(joined) if "status-streaming" in f and "msg-assistant" in f]
    snapshot, live = joined[streaming[-1]], joined[streaming[-1] + 1 :]
    before = StreamView(snapshot).text()
    assert before and REPLY.startswith(before) and before != REPLY, "B joined after some text was written"
    assert any(has_delta(frame) for frame in live)
    # The snapshot and the frames after it show the whole reply: no gap, no repeat.
    assert StreamView(snapshot).apply(live).text() == REPLY
    assert joined[-1] == rest[-1]
    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
    assert reply.content == REPLY and reply.status == "complete"


async def test_it_stops_a_reply_from_another_worker(workers, alice, multi_fake):
    a, b = workers
    conversation, cookie = await _alice_conversation(alice)
    multi_fake.clear()
    on_a = await _start_on_a(a, conversation, cookie)
    async with _connect(b, conversation, cookie) as on_b:
        await on_b.send(json.dumps({"action": "stop"}))
        final_b = (await _until(on_b, _is_final))[-1]
    final_a = (await _until(on_a, _is_final))[-1]
    await on_a.close()

    assert "status-stopped" in final_a and final_a == final_b
    assert await asyncio.to_thread(multi_fake.wait_for_disconnect, 1.0)
    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
    assert reply.status == "stopped" and 0 < len(reply.content) < len(REPLY)


async def test_it_refuses_a_second_send_through_another_worker(workers, alice):
    a, b = workers
    conversation, cookie = await _alice_conversation(alice)
    on_a = await _start_on_a(a, conversation, cookie)
    async with _connect(b, conversation, cookie) as on_b:
        await on_b.send(json.dumps({"action": "send", "text": "second, too soon"}))
        refusal = (await _until(on_b, lambda f: 'id="composer-error"' in f))[-1]
    await _until(on_a, _is_final)
    await on_a.close()

    assert "still being written" in refusal
    users = await database_sync_to_async(list)(
        Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True)
    )
    assert users == ["first"]


@pytest.fixture
def doomed_workers(django_db_blocker, multi_fake):
    """Two workers of their own, since the test kills one; heartbeats every
    0.5 s and a 2 s timeout so the sweep comes quickly; checkpoints at the
    default 2 s."""
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": multi_fake.openai_base_url,
        "CHAT_MODELS": f"openai:{STAMPED}",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
        "CHAT_HEARTBEAT_SECONDS": "0.5",
        "CHAT_HEARTBEAT_TIMEOUT_SECONDS": "2",
    }
    with two_workers(env, django_db_blocker) as workers:
        yield workers


def _stamps(text: str) -> list[int]:
    return [int(ns) for ns in STAMP.findall(text)]


async def test_it_keeps_the_checkpointed_text_when_a_worker_is_killed(doomed_workers, alice, multi_fake):
    a, b = doomed_workers
    conversation, cookie = await _alice_conversation(alice, f"openai:{STAMPED}")
    multi_fake.clear()
    on_a = await _start_on_a(a, conversation, cookie)
    async with _connect(b, conversation, cookie) as on_b:
        seen = _stamps("".join(await _until(on_a, lambda f: STAMP.search(f) is not None)))
        await _until(on_a, lambda f: any(ns > seen[0] + 3e9 for ns in _stamps(f)))  # 3 s of text
        killed_at = time.time_ns()
        os.kill(a.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await on_a.close()
        swept = (await _until(on_b, _is_final))[-1]
        reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
        await on_b.send(json.dumps({"action": "continue", "message": str(reply.id)}))
        completed = (await _until(on_b, lambda f: _is_final(f) and "status-complete" in f))[-1]

    assert await asyncio.to_thread(multi_fake.wait_for_disconnect, 1.0)  # the upstream closed with A
    assert "status-interrupted" in swept and ">Continue<" in swept
    checkpointed = _stamps(reply.content)
    assert reply.status == "interrupted" and checkpointed == sorted(checkpointed)
    # Every token sent up to 2 s before the kill was checkpointed (plus 500 ms
    # for the checkpoint's own write, the loopback and a busy CI machine).
    assert checkpointed[-1] >= killed_at - 2.5e9
    assert checkpointed[0] <= seen[0]
    assert max(later - earlier for earlier, later in itertools.pairwise(checkpointed)) < 0.5e9  # no gap
    reply = await database_sync_to_async(Message.objects.get)(pk=reply.pk)
    assert reply.status == "complete" and reply.finish_reason == "stop"
    assert reply.content.startswith(" ".join(f"t{ns}" for ns in checkpointed))
    assert len(_stamps(reply.content)) == len(checkpointed) + 300
    assert "status-complete" in completed
    users = await database_sync_to_async(list)(
        Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True)
    )
    assert users == ["first"]


async def test_it_saves_the_reply_as_interrupted_when_a_worker_is_stopped(doomed_workers, alice):
    a, b = doomed_workers
    conversation, cookie = await _alice_conversation(alice, f"openai:{STAMPED}")
    on_a = await _start_on_a(a, conversation, cookie)
    async with _connect(b, conversation, cookie) as on_b:
        await _until(on_b, lambda f: STAMP.search(f) is not None and "status-streaming" not in f)  # live frames
        a.proc.send_signal(signal.SIGTERM)
        final = (await _until(on_b, _is_final))[-1]
    with contextlib.suppress(Exception):
        await on_a.close()
    await asyncio.to_thread(a.proc.wait, 20)

    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="assistant")
    assert reply.status == "interrupted" and "status-interrupted" in final
    assert _stamps(reply.content) and _stamps(reply.content) == _stamps(final)  # all of it, not a checkpoint
