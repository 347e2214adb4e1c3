"""The HTTP API in this process (Django's AsyncClient through the real
ninja routes, the real demo provider): what it writes, and the limits and
budgets it shares with the browser."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.utils import timezone

from conversations import generation, runs, temporary
from conversations.models import ApiKey, Budget, Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def demo(settings):
    settings.CHAT_DEMO_MODEL = "1"
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 0
    return "demo:demo"


class _Api:
    """AsyncClient with a key (per request: its constructor's ``headers`` reach an ASGI request as HTTP_...)."""

    def __init__(self, raw: str) -> None:
        self.client, self.auth = AsyncClient(), {"Authorization": f"Bearer {raw}"}

    async def get(self, path):
        return await self.client.get(path, headers=self.auth)

    async def post(self, path, body):
        return await self.client.post(path, json.dumps(body), content_type="application/json", headers=self.auth)


async def _api(user) -> _Api:
    return _Api(await database_sync_to_async(lambda: ApiKey.issue(user, "tests")[1])())


async def _post(client, path, body):
    return await client.post(f"/api/v1{path}", body)


async def _settle():
    """Every run this process started has ended and been kept or written."""
    for running in generation.running():
        await asyncio.wait_for(running.done.wait(), 10)


async def test_a_stateless_run_writes_nothing_to_the_database(alice, demo, sql_writes):
    client = await _api(alice)
    await client.get("/api/v1/conversations")  # the key's first use is written (once a minute)
    sql_writes.statements.clear()
    response = await _post(client, "/runs", {"model": demo, "messages": [{"role": "user", "content": "你好"}]})
    batch = await _post(client, "/batch", {"models": [demo, demo], "input": "Two at once"})
    await _settle()
    assert response.status_code == 200 and response.json()["status"] == "complete"
    assert [r["status"] for r in batch.json()["runs"]] == ["complete", "complete"]
    assert sql_writes.statements == []
    # What they used counts for the budgets, from this process's memory.
    assert len(temporary.spent({alice.pk}, timezone.localdate())) == 3


async def test_the_api_refuses_runs_past_the_users_limits_as_the_browser_does(alice, demo, settings):
    settings.CHAT_REPLIES_PER_MINUTE = 2
    client = await _api(alice)
    body = {"model": demo, "messages": [{"role": "user", "content": "One"}]}
    assert (await _post(client, "/runs", body)).status_code == 200
    too_many = await _post(client, "/batch", {"models": [demo, demo], "input": "Two more"})
    assert too_many.status_code == 429 and "replies in the last minute" in too_many.json()["detail"]
    assert (await _post(client, "/runs", body)).status_code == 200
    refused = await _post(client, "/runs", body)
    assert refused.status_code == 429
    await _settle()


async def test_a_budget_spent_refuses_api_runs_with_its_message(alice, demo):
    await database_sync_to_async(Budget.objects.create)(user=alice, period="day", max_tokens=1)
    client = await _api(alice)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=alice, model_key=demo)
    first = await _post(client, f"/conversations/{conversation.id}/runs", {"input": "Spend it"})
    assert first.status_code == 200
    refused = await _post(client, f"/conversations/{conversation.id}/runs", {"input": "And more"})
    gateway = await _post(client, "/runs", {"model": demo, "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status_code == 429 and gateway.status_code == 429
    assert refused.json()["detail"] == gateway.json()["detail"]
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_an_invalid_request_is_refused_with_a_reason_and_starts_nothing(alice, demo):
    client = await _api(alice)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=alice, model_key=demo)
    cases = [
        ("/runs", {"model": "nope:nope", "messages": [{"role": "user", "content": "Hi"}]}, 400),
        ("/runs", {"model": demo, "messages": []}, 422),
        ("/runs", {"model": demo, "messages": [{"role": "user", "content": "Hi"}], "stream_mode": ["tokens"]}, 422),
        ("/batch", {"models": [demo] * 9, "input": "Too many"}, 400),
        ("/batch", {"models": [demo]}, 400),
        (f"/conversations/{conversation.id}/runs", {"input": "   "}, 400),
        (f"/conversations/{conversation.id}/runs", {"input": "x", "metadata": {"blob": "x" * 5000}}, 400),
    ]
    for path, body, status in cases:
        response = await _post(client, path, body)
        assert response.status_code == status, (path, body, response.content)
        assert response.json()["detail"]
    assert not generation.running() and not runs.local(conversation.id)
    assert not await Message.objects.filter(conversation=conversation).aexists()
