"""The HTTP API against a live server, with real clients: httpx reading SSE.

alice owns a key and a conversation; charlie has a key of his own and no access."""

import asyncio
import itertools
import json

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async

from conversations.models import ApiKey, Conversation, Message
from devtools.fakeprovider import expected_reasoning, expected_text
from tests.conftest import API_TOKENS, SLOW
from tests.sseclient import read_all, text_of
from tests.wsclient import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

TOKENS = API_TOKENS
REPLY = expected_text("fake-normal", tokens=TOKENS)


@database_sync_to_async
def _key(user) -> str:
    return ApiKey.issue(user, "tests")[1]


@database_sync_to_async
def _conversation(user, model="openai:fake-normal") -> Conversation:
    return Conversation.objects.create(owner=user, model_key=model)


async def _tab(server, user, conversation):
    """A websocket on the conversation, as the owner's open tab."""
    cookie = (await session_cookie(user)).decode()
    url = f"ws://127.0.0.1:{server.port}/ws/conversations/{conversation.id}/"
    return websockets.connect(url, origin=server.url, additional_headers={"Cookie": cookie})


def _client(server, key) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_a_streamed_run_sends_typed_numbered_events_and_is_stored(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice)
    async with _client(api_server, key) as api:
        got = await read_all(
            api,
            "POST",
            f"/conversations/{conversation.id}/runs",
            json={"input": "Hello", "stream": True, "tags": ["docs"], "metadata": {"ticket": 7}},
        )
    kinds = [e.event for e in got]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds[-3:] == ["usage", "finish", "run_end"] and set(kinds[1:-3]) == {"text_delta"}
    assert [int(e.id) for e in got] == list(range(1, len(got) + 1))
    start = got[0].data
    run_id = start["run_id"]
    assert start["data"] == {"conversation": str(conversation.id), "metadata": {"ticket": 7}}
    assert start["model"] == "openai:fake-normal" and start["tags"] == ["docs"]
    assert all(e.data["run_id"] == run_id and e.data["tags"] == ["docs"] for e in got)
    assert text_of(got) == REPLY
    assert got[-2].data["data"] == {"reason": "stop"}
    assert got[-1].data["data"]["reply"]["content"] == REPLY
    reply = await database_sync_to_async(Message.objects.select_related("parent").get)(pk=run_id)
    assert reply.content == REPLY and reply.status == "complete" and reply.parent.content == "Hello"


async def test_an_invoked_run_answers_the_whole_reply_when_it_ends(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice, "anthropic:fake-normal")
    async with _client(api_server, key) as api:
        response = await api.post(f"/conversations/{conversation.id}/runs", json={"input": "你好 👋"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["content"] == REPLY and result["status"] == "complete" and result["finish_reason"] == "stop"
    assert result["model"] == "anthropic:fake-normal" and result["usage"]["output_tokens"] == TOKENS
    question = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="user")
    assert question.content == "你好 👋"


async def test_stream_modes_pick_messages_values_and_updates(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice, "openai:fake-reasoning")
    async with _client(api_server, key) as api:
        got = await read_all(
            api,
            "POST",
            f"/conversations/{conversation.id}/runs",
            json={"input": "Think", "stream": True, "stream_mode": ["values", "updates"]},
        )
        messages = await read_all(
            api,
            "GET",
            f"/runs/{got[0].data['run_id']}/events",
            params={"stream_mode": "messages"},
        )
    kinds = {e.event for e in got}
    assert kinds == {"run_start", "values", "usage", "finish", "run_end"}
    values = [e for e in got if e.event == "values"]
    assert values[-1].data["data"]["text"] == expected_text("fake-reasoning", tokens=TOKENS)
    assert values[-1].data["data"]["reasoning"] == expected_reasoning("fake-reasoning")
    assert all(len(a.data["data"]["text"]) <= len(b.data["data"]["text"]) for a, b in itertools.pairwise(values))
    # Joined after the end, from the start: the stored result, as deltas.
    assert {e.event for e in messages} == {"text_delta", "reasoning_delta"}
    assert text_of(messages) == expected_text("fake-reasoning", tokens=TOKENS)


async def test_a_client_that_rejoins_with_last_event_id_gets_no_gap_and_no_duplicate(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice, f"openai:{SLOW}")
    async with _client(api_server, key) as api:
        first = await read_all(
            api,
            "POST",
            f"/conversations/{conversation.id}/runs",
            json={"input": "Hello", "stream": True},
            until=lambda e: e.event == "text_delta" and int(e.id) >= 5,
        )
        run_id = first[0].data["run_id"]
        rest = await read_all(api, "GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": first[-1].id})
        whole = await read_all(api, "GET", f"/runs/{run_id}/events")
        status = (await api.get(f"/runs/{run_id}")).json()
    assert int(rest[0].id) == int(first[-1].id) + 1
    joined = first + rest
    assert [int(e.id) for e in joined] == list(range(1, len(joined) + 1))
    assert text_of(joined) == REPLY and joined[-1].event == "run_end"
    # The run ended and is kept in memory for a while: the exact same events again.
    assert [(e.id, e.event, e.data) for e in whole] == [(e.id, e.event, e.data) for e in joined]
    assert status["content"] == REPLY and status["status"] == "complete"


