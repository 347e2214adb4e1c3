"""The conversation websocket, end to end in one process: consumer →
generation → the real openai SDK → the fake provider over HTTP."""

import asyncio
import json
import re
import time

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils.html import escape

from chatsite.asgi import application
from conversations import frames, generation
from conversations.markdown import RENDER_VERSION, render_markdown
from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from devtools.streamview import StreamView, has_delta, is_snapshot
from tests.wsclient import connect, delta_text, first_delta, send, session_cookie, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@database_sync_to_async
def _reply(conversation) -> Message:
    return Message.objects.filter(conversation=conversation, role="assistant").order_by("-created_at").first()


async def test_it_streams_frames_that_add_up_to_the_reply(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="Hello 你好")
    frames = await until_final(communicator)
    await communicator.disconnect()

    bubbles = next(frame for frame in frames if 'class="msg msg-user' in frame)
    assert "Hello 你好" in bubbles and "status-streaming" in bubbles
    assert delta_text(frames) == expected_text("fake-normal")
    reply = await _reply(conversation)
    assert reply.status == "complete"
    assert reply.content == expected_text("fake-normal")
    assert (reply.provider, reply.model, reply.finish_reason) == ("openai", "fake-normal", "stop")
    assert reply.output_tokens and reply.input_tokens
    assert reply.first_token_ms is not None and reply.duration_ms >= reply.first_token_ms
    assert render_markdown(reply.content) in frames[-1]
    assert reply.html == render_markdown(reply.content) and reply.html_version == RENDER_VERSION


async def test_it_escapes_html_in_deltas(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="<b>hi</b>")
    frames = await until_final(communicator)
    await communicator.disconnect()

    assert "<script>" in expected_text("fake-normal")
    assert not any("<script>" in frame or "<img" in frame for frame in frames)
    assert any("&lt;script&gt;" in frame for frame in frames)
    assert any("&lt;b&gt;hi&lt;/b&gt;" in frame for frame in frames)


async def test_it_writes_once_at_the_end_whatever_the_length(alice, conversation, openai_fake, sql_writes, settings):
    settings.CHAT_CHECKPOINT_SECONDS = 3600  # these replies are shorter than a checkpoint interval
    counts = {}
    communicator = await connect(alice, conversation)
    for model in ("fake-normal@tokens=20", "fake-long@tokens=500,delay=0"):
        await sync_to_async(openai_fake)(conversation, model)
        sql_writes.statements.clear()
        await send(communicator, action="send", text="count the writes")
        frames = await until_final(communicator)
        counts[model] = list(sql_writes.statements)
        assert delta_text(frames) == expected_text(model)
    await communicator.disconnect()

    short, long_ = counts.values()
    # user message, reply row, conversation activity, the final save, its usage in the ledger
    assert len(short) == len(long_) == 5
    assert sum("conversations_usageday" in sql for sql in long_) == 1
    assert sum('UPDATE "conversations_message"' in sql for sql in long_) == 1


async def test_it_stops_and_closes_the_upstream_connection(alice, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=400,delay=0.02")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="tell me a long story")
    frames = await first_delta(communicator)
    await send(communicator, action="stop")
    frames += await until_final(communicator)
    await communicator.disconnect()

    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 1.0)
    reply = await _reply(conversation)
    assert reply.status == "stopped"
    assert reply.content and expected_text("fake-long@tokens=400").startswith(reply.content)
    assert len(reply.content) < len(expected_text("fake-long@tokens=400"))
    assert "Stopped." in frames[-1]


async def test_it_refuses_a_second_send_while_streaming(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=100,delay=0.01")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="first")
    await first_delta(communicator)
    await send(communicator, action="send", text="second, too soon")
    frames = await until_final(communicator)
    await communicator.disconnect()

    refusal = next(frame for frame in frames if 'id="composer-error"' in frame)
    assert "still being written" in refusal
    # The notice goes with the final bubble.
    assert '<div id="composer-error" class="composer-error" role="alert" hx-swap-oob="true"></div>' in frames[-1]
    assert not any("second, too soon" in frame for frame in frames)
    users = await database_sync_to_async(list)(
        Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True)
    )
    assert users == ["first"]
    assert (await _reply(conversation)).status == "complete"


