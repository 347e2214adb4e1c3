"""Two real worker processes on one database and one Redis: a reply started
through worker A is joined, stopped and guarded through worker B."""

import asyncio
import html
import json
import re

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from conversations.fakeprovider import expected_text
from conversations.markdown import render_markdown
from conversations.models import Conversation, Message

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

TAIL = re.compile(r'<span hx-swap-oob="beforeend:#msg-[0-9a-f-]+-tail">(.*?)</span>', re.S)
REPLY = expected_text("fake-normal", tokens=80)


@database_sync_to_async
def _alice_conversation(alice) -> tuple[Conversation, str]:
    client = Client()
    client.force_login(alice)
    conversation = Conversation.objects.create(owner=alice, model_key="openai:fake-normal")
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


def _text(frames) -> str:
    return "".join(html.unescape(t) for f in frames for t in TAIL.findall(f))


async def _start_on_a(a, conversation, cookie):
    ws = await _connect(a, conversation, cookie).__aenter__()
    await ws.send(json.dumps({"action": "send", "text": "first"}))
    await _until(ws, lambda f: TAIL.search(f) is not None)
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
    live_text = _text(live)
    assert live_text and REPLY.endswith(live_text)
    prefix = REPLY[: len(REPLY) - len(live_text)]
    assert prefix, "B joined after some text was written"
    assert str(render_markdown(prefix)) in snapshot  # replay holds exactly what came before the live frames
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