async def test_a_client_that_disconnects_leaves_the_run_going_unless_it_asks_to_cancel(api_server, alice):
    key = await _key(alice)
    kept, cancelled = await _conversation(alice, f"openai:{SLOW}"), await _conversation(alice, f"openai:{SLOW}")
    async with _client(api_server, key) as api:
        for conversation, mode in ((kept, "continue"), (cancelled, "cancel")):
            await read_all(
                api,
                "POST",
                f"/conversations/{conversation.id}/runs",
                json={"input": "Hello", "stream": True, "on_disconnect": mode},
                until=lambda e: e.event == "text_delta",
            )
        results = {}
        for conversation in (kept, cancelled):
            run_id = await database_sync_to_async(
                lambda c=conversation: str(Message.objects.get(conversation=c, role="assistant").pk)
            )()
            got = await read_all(api, "GET", f"/runs/{run_id}/events", params={"stream_mode": "updates"})
            results[conversation.id] = got[-1].data["data"]["reply"]
    assert results[kept.id]["status"] == "complete" and results[kept.id]["content"] == REPLY
    assert results[cancelled.id]["status"] == "stopped" and results[cancelled.id]["finish_reason"] == "stopped"


async def test_a_stateless_run_streams_and_stores_nothing(api_server, alice):
    key = await _key(alice)
    counts = database_sync_to_async(lambda: (Conversation.objects.count(), Message.objects.count()))
    before = await counts()
    async with _client(api_server, key) as api:
        got = await read_all(
            api,
            "POST",
            "/runs",
            json={
                "model": "openai:fake-normal",
                "messages": [
                    {"role": "user", "content": "One"},
                    {"role": "assistant", "content": "Two"},
                    {"role": "user", "content": "Three?"},
                ],
                "stream": True,
                "tags": ["eval"],
            },
        )
        invoked = await api.post(
            "/runs", json={"model": "openai:fake-normal", "messages": [{"role": "user", "content": "Hi"}]}
        )
        rejoined = await read_all(api, "GET", f"/runs/{got[0].data['run_id']}/events", headers={"Last-Event-ID": "3"})
    assert got[0].data["data"]["conversation"] is None and got[0].data["tags"] == ["eval"]
    assert text_of(got) == REPLY and got[-1].event == "run_end"
    assert invoked.status_code == 200 and invoked.json()["content"] == REPLY
    assert [e.id for e in rejoined] == [e.id for e in got[3:]]
    assert await counts() == before


async def test_a_batch_of_three_models_streams_as_one_where_one_failing_stops_no_other(api_server, alice):
    key = await _key(alice)
    async with _client(api_server, key) as api:
        got = await read_all(
            api,
            "POST",
            "/batch",
            json={
                "models": ["openai:fake-normal", "anthropic:fake-normal", "openai:fake-error-500"],
                "input": "Compare",
                "stream": True,
            },
        )
    runs = {e.data["run_id"]: e.data["model"] for e in got if e.event == "run_start"}
    assert sorted(runs.values()) == ["anthropic:fake-normal", "openai:fake-error-500", "openai:fake-normal"]
    ends = {e.data["model"]: e.data["data"]["reply"] for e in got if e.event == "run_end"}
    assert ends["openai:fake-normal"]["content"] == REPLY and ends["anthropic:fake-normal"]["content"] == REPLY
    assert ends["openai:fake-error-500"]["status"] == "error"
    errors = [e for e in got if e.event == "error"]
    assert [e.data["model"] for e in errors] == ["openai:fake-error-500"] and errors[0].data["data"]["message"]
    # Each event says its run and model (so a client filters by tag), and each
    # id is every run's position: strictly growing, one run at a time.
    assert all(e.data["model"] in e.data["tags"] for e in got)
    positions = [tuple(map(int, e.id.split("."))) for e in got]
    assert all(len(p) == 3 for p in positions)
    assert all(
        sum(b) - sum(a) >= 1 and all(y >= x for x, y in zip(a, b, strict=True))
        for a, b in itertools.pairwise(positions)
    )


async def test_a_run_started_from_the_api_shows_live_in_a_tab_and_stop_there_ends_the_stream(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice, f"openai:{SLOW}")

    async with await _tab(api_server, alice, conversation) as tab:
        async with _client(api_server, key) as api:
            async with api.stream(
                "POST", f"/conversations/{conversation.id}/runs", json={"input": "Hello from a script", "stream": True}
            ) as response:
                from tests.sseclient import events

                seen = []
                async for event in events(response):
                    seen.append(event)
                    if event.event == "text_delta" and len(seen) == 3:
                        frames = []
                        while "Hello from a script" not in "".join(frames):
                            frames.append(await asyncio.wait_for(tab.recv(), 10))
                        await tab.send(json.dumps({"action": "stop"}))
    assert seen[-1].event == "run_end"
    assert [e.data["data"] for e in seen if e.event == "finish"] == [{"reason": "stopped"}]
    assert seen[-1].data["data"]["reply"]["status"] == "stopped"


