"""The HTTP API on two real worker processes sharing one database and Redis:
a run streamed from worker A is joined through worker B with Last-Event-ID,
and the two clients' events compared one by one."""

import asyncio

import httpx
import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from conversations.models import ApiKey, Conversation
from devtools.fakeprovider import expected_text
from tests.sseclient import events, read_all, text_of

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

REPLY = expected_text("fake-normal", tokens=80)


@database_sync_to_async
def _alice(alice) -> tuple[str, Conversation]:
    return ApiKey.issue(alice, "workers")[1], Conversation.objects.create(owner=alice, model_key="openai:fake-normal")


def _api(worker, key) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{worker.url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _same(events_) -> list[tuple]:
    return [(e.id, e.event, e.data) for e in events_]


async def _stream_until(api, method, url, count, **kwargs):
    """Open a stream and read it up to the ``count``-th text delta; returns the events and the rest as a task."""
    stream = api.stream(method, url, **kwargs)
    response = await stream.__aenter__()
    assert response.status_code == 200
    reader = events(response)
    got = []
    async for event in reader:
        got.append(event)
        if sum(e.event == "text_delta" for e in got) >= count:
            break

    async def rest():
        async for event in reader:
            got.append(event)
        await stream.__aexit__(None, None, None)
        return got

    return list(got), asyncio.create_task(rest())


async def test_a_run_joined_on_the_other_worker_with_last_event_id_has_no_gap_and_no_duplicate(workers, alice):
    a, b = workers
    key, conversation = await _alice(alice)
    async with _api(a, key) as on_a, _api(b, key) as on_b:
        before, whole_a = await _stream_until(
            on_a, "POST", f"/conversations/{conversation.id}/runs", 5, json={"input": "Hello", "stream": True}
        )
        run_id = before[0].data["run_id"]
        joined = await read_all(on_b, "GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": before[-1].id})
        from_start = await read_all(on_b, "GET", f"/runs/{run_id}/events")
        whole = await whole_a
    assert text_of(before) and text_of(before) != REPLY, "B joined in the middle of the reply"
    assert int(joined[0].id) == int(before[-1].id) + 1
    # Event by event, what B sent after the id is what A sent after it.
    assert _same(before + joined) == _same(whole)
    assert text_of(whole) == REPLY and whole[-1].event == "run_end"
    # Joined from the start after it ended on A: its stored result.
    assert text_of(from_start) == REPLY and from_start[-1].data["data"]["reply"]["status"] == "complete"


async def test_a_stateless_run_on_one_worker_is_joined_and_cancelled_from_the_other(workers, alice):
    a, b = workers
    key, _conversation = await _alice(alice)
    body = {"model": "openai:fake-normal", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with _api(a, key) as on_a, _api(b, key) as on_b:
        before, whole_a = await _stream_until(on_a, "POST", "/runs", 3, json=body)
        run_id = before[0].data["run_id"]
        _joined, rest_b = await _stream_until(on_b, "GET", f"/runs/{run_id}/events", 6)
        cancelled = await on_b.post(f"/runs/{run_id}/cancel")
        whole, joined_all = await whole_a, await rest_b
    assert cancelled.status_code == 202
    assert _same(joined_all) == _same(whole), "B saw, from the start, every event A sent"
    assert [e.data["data"] for e in whole if e.event == "finish"] == [{"reason": "stopped"}]
    assert len(text_of(whole)) < len(REPLY)


async def test_charlie_cannot_join_alices_run_on_the_other_worker(workers, alice, charlie):
    a, b = workers
    key, _conversation = await _alice(alice)
    charlie_key = await database_sync_to_async(lambda: ApiKey.issue(charlie, "x")[1])()
    body = {"model": "openai:fake-normal", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with _api(a, key) as on_a, _api(b, charlie_key) as on_b:
        before, whole_a = await _stream_until(on_a, "POST", "/runs", 1, json=body)
        refused = await on_b.get(f"/runs/{before[0].data['run_id']}/events")
        await whole_a
    assert refused.status_code == 404
