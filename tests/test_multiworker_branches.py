"""Branches and model-written titles across two real worker processes on one
database and one Redis: what alice does through worker A reaches her sockets
on worker B, a fresh page load through B, and never charlie."""

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.html import escape

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from tests.livesite import two_workers
from tests.wsclient import is_final, session_cookie

pytestmark = [
    pytest.mark.multiworker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: workers cannot share a channel layer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

MODEL = "openai:fake-normal"
REPLY = expected_text("fake-normal", tokens=80)
# A title model of its own, so the title shows which model wrote it; the fake
# answers with its first 14 tokens, markup included (it must arrive as text).
TITLE_MODEL = "openai:fake-normal@tokens=14"
MODEL_TITLE = "Hello, world! 你好，世界 👋🏽 🎉 <script>alert(1)</script>"
QUESTION = "Where is Hangzhou?"
EDITED = "Where is Suzhou? 苏州"


@pytest.fixture(scope="module")
def titling_workers(django_db_setup, django_db_blocker, multi_fake):
    """Two workers that have a model write each new conversation's title."""
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": multi_fake.openai_base_url,
        "CHAT_MODELS": f"{MODEL},{TITLE_MODEL}",
        "CHAT_TITLE_MODEL": TITLE_MODEL,
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
    }
    with two_workers(env, django_db_blocker) as workers:
        yield workers


async def _cookie(user) -> str:
    return (await session_cookie(user)).decode()


@database_sync_to_async
def _conversation(owner) -> Conversation:
    return Conversation.objects.create(owner=owner, model_key=MODEL)


def _connect(worker, conversation, cookie):
    return websockets.connect(
        f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
        origin=worker.url,
        additional_headers={"Cookie": cookie},
    )


async def _until(ws, done) -> list[str]:
    """Frames up to and including the first one ``done`` accepts."""
    frames = []
    while True:
        frames.append(await asyncio.wait_for(ws.recv(), 20))
        if done(frames[-1]):
            return frames


async def _send(ws, **fields) -> None:
    await ws.send(json.dumps(fields))


def _is_transcript(frame: str) -> bool:
    return 'id="transcript"' in frame and 'hx-swap-oob="outerHTML"' in frame


def _is_title(frame: str) -> bool:
    return 'id="conversation-title"' in frame and "msg-" not in frame


def _is_new_bubbles(frame: str) -> bool:
    return 'hx-swap-oob="beforeend:#transcript"' in frame


@database_sync_to_async
def _message(conversation, role, content) -> Message:
    return Message.objects.get(conversation=conversation, role=role, content=content)


@database_sync_to_async
def _branch(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in Conversation.objects.get(pk=conversation.pk).transcript()]


@database_sync_to_async
def _newest_reply(conversation) -> Message:
    return Message.objects.filter(conversation=conversation, role="assistant").latest("created_at")


@database_sync_to_async
def _branch_ids(conversation) -> list:
    return [m.id for m in Conversation.objects.get(pk=conversation.pk).transcript()]