async def test_it_acknowledges_a_saved_message_to_the_sender(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="hello")
    frames = await until_final(communicator)
    await communicator.disconnect()
    assert any('id="composer-ack"' in frame and 'data-sent="1"' in frame for frame in frames)


async def test_it_refuses_a_socket_for_another_users_conversation(charlie, conversation):
    communicator = await connect(charlie, conversation)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4404}
    await communicator.disconnect()


async def test_a_refused_socket_cannot_stop_the_owners_reply(alice, charlie, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=60,delay=0.01")
    owner = await connect(alice, conversation)
    await send(owner, action="send", text="a story")
    await first_delta(owner)
    intruder = await connect(charlie, conversation)
    await send(intruder, action="stop")  # at once, on the socket about to be refused
    await send(intruder, action="send", text="mine now")
    assert await intruder.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    await intruder.disconnect()  # returns once the consumer has handled every frame sent before
    frames = await until_final(owner)
    await owner.disconnect()

    reply = await _reply(conversation)
    assert reply.status == "complete" and reply.content == expected_text("fake-long@tokens=60")
    assert "Stopped." not in frames[-1]
    texts = await database_sync_to_async(list)(Message.objects.filter(role="user").values_list("content", flat=True))
    assert texts == ["a story"]


async def test_an_http_stop_for_another_users_conversation_is_a_404(charlie, conversation, client):
    from django.urls import reverse

    await sync_to_async(client.force_login)(charlie)
    response = await sync_to_async(client.post)(reverse("stop", args=[conversation.id]))
    assert response.status_code == 404


async def test_an_unknown_websocket_path_closes_cleanly_without_a_traceback(caplog):
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    communicator = WebsocketCommunicator(application, "/ws/nope/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    await communicator.disconnect()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 50000,
        '{"a":' * 50000,
        json.dumps({"action": ["send"]}),
        json.dumps({"action": {}}),
        json.dumps({"action": 1}),
    ],
)
async def test_a_malicious_frame_gets_an_answer_or_a_4xxx_close_and_the_socket_leaves_its_group(
    alice, conversation, openai_fake, frame, caplog
):
    from conversations import durability

    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await communicator.send_to(text_data=frame)
    answer = await communicator.receive_output(timeout=5)
    if answer["type"] == "websocket.send":
        assert 'id="composer-error"' in answer["text"]
        await send(communicator, action="send", text="still works")
        assert delta_text(await until_final(communicator)) == expected_text("fake-normal")
    else:
        assert answer["type"] == "websocket.close" and 4000 <= answer["code"] < 5000
    await communicator.disconnect()
    assert durability.open_sockets() == 0
    assert not [r for r in caplog.records if r.exc_info]
    assert await database_sync_to_async(Message.objects.filter(role="user").exclude(content="still works").count)() == 0


async def test_it_refuses_an_anonymous_socket(conversation):
    communicator = await connect(None, conversation)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_it_refuses_a_socket_from_another_origin(alice, conversation):
    headers = [(b"host", b"localhost"), (b"origin", b"http://evil.example"), (b"cookie", await session_cookie(alice))]
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.disconnect()


async def _opens(alice, conversation, host: bytes, origin: bytes, *extra) -> bool:
    headers = [(b"host", host), (b"origin", origin), (b"cookie", await session_cookie(alice)), *extra]
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"localhost", b"http://localhost:1"),  # another port
        (b"localhost", b"https://localhost"),  # another scheme
        (b"127.0.0.1", b"https://127.0.0.1"),
        (b"localhost:8000", b"http://localhost"),
        (b"localhost", b"null"),
        (b"localhost", b"http://localhost:99999"),
    ],
)
async def test_an_origin_that_differs_in_port_or_scheme_is_refused(alice, conversation, host, origin):
    assert not await _opens(alice, conversation, host, origin)


async def test_the_pages_own_origin_and_a_trusted_one_are_accepted(alice, conversation, settings):
    assert await _opens(alice, conversation, b"localhost:8000", b"http://localhost:8000")
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    assert await _opens(alice, conversation, b"localhost", b"https://chat.example.com")
    assert not await _opens(alice, conversation, b"localhost", b"http://chat.example.com")


