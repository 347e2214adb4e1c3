"""Compare across two real worker processes on one database and one Redis: a
comparison that worker A writes reaches alice's sockets on worker B, already
open or joining halfway, in every column with no gap and no repeat; Stop
through B stops every column on A."""

import asyncio
import json

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from devtools.streamview import has_delta, is_snapshot
from tests.livesite import two_workers
from tests.wsclient import column_view, is_final, session_cookie

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

# multi_fake: 80 tokens, 30 ms apart unless a model says otherwise.
MODELS = ["openai:fake-normal", "openai:fake-normal@tokens=60", "openai:fake-normal@tokens=70"]
SLOW = ["openai:fake-long@tokens=400", "openai:fake-long@tokens=410"]


@pytest.fixture(scope="module")
def comparing_workers(django_db_setup, django_db_blocker, multi_fake):
    """Two workers offering several models to compare."""
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": multi_fake.openai_base_url,
        "CHAT_MODELS": ",".join(MODELS + SLOW),
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
    }
    with two_workers(env, django_db_blocker) as workers:
        yield workers


async def _cookie(user) -> str:
    return (await session_cookie(user)).decode()


@database_sync_to_async
def _conversation(owner) -> Conversation:
    return Conversation.objects.create(owner=owner, model_key=MODELS[0])


@database_sync_to_async
def _replies(conversation) -> list[Message]:
    return list(Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at"))


def _connect(worker, conversation, cookie):
    return websockets.connect(
        f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
        origin=worker.url,
        additional_headers={"Cookie": cookie},
    )


async def _until_finals(ws, count: int) -> list[str]:
    frames, finals = [], 0
    while finals < count:
        frames.append(await asyncio.wait_for(ws.recv(), 20))
        finals += is_final(frames[-1])
    return frames


async def _until_columns(ws) -> list[str]:
    """Frames up to the one that adds the comparison's columns (its rows are saved by then)."""
    frames = []
    while 'class="comparison"' not in (frames[-1] if frames else ""):
        frames.append(await asyncio.wait_for(ws.recv(), 20))
    return frames


async def _until_every_column_streams(ws, replies) -> list[str]:
    frames = []
    while not all(any(has_delta(f) and f"#msg-{r.id}-" in f for f in frames) for r in replies):
        frames.append(await asyncio.wait_for(ws.recv(), 20))
    return frames


async def test_sockets_on_worker_b_see_every_column_of_a_comparison_on_worker_a(comparing_workers, alice):
    a, b = comparing_workers
    conversation, cookie = await _conversation(alice), await _cookie(alice)
    async with _connect(a, conversation, cookie) as on_a, _connect(b, conversation, cookie) as on_b:
        await on_a.send(json.dumps({"action": "send", "text": "three of you, please", "compare": MODELS}))
        seen_on_a = await _until_columns(on_a)
        replies = await _replies(conversation)
        seen_on_a += await _until_every_column_streams(on_a, replies)
        # Halfway through, a third tab opens on B.
        async with _connect(b, conversation, cookie) as joining:
            joined = await _until_finals(joining, 3)
        live_on_b = await _until_finals(on_b, 3)
        seen_on_a += await _until_finals(on_a, 3)

    saved = await _replies(conversation)
    assert [r.model_key for r in saved] == MODELS and all(r.status == "complete" for r in saved)
    snapshots = [f for f in joined if is_snapshot(f)]
    for reply, key in zip(saved, MODELS, strict=True):
        text = expected_text(key.split(":", 1)[1], tokens=80)
        assert reply.content == text
        assert column_view(seen_on_a, reply.id).text() == text
        assert column_view(live_on_b, reply.id).text() == text
        # The joiner had each column's snapshot from A, then its frames: no gap, no repeat.
        assert any(f'id="msg-{reply.id}"' in s for s in snapshots)
        assert column_view(joined, reply.id).text() == text
        assert sum(is_final(f) and f'id="msg-{reply.id}"' in f for f in joined) == 1


async def test_stop_through_worker_b_stops_every_column_on_worker_a(comparing_workers, alice):
    a, b = comparing_workers
    conversation, cookie = await _conversation(alice), await _cookie(alice)
    async with _connect(a, conversation, cookie) as on_a, _connect(b, conversation, cookie) as on_b:
        await on_a.send(json.dumps({"action": "send", "text": "long answers", "compare": SLOW}))
        await _until_columns(on_b)
        replies = await _replies(conversation)
        await _until_every_column_streams(on_b, replies)
        await on_b.send(json.dumps({"action": "stop"}))
        await _until_finals(on_b, 2)
        await _until_finals(on_a, 2)

    stopped = await _replies(conversation)
    assert [r.status for r in stopped] == ["stopped", "stopped"]
    assert all(0 < len(r.content) < len(expected_text(k.split(":", 1)[1])) for r, k in zip(stopped, SLOW, strict=True))