@database_sync_to_async
def _refresh(conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


def _http(worker, path, cookie, form=None) -> tuple[int, str, list[str]]:
    """One request to ``worker`` (a POST with ``form``): status, body, Set-Cookie headers."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(f"{worker.url}{path}", data=data, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get_all("Set-Cookie") or []


async def test_a_branch_switch_through_worker_a_reaches_worker_b_and_a_fresh_page(workers, alice):
    a, b = workers
    conversation, cookie = await _conversation(alice), await _cookie(alice)
    async with _connect(a, conversation, cookie) as on_a:
        await _send(on_a, action="send", text=QUESTION)
        await _until(on_a, is_final)
        original = await _message(conversation, "user", QUESTION)
        async with _connect(b, conversation, cookie) as on_b:
            await _until(on_b, is_final)  # the finished reply, as B shows it on joining
            await _send(on_a, action="edit", message=str(original.id), text=EDITED)
            await _until(on_a, is_final)
            edited_frames = await _until(on_b, is_final)
            edited = await _message(conversation, "user", EDITED)

            await _send(on_a, action="switch", message=str(original.id))
            switched_on_a = (await _until(on_a, _is_transcript))[-1]
            switched = (await _until(on_b, _is_transcript))[-1]

    # B followed the edit (2 / 2, the new text) ...
    edit_view = next(f for f in edited_frames if _is_transcript(f))
    assert f'id="msg-{edited.id}"' in edit_view and escape(EDITED) in edit_view and "2 / 2" in edit_view
    assert f'id="msg-{original.id}"' not in edit_view
    # ... and then the switch back to the first version, the same frame A got.
    assert switched == switched_on_a
    assert f'id="msg-{original.id}"' in switched and QUESTION in switched and "1 / 2" in switched
    assert f'id="msg-{edited.id}"' not in switched and escape(EDITED) not in switched
    assert await _branch(conversation) == [("user", QUESTION), ("assistant", REPLY)]
    assert await database_sync_to_async(conversation.messages.count)() == 4  # both branches are kept

    status, page, _cookies = await asyncio.to_thread(_http, b, conversation.get_absolute_url(), cookie)
    assert status == 200
    assert f'id="msg-{original.id}"' in page and "1 / 2" in page
    assert f'id="msg-{edited.id}"' not in page and escape(EDITED) not in page


async def test_a_title_written_after_a_reply_on_worker_a_reaches_worker_b(titling_workers, alice, multi_fake):
    a, b = titling_workers
    conversation, cookie = await _conversation(alice), await _cookie(alice)
    multi_fake.clear()
    async with _connect(b, conversation, cookie) as on_b, _connect(a, conversation, cookie) as on_a:
        await _send(on_a, action="send", text=QUESTION)
        await _until(on_a, is_final)
        seen_on_b = await _until(on_b, _is_title)

    # First the first line of the message, then the reply, then the model's title.
    first = next(i for i, f in enumerate(seen_on_b) if _is_new_bubbles(f))
    final = next(i for i, f in enumerate(seen_on_b) if is_final(f))
    assert first < final < len(seen_on_b) - 1
    assert f">{QUESTION}</h1>" in seen_on_b[first]
    title_frame = seen_on_b[-1]
    assert f">{escape(MODEL_TITLE)}</h1>" in title_frame and "<script>" not in title_frame
    assert f'id="nav-{conversation.id}"' in title_frame and f">{escape(MODEL_TITLE)}</a>" in title_frame
    assert QUESTION not in title_frame

    saved = await _refresh(conversation)
    assert saved.title == MODEL_TITLE != QUESTION
    assert (saved.title_source, saved.title_model) == ("model", TITLE_MODEL)
    assert saved.title_output_tokens == 14
    titles = [r.json for r in multi_fake.requests if r.json and r.json.get("model") == "fake-normal@tokens=14"]
    assert len(titles) == 1  # one title call, though both workers saw the reply end
    assert [(m["role"], m["content"]) for m in titles[0]["messages"][:2]] == [("user", QUESTION), ("assistant", REPLY)]

    status, page, _cookies = await asyncio.to_thread(_http, b, conversation.get_absolute_url(), cookie)
    assert status == 200 and f"<title>{escape(MODEL_TITLE)}" in page


async def test_charlie_on_worker_b_never_gets_alices_switch_or_title_frames(titling_workers, alice, charlie):
    a, b = titling_workers
    conversation, cookie = await _conversation(alice), await _cookie(alice)
    own = await _conversation(charlie)
    own_message = await database_sync_to_async(Message.objects.create)(conversation=own, role="user", content="mine")
    charlie_cookie = await _cookie(charlie)
    async with (
        _connect(a, conversation, cookie) as on_a,
        _connect(b, conversation, cookie) as on_b,
        _connect(b, own, charlie_cookie) as charlies_own,
    ):
        await _send(on_a, action="send", text=QUESTION)
        await _until(on_b, _is_new_bubbles)
        # While the reply streams, charlie asks B for alice's conversation.
        async with _connect(b, conversation, charlie_cookie) as refused:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                frame = await asyncio.wait_for(refused.recv(), 10)
                pytest.fail(f"charlie got a frame of alice's conversation: {frame[:200]}")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404

        for ws in (on_a, on_b):  # every socket is read, so none holds back its close
            await _until(ws, _is_title)
        first = await _message(conversation, "assistant", REPLY)
        await _send(on_a, action="regenerate", message=str(first.id))
        for ws in (on_a, on_b):
            await _until(ws, lambda f: is_final(f) and "2 / 2" in f)
        await _send(on_a, action="switch", message=str(first.id))
        await _until(on_a, _is_transcript)
        alices_switch = (await _until(on_b, _is_transcript))[-1]

        # B has fanned out all of alice's frames; anything charlie's socket
        # wrongly got from them is queued before his own switch's frame.
        await _send(charlies_own, action="switch", message=str(own_message.id))
        charlies = await _until(charlies_own, _is_transcript)

    assert "1 / 2" in alices_switch
    assert len(charlies) == 1 and f'id="msg-{own_message.id}"' in charlies[0]
    assert QUESTION not in charlies[0] and "conversation-title" not in charlies[0]

    # Nor does a page load or a form post through B show or change alice's branch.
    status, _page, set_cookies = await asyncio.to_thread(_http, b, "/", charlie_cookie)
    assert status == 200
    csrf = next(c.split(";")[0].split("=", 1)[1] for c in set_cookies if c.startswith("csrftoken="))
    status, page, _cookies = await asyncio.to_thread(_http, b, conversation.get_absolute_url(), charlie_cookie)
    assert status == 404 and QUESTION not in page
    second = await _newest_reply(conversation)
    switch_url = f"/c/{conversation.id}/m/{second.id}/switch/"
    status, _page, _cookies = await asyncio.to_thread(
        _http, b, switch_url, f"{charlie_cookie}; csrftoken={csrf}", {"csrfmiddlewaretoken": csrf}
    )
    assert status == 404  # not 403: the token was good, the conversation is not his
    assert await _branch_ids(conversation) == [first.parent_id, first.id]  # still the switched-to reply