async def test_behind_a_tls_proxy_the_https_origin_is_the_pages_own(alice, conversation, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proto = (b"x-forwarded-proto", b"https")
    assert await _opens(alice, conversation, b"localhost", b"https://localhost", proto)
    assert not await _opens(alice, conversation, b"localhost", b"http://localhost", proto)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"action": "send", "text": "hi", "evil": 1}), "Unknown field: evil"),
        (json.dumps({"action": "explode"}), "Unknown action"),
        (json.dumps({"action": "send", "text": "   "}), "Type a message first"),
        (json.dumps({"action": "send", "text": "x" * 32001}), "too long (32001 characters; the limit is 32000)"),
        ("x" * (32000 * 6 + 5000), "frame is too large"),
    ],
)
async def test_it_answers_bad_frames_clearly_and_stays_usable(alice, conversation, openai_fake, frame, error):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await communicator.send_to(text_data=frame)
    answer = await communicator.receive_from(timeout=5)
    assert 'id="composer-error"' in answer and error in answer
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 0

    await send(communicator, action="send", text="still works")
    frames = await until_final(communicator)
    await communicator.disconnect()
    assert delta_text(frames) == expected_text("fake-normal")


async def test_it_finishes_and_saves_after_the_socket_closes(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=60,delay=0.01")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="go on without me")
    await first_delta(communicator)
    active = generation.get_active(conversation.id)
    await communicator.disconnect()

    await asyncio.wait_for(active.done.wait(), timeout=20)
    reply = await _reply(conversation)
    assert reply.status == "complete"
    assert reply.content == expected_text("fake-long@tokens=60")


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="on Redis, test_faults loses frames in a real restart")
async def test_a_socket_that_missed_frames_is_shown_the_reply_again_with_no_gap(alice, conversation, openai_fake):
    model = "fake-long@tokens=120,delay=0.01"
    await sync_to_async(openai_fake)(conversation, model)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="lose some frames")
    shown = await first_delta(communicator)
    layer, group = get_channel_layer(), frames.group_name(conversation.id)
    (channel,) = layer.groups[group]
    running = generation.get_active(conversation.id)
    # Out of the group while three frames go out: they are lost to it, as when Redis restarts.
    await layer.group_discard(group, channel)
    lost_after, deadline = running.seq, time.monotonic() + 5
    while True:  # polled every 5 ms, bounded: a generation announces no frames to a test
        if running.seq >= lost_after + 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)  # sleep-ok: a bounded poll (a generation announces no frames)
    await layer.group_add(group, channel)
    shown += await until_final(communicator)
    await communicator.disconnect()

    assert running.seq >= lost_after + 3
    assert sum(map(is_snapshot, shown)) == 1, "the reply's snapshot was sent again, once"
    # No gap and no repeat in what the tab showed while the reply streamed.
    assert StreamView.replay(shown[:-1]).text() == expected_text(model)


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="on Redis, test_faults loses the final bubble in a real outage")
async def test_a_socket_that_missed_the_final_bubble_is_shown_it_after_the_reply_falls_silent(
    alice, conversation, openai_fake, settings
):
    settings.CHAT_STREAM_SILENCE_SECONDS = 0.2
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="lose the last word")
    await first_delta(communicator)
    layer, group = get_channel_layer(), frames.group_name(conversation.id)
    (channel,) = layer.groups[group]
    running = generation.get_active(conversation.id)
    # Out of the group until the reply has ended: its final bubble is lost to it, as when Redis is down.
    await layer.group_discard(group, channel)
    await asyncio.wait_for(running.done.wait(), 10)
    await layer.group_add(group, channel)
    final = (await until_final(communicator, wait=5))[-1]
    await communicator.disconnect()

    reply = await _reply(conversation)
    assert reply.status == "complete" and "status-complete" in final
    assert render_markdown(reply.content) in final


async def test_it_lets_a_second_socket_join_with_no_gap_and_no_repeat(alice, conversation, openai_fake):
    model = "fake-long@tokens=120,delay=0.01"
    await sync_to_async(openai_fake)(conversation, model)
    first = await connect(alice, conversation)
    await send(first, action="send", text="stream to two tabs")
    await first_delta(first)
    second = await connect(alice, conversation)
    joined = await until_final(second)
    rest = await until_final(first)
    await first.disconnect()
    await second.disconnect()

    snapshot, live = joined[0], joined[1:]
    assert "status-streaming" in snapshot
    before = StreamView(snapshot).text()
    assert before and expected_text(model).startswith(before) and before != expected_text(model)
    assert any(has_delta(frame) for frame in live)
    # The snapshot and the frames after it show the whole reply: no gap, no repeat.
    assert StreamView(snapshot).apply(live).text() == expected_text(model)
    assert joined[-1] == rest[-1]