async def test_keys_are_checked_and_charlie_reaches_nothing_of_alices(api_server, alice, charlie):
    alice_key, charlie_key = await _key(alice), await _key(charlie)
    conversation = await _conversation(alice)
    async with _client(api_server, alice_key) as api:
        result = (await api.post(f"/conversations/{conversation.id}/runs", json={"input": "Hello"})).json()
    async with _client(api_server, charlie_key) as api:
        assert (await api.get(f"/conversations/{conversation.id}")).status_code == 404
        assert (await api.get(f"/runs/{result['id']}")).status_code == 404
        assert (await api.get(f"/runs/{result['id']}/events")).status_code == 404
        assert (await api.post(f"/conversations/{conversation.id}/runs", json={"input": "x"})).status_code == 404
        assert (await api.delete(f"/conversations/{conversation.id}")).status_code == 404
        assert (await api.get("/conversations")).json() == []
    async with _client(api_server, "chat_not-a-key") as api:
        assert (await api.get("/conversations")).status_code == 401
    await database_sync_to_async(lambda: ApiKey.objects.filter(owner=alice).get().revoke())()
    async with _client(api_server, alice_key) as api:
        assert (await api.get("/conversations")).status_code == 401
    async with httpx.AsyncClient(base_url=f"{api_server.url}/api/v1") as anonymous:
        assert (await anonymous.get("/conversations")).status_code == 401


async def test_conversations_are_created_listed_read_with_branches_and_deleted(api_server, alice):
    key = await _key(alice)
    async with _client(api_server, key) as api:
        created = await api.post("/conversations", json={"model": "openai:fake-normal", "title": "API 测试"})
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert (await api.post("/conversations", json={"model": "nope:nope"})).status_code == 400
        await api.post(f"/conversations/{conversation['id']}/runs", json={"input": "One"})
        listed = (await api.get("/conversations")).json()
        read = (await api.get(f"/conversations/{conversation['id']}")).json()
        deleted = await api.delete(f"/conversations/{conversation['id']}")
        gone = await api.get(f"/conversations/{conversation['id']}")
        schema = await api.get("/openapi.json")
    assert [c["title"] for c in listed] == ["API 测试"]
    assert [m["role"] for m in read["messages"]] == ["user", "assistant"]
    assert read["branch"] == [m["id"] for m in read["messages"]]
    assert read["messages"][1]["parent_id"] == read["messages"][0]["id"] and read["messages"][1]["content"] == REPLY
    assert deleted.status_code == 204 and gone.status_code == 404
    assert schema.status_code == 200 and "/api/v1/conversations/{conversation_id}/runs" in schema.json()["paths"]


async def test_a_script_joins_a_reply_started_in_the_browser_from_its_first_event(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice, f"openai:{SLOW}")

    async with await _tab(api_server, alice, conversation) as tab:
        await tab.send(json.dumps({"action": "send", "text": "From the browser"}))
        while "msg-assistant" not in await asyncio.wait_for(tab.recv(), 10):
            pass
        run_id = await database_sync_to_async(
            lambda: str(Message.objects.get(conversation=conversation, role="assistant").pk)
        )()
        async with _client(api_server, key) as api:
            got = await read_all(api, "GET", f"/runs/{run_id}/events")
    assert got[0].event == "run_start" and got[0].data["data"]["conversation"] == str(conversation.id)
    assert sum(e.event == "text_delta" for e in got) > 1, "joined while it ran: its own events, not a summary"
    assert [int(e.id) for e in got] == list(range(1, len(got) + 1))
    assert text_of(got) == REPLY and got[-1].data["data"]["reply"]["status"] == "complete"


async def test_a_conversation_run_may_compare_models_as_sibling_replies_in_one_stream(api_server, alice):
    key = await _key(alice)
    conversation = await _conversation(alice)
    models = ["openai:fake-normal", "anthropic:fake-normal", "openai:fake-error-500"]
    async with _client(api_server, key) as api:
        got = await read_all(
            api,
            "POST",
            f"/conversations/{conversation.id}/runs",
            json={"input": "Which is best?", "models": models, "stream": True, "tags": ["cmp"]},
        )
        refused = await api.post(f"/conversations/{conversation.id}/runs", json={"input": "x", "models": models[:1]})
    starts = {e.data["run_id"]: e.data for e in got if e.event == "run_start"}
    assert sorted(s["model"] for s in starts.values()) == sorted(models)
    assert all(s["tags"] == ["cmp", s["model"]] for s in starts.values())
    ends = {e.data["model"]: e.data["data"]["reply"]["status"] for e in got if e.event == "run_end"}
    assert ends == {
        "openai:fake-normal": "complete",
        "anthropic:fake-normal": "complete",
        "openai:fake-error-500": "error",
    }
    replies = await database_sync_to_async(
        lambda: {
            (m.model_key, m.parent.content)
            for m in Message.objects.filter(conversation=conversation, role="assistant").select_related("parent")
        }
    )()
    assert replies == {(model, "Which is best?") for model in models}
    assert refused.status_code == 400