@pytest.mark.parametrize(
    ("model", "kind", "says"),
    [
        ("fake-error-401", "auth", "rejected the API key. Check OPENAI_API_KEY"),
        ("fake-error-403", "permission", "not allowed to use this model"),
        ("fake-error-404", "not_found", "does not know this model"),
        ("fake-error-429", "rate_limit", "rate limit was reached"),
        ("fake-error-400", "bad_request", "rejected the request"),
        ("fake-error-500", "server", "had an internal error"),
        ("fake-error-529", "overloaded", "is overloaded"),
        ("fake-midstream-error", "server", "had an internal error"),
        ("fake-disconnect", "connection", "connection to the model provider failed"),
    ],
)
async def test_it_ends_a_failed_reply_with_a_clear_error_and_keeps_the_text(
    alice, conversation, openai_fake, model, kind, says
):
    await sync_to_async(openai_fake)(conversation, model)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="this will fail")
    frames = await until_final(communicator)
    await communicator.disconnect()

    reply = await _reply(conversation)
    assert reply.status == "error"
    assert reply.error_kind == kind
    assert says in reply.error
    # The final bubble shows the stored error, escaped as the template escapes it.
    assert f'<p class="msg-error" role="alert">{escape(reply.error)}</p>' in frames[-1]
    assert "Retry" in frames[-1]
    assert reply.content == delta_text(frames)
    assert "sk-test-not-a-real-key" not in reply.error
    user = await database_sync_to_async(Message.objects.get)(conversation=conversation, role="user")
    assert user.content == "this will fail"


async def test_it_retries_a_failed_reply_as_a_new_attempt(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-error-500")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="try twice")
    await until_final(communicator)
    failed = await _reply(conversation)
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    await send(communicator, action="retry", message=str(failed.id))
    frames = await until_final(communicator)
    await communicator.disconnect()

    assert any(f'hx-swap-oob="outerHTML:#msg-{failed.id}"' in f for f in frames)  # takes the failed bubble's place
    retried = await _reply(conversation)
    assert retried.id != failed.id and retried.parent_id == failed.parent_id
    assert retried.content == expected_text("fake-normal") and retried.status == "complete"
    branch = await database_sync_to_async(
        lambda: [m.id for m in Conversation.objects.get(pk=conversation.pk).transcript()]
    )()
    assert failed.id not in branch and retried.id in branch


async def test_it_continues_a_reply_cut_by_max_tokens(alice, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-length")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="long answer please")
    frames = await until_final(communicator)
    cut = await _reply(conversation)
    assert cut.finish_reason == "length" and "maximum length" in frames[-1] and "Continue" in frames[-1]

    await send(communicator, action="continue", message=str(cut.id))
    frames = await until_final(communicator)
    await communicator.disconnect()
    continued = await _reply(conversation)
    assert continued.id == cut.id
    assert continued.content.startswith(cut.content) and len(continued.content) > len(cut.content)
    assert continued.parameters["continuations"] == 1
    assert continued.html == render_markdown(continued.content)  # rendered again, not the cut text's
    sent = fake_provider.requests[-1].json["messages"]
    assert sent[-2] == {"role": "assistant", "content": cut.content}
    assert sent[-1]["role"] == "user" and sent[-1]["content"].startswith("Continue exactly where")


async def test_it_sends_the_whole_history_to_the_next_model(alice, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="first question")
    await until_final(communicator)
    await sync_to_async(openai_fake)(conversation, "fake-reasoning")
    await send(communicator, action="send", text="second question")
    frames = await until_final(communicator)
    await communicator.disconnect()

    sent = fake_provider.requests[-1].json
    assert sent["model"] == "fake-reasoning"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == expected_text("fake-normal")
    assert "fake-reasoning" in frames[-1]
    reply = await _reply(conversation)
    assert reply.model == "fake-reasoning" and reply.reasoning


async def test_the_thinking_section_is_open_while_the_model_thinks_and_folds_with_its_time(
    alice, conversation, openai_fake
):
    await sync_to_async(openai_fake)(conversation, "fake-reasoning")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="think first")
    frames = await until_final(communicator)
    await communicator.disconnect()

    reply = await _reply(conversation)
    assert reply.reasoning and reply.reasoning_ms is not None and reply.reasoning_ms > 0
    thinking = f'id="msg-{reply.id}-thinking"'
    opened = [i for i, f in enumerate(frames) if thinking in f and re.search(thinking + r"[^>]* open", f)]
    folded = [i for i, f in enumerate(frames) if thinking in f and "Thought for" in f]
    assert opened and folded, "the section opened, then folded"
    assert opened[0] < folded[0]
    fold = frames[folded[0]]
    assert re.search(thinking + r'[^>]*hx-swap-oob="outerHTML"', fold)
    assert not re.search(thinking + r"[^>]* open", fold)
    # Reasoning deltas stream before the fold, answer text after it.
    assert any(f'beforeend:#msg-{reply.id}-reasoning"' in f for f in frames[: folded[0]])
    assert f"Thought for {reply.thought_seconds} second" in frames[-1]


async def test_it_sends_a_new_reply_with_its_feedback_control_ready(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="rate me")
    final = (await until_final(communicator))[-1]
    await communicator.disconnect()

    assert 'id="msg-' in final and "-feedback" in final
    assert 'hx-trigger="load"' not in final  # a new reply has no rating to fetch


async def test_it_rejoins_with_the_owners_rating_on_the_last_reply(alice, conversation, reply):
    from conversations.models import Feedback

    await database_sync_to_async(Feedback.objects.create)(message=reply, user=alice, rating="down")
    communicator = await connect(alice, conversation)
    bubble = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    assert f'id="msg-{reply.id}"' in bubble and 'hx-trigger="load"' not in bubble
    assert re.search(r'value="clear" class="link rate rate-down" aria-pressed="true"', bubble)


async def _connect_with(client, conversation) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    # Frames are handled once connect() has finished (the socket is in its groups): a bad one is answered then.
    await communicator.send_to(text_data="{not json")
    assert "not valid JSON" in await communicator.receive_from(timeout=5)
    return communicator


async def _signed_in(user):
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(user)
    return client


CLOSED_SIGNED_OUT = {"type": "websocket.close", "code": 4401}


async def test_logging_out_closes_the_sessions_open_sockets(alice, conversation):
    from django.urls import reverse

    client = await _signed_in(alice)
    communicator = await _connect_with(client, conversation)
    await sync_to_async(client.post)(reverse("logout"))
    assert await communicator.receive_output(timeout=5) == CLOSED_SIGNED_OUT
    await communicator.disconnect()


async def test_a_password_change_closes_the_other_sessions_sockets(alice, conversation):
    communicator = await _connect_with(await _signed_in(alice), conversation)

    def change_password():
        alice.set_password("a new one 新密码")
        alice.save()

    await sync_to_async(change_password)()
    assert await communicator.receive_output(timeout=5) == CLOSED_SIGNED_OUT
    await communicator.disconnect()


async def test_a_deactivated_account_loses_its_sockets_and_its_conversations(alice, conversation):
    communicator = await _connect_with(await _signed_in(alice), conversation)

    def deactivate():
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    await sync_to_async(deactivate)()
    assert await communicator.receive_output(timeout=5) == CLOSED_SIGNED_OUT
    await communicator.disconnect()
    assert not await database_sync_to_async(Conversation.objects.for_user(alice).exists)()


async def test_a_frame_on_a_socket_whose_session_ended_unannounced_is_refused(alice, conversation, openai_fake):
    from django.contrib.sessions.models import Session

    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await _connect_with(await _signed_in(alice), conversation)
    await database_sync_to_async(Session.objects.all().delete)()  # expired, flushed: no signal
    await send(communicator, action="send", text="on a dead session")
    assert await communicator.receive_output(timeout=5) == CLOSED_SIGNED_OUT
    await communicator.disconnect()
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_another_users_logout_leaves_a_socket_open(alice, charlie, conversation, openai_fake):
    from django.urls import reverse

    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await _connect_with(await _signed_in(alice), conversation)
    other = await _signed_in(charlie)
    await sync_to_async(other.post)(reverse("logout"))
    await send(communicator, action="send", text="still here")
    assert delta_text(await until_final(communicator)) == expected_text("fake-normal")
    await communicator.disconnect()
