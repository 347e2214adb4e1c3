"""Nothing lost at the start or at the end of a reply while another
connection holds the database's write lock (another process writing, a
backup, a migration): a send is saved or refused with its text kept, a
reply's final write is retried until it is saved, and sockets of other
conversations keep connecting meanwhile.

The lock is real: a second connection to the test database, SQLite's
``BEGIN IMMEDIATE`` or PostgreSQL's ``LOCK TABLE ... IN EXCLUSIVE MODE`` on
the messages table."""

import asyncio
import sqlite3
import time
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.db import connection
from django.test import AsyncClient
from django.urls import reverse

from chatsite.asgi import application
from conversations import durability, generation
from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from tests.wsclient import connect, delta_text, first_delta, is_final, send, session_cookie, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

BUSY = "The server is busy and your message was not sent. Try again."
NOT_SAVED = "Not saved yet"
LONG = "fake-long@tokens=100,delay=0.02"  # about 2 s: time to take the lock while it streams


class WriteLock:
    """Another connection to the test database holding its write lock (for
    the messages table, on PostgreSQL) until ``release``."""

    def __init__(self) -> None:
        self.vendor = connection.vendor
        self.raw = None

    def _take(self) -> None:
        if self.vendor == "sqlite":
            self.raw = sqlite3.connect(
                connection.settings_dict["NAME"], isolation_level=None, timeout=10, check_same_thread=False
            )
            self.raw.execute("BEGIN IMMEDIATE")
        else:
            self.raw = connection.get_new_connection(connection.get_connection_params())
            self.raw.autocommit = True
            with self.raw.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(f'LOCK TABLE "{Message._meta.db_table}" IN EXCLUSIVE MODE')

    def _release(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            if self.vendor == "sqlite":
                raw.execute("ROLLBACK")
            else:
                with raw.cursor() as cursor:
                    cursor.execute("ROLLBACK")
            raw.close()

    def _kill_waiting_writer(self, within: float) -> bool:
        """PostgreSQL: terminate the backend waiting for this lock (as a server
        restart would); True if one was found and terminated."""
        deadline = time.monotonic() + within
        with self.raw.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # fresh activity, not the transaction's copy
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                waiting = [row[0] for row in cursor.fetchall()]
                if waiting:
                    terminated = []
                    for pid in waiting:
                        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                        terminated.append(cursor.fetchone()[0])
                    return all(terminated)
                time.sleep(0.02)  # sleep-ok: the poll interval of a bounded wait on the server's activity view
        return False

    async def kill_waiting_writer(self, within: float = 10.0) -> bool:
        return await asyncio.to_thread(self._kill_waiting_writer, within)

    def _commit(self, sql: str, params: list) -> None:
        """Run ``sql`` in the held lock's transaction and commit it, releasing the lock."""
        if self.vendor == "sqlite":
            self.raw.execute(sql.replace("%s", "?"), params)
            self.raw.execute("COMMIT")
        else:
            with self.raw.cursor() as cursor:
                cursor.execute(sql, params)
                cursor.execute("COMMIT")
        raw, self.raw = self.raw, None
        raw.close()

    async def commit(self, sql: str, params: list) -> None:
        await asyncio.to_thread(self._commit, sql, params)

    async def take(self) -> None:
        await asyncio.to_thread(self._take)

    async def release(self) -> None:
        await asyncio.to_thread(self._release)


@pytest.fixture
def write_lock():
    if connection.vendor not in ("sqlite", "postgresql"):
        pytest.skip(f"holding a write lock is written for SQLite and PostgreSQL, not {connection.vendor}")
    lock = WriteLock()
    yield lock
    lock._release()


@pytest.fixture
def no_reply_limits(settings):
    """Many sends of one user at once: only the database may refuse them."""
    settings.CHAT_MAX_CONCURRENT_REPLIES = 0
    settings.CHAT_REPLIES_PER_MINUTE = 0


@pytest.fixture
async def alice_async(alice) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(alice)
    return client


async def _messages(conversation) -> list[tuple[str, str, str]]:
    return await database_sync_to_async(list)(
        Message.objects.filter(conversation=conversation)
        .order_by("created_at")
        .values_list("role", "status", "content")
    )


async def _until_composer_error(communicator) -> tuple[str, list[str]]:
    """The next composer error, and every frame before it."""
    frames = []
    while True:
        frame = await communicator.receive_from(timeout=15)
        frames.append(frame)
        if frame.startswith('<div id="composer-error"') and "></div>" not in frame:
            return frame, frames


def _acknowledged(frames: list[str]) -> bool:
    """Whether the composer was told to clear (the message was taken)."""
    return any('id="composer-ack"' in frame for frame in frames)


async def _socket(cookie: bytes, conversation) -> WebsocketCommunicator:
    """A socket opened with a session cookie made beforehand (making one writes the session)."""
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def _post_send(cookie: bytes, conversation, text: str) -> dict:
    """The no-JS send through the real ASGI handler (each request on its own
    thread, as daphne runs it), with a CSRF cookie and token."""
    secret = "a" * 32
    body = urlencode({"text": text, "csrfmiddlewaretoken": secret}).encode()
    headers = [
        (b"host", b"localhost"),
        (b"cookie", cookie + f"; csrftoken={secret}".encode()),
        (b"content-type", b"application/x-www-form-urlencoded"),
    ]
    path = reverse("send", args=[conversation.id])
    return await HttpCommunicator(application, "POST", path, body=body, headers=headers).get_response(timeout=30)


async def test_a_send_is_refused_with_its_text_kept_while_another_connection_holds_the_write_lock(
    alice, conversation, openai_fake, settings, write_lock, alice_async
):
    settings.CHAT_SEND_LOCK_SECONDS = 0.2
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)

    await write_lock.take()
    try:
        await send(communicator, action="send", text="hold on 写")
        refusal, frames = await _until_composer_error(communicator)
        response = await alice_async.post(reverse("send", args=[conversation.id]), {"text": "and <this> too"})
        held = await _messages(conversation)
    finally:
        await write_lock.release()

    assert BUSY in refusal and not _acknowledged(frames)
    body = response.content.decode()
    assert response.status_code == 409 and BUSY in body
    assert "and &lt;this&gt; too</textarea>" in body
    assert held == [] and generation.get_active(conversation.id) is None

    await send(communicator, action="send", text="hold on 写")
    frames = await until_final(communicator)
    await communicator.disconnect()
    assert _acknowledged(frames) and delta_text(frames) == expected_text("fake-normal")
    assert await _messages(conversation) == [
        ("user", "complete", "hold on 写"),
        ("assistant", "complete", expected_text("fake-normal")),
    ]


async def test_many_sends_at_once_each_save_their_message_and_get_a_reply_or_are_refused_whole(
    alice, openai_fake, settings, no_reply_limits
):
    # A short wait for the lock, so that the sends really contend for it.
    settings.CHAT_SEND_LOCK_SECONDS = 0.02
    conversations = [
        await database_sync_to_async(Conversation.objects.create)(owner=alice, title=f"chat {i}") for i in range(14)
    ]
    await sync_to_async(openai_fake)(conversations[0], "fake-normal")
    await database_sync_to_async(Conversation.objects.update)(model_key="openai:fake-normal")
    by_socket, by_post = conversations[:7], conversations[7:]
    cookie = await session_cookie(alice)
    sockets = [await _socket(cookie, c) for c in by_socket]

    async def over_socket(communicator, conversation) -> tuple[str, list[str]]:
        await send(communicator, action="send", text=f"question {conversation.title}")
        frames = []
        while True:
            frames.append(await communicator.receive_from(timeout=30))
            if BUSY in frames[-1]:
                return "refused", frames
            if is_final(frames[-1]):
                return "sent", frames

    async def over_post(conversation) -> tuple[str, list[str]]:
        response = await _post_send(cookie, conversation, f"question {conversation.title}")
        if response["status"] == 302:
            running = generation.get_active(conversation.id)  # None: finished already
            if running is not None:
                await asyncio.wait_for(running.done.wait(), 30)
            return "sent", []
        assert response["status"] == 409, response["status"]
        body = response["body"].decode()
        assert BUSY in body and f"question {conversation.title}</textarea>" in body
        return "refused", []

    outcomes = await asyncio.gather(
        *(over_socket(s, c) for s, c in zip(sockets, by_socket, strict=True)), *(over_post(c) for c in by_post)
    )
    for communicator in sockets:
        await communicator.disconnect()

    assert any(outcome == "sent" for outcome, _frames in outcomes)
    for conversation, (outcome, frames) in zip(conversations, outcomes, strict=True):
        stored = await _messages(conversation)
        if outcome == "refused":
            assert stored == [], conversation.title
            assert not _acknowledged(frames)
        else:
            assert stored == [
                ("user", "complete", f"question {conversation.title}"),
                ("assistant", "complete", expected_text("fake-normal")),
            ], conversation.title
            if frames:
                assert delta_text(frames) == expected_text("fake-normal")


async def test_a_final_write_that_meets_a_held_lock_says_not_saved_and_saves_the_whole_reply_after(
    alice, conversation, openai_fake, settings, write_lock
):
    settings.CHAT_WRITE_LOCK_SECONDS = 0.1
    settings.CHAT_SEND_LOCK_SECONDS = 0.1
    settings.CHAT_FINAL_SAVE_RETRY_SECONDS = 300  # the reply's own retries go on until the release
    await sync_to_async(openai_fake)(conversation, LONG)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="a long one")
    await first_delta(communicator)
    running = generation.get_active(conversation.id)
    assert not running.ended.is_set()

    await write_lock.take()
    try:
        shown = (await until_final(communicator))[-1]
        row_while_held = await database_sync_to_async(Message.objects.get)(pk=running.message.pk)
        await send(communicator, action="send", text="and another")
        refusal, _frames = await _until_composer_error(communicator)
        unsaved_while_held = running.unsaved
    finally:
        await write_lock.release()

    saved = (await until_final(communicator))[-1]
    await asyncio.wait_for(running.done.wait(), 20)
    await communicator.disconnect()

    assert "status-complete" in shown and NOT_SAVED in shown
    assert unsaved_while_held and row_while_held.status == "streaming"
    assert len(row_while_held.content) < len(expected_text(LONG))
    assert "not saved yet. Try again in a moment" in refusal
    assert "status-complete" in saved and NOT_SAVED not in saved
    row = await database_sync_to_async(Message.objects.get)(pk=running.message.pk)
    assert row.status == "complete" and row.content == expected_text(LONG)
    assert generation.get_active(conversation.id) is None
    assert [m[2] for m in await _messages(conversation) if m[0] == "user"] == ["a long one"]


async def test_another_conversations_socket_connects_while_a_final_write_waits_for_the_lock(
    alice, conversation, reply, openai_fake, settings, write_lock
):
    settings.CHAT_WRITE_LOCK_SECONDS = 60  # the one attempt waits on the lock until the release
    other = await database_sync_to_async(Conversation.objects.create)(owner=alice, title="the other one")
    await sync_to_async(openai_fake)(other, LONG)
    cookie = await session_cookie(alice)
    writing = await _socket(cookie, other)
    await send(writing, action="send", text="a long one")
    await first_delta(writing)
    running = generation.get_active(other.id)

    await write_lock.take()
    try:
        await asyncio.wait_for(running.ended.wait(), 20)
        joining = await _socket(cookie, conversation)
        state = await joining.receive_from(timeout=10)
        pending_when_joined = running.unsaved and not running.done.is_set()
    finally:
        await write_lock.release()

    await asyncio.wait_for(running.done.wait(), 20)
    await joining.disconnect()
    await writing.disconnect()
    assert pending_when_joined
    assert f'id="msg-{reply.id}"' in state and "Hi <strong>there</strong>" in state
    row = await database_sync_to_async(Message.objects.get)(pk=running.message.pk)
    assert row.status == "complete" and row.content == expected_text(LONG)


async def _until_frame(communicator, text: str) -> str:
    while True:
        frame = await communicator.receive_from(timeout=20)
        if text in frame:
            return frame


async def test_a_reply_not_saved_in_the_retry_window_is_kept_and_saved_at_shutdown(
    alice, conversation, openai_fake, settings, write_lock
):
    settings.CHAT_WRITE_LOCK_SECONDS = 0.05
    settings.CHAT_FINAL_SAVE_RETRY_SECONDS = 0.3
    await sync_to_async(openai_fake)(conversation, LONG)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="a long one")
    await first_delta(communicator)
    running = generation.get_active(conversation.id)

    await write_lock.take()
    try:
        await asyncio.wait_for(running.task, 20)  # the reply's own retries are over
        kept = await _until_frame(communicator, "The reply is kept")
        still_registered = generation.get_active(conversation.id) is running and running.unsaved
    finally:
        await write_lock.release()

    await durability.interrupt_all(within=1)
    saved = (await until_final(communicator))[-1]
    await communicator.disconnect()
    assert still_registered and "status-complete" in kept
    assert "status-complete" in saved and NOT_SAVED not in saved
    row = await database_sync_to_async(Message.objects.get)(pk=running.message.pk)
    assert row.status == "complete" and row.content == expected_text(LONG)
    assert generation.get_active(conversation.id) is None


async def test_a_final_write_whose_connection_dies_is_saved_on_a_fresh_one(
    alice, conversation, openai_fake, settings, write_lock
):
    if connection.vendor != "postgresql":
        pytest.skip(
            "a server connection to kill is PostgreSQL's: SQLite (CONN_MAX_AGE 0) opens its file afresh "
            "for every background write"
        )
    settings.CHAT_WRITE_LOCK_SECONDS = 60  # the attempt waits on the lock until its connection is killed
    # No checkpoint or heartbeat meanwhile: the one writer waiting must be the final write.
    settings.CHAT_CHECKPOINT_SECONDS = settings.CHAT_HEARTBEAT_SECONDS = 3600
    await sync_to_async(openai_fake)(conversation, LONG)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="a long one")
    await first_delta(communicator)
    running = generation.get_active(conversation.id)

    await write_lock.take()
    try:
        await asyncio.wait_for(running.ended.wait(), 20)
        killed = await write_lock.kill_waiting_writer()
        shown = await _until_frame(communicator, NOT_SAVED)  # the attempt on the dead connection failed
    finally:
        await write_lock.release()

    saved = (await until_final(communicator))[-1]
    await asyncio.wait_for(running.done.wait(), 30)
    await communicator.disconnect()
    assert killed and "status-complete" in shown
    assert NOT_SAVED not in saved
    row = await database_sync_to_async(Message.objects.get)(pk=running.message.pk)
    assert row.status == "complete" and row.content == expected_text(LONG)


async def test_a_new_conversation_is_not_created_while_the_lock_is_held_and_its_text_is_kept(
    alice, alice_async, settings, write_lock
):
    settings.CHAT_SEND_LOCK_SECONDS = 0.2
    await write_lock.take()
    try:
        refused = await alice_async.post(reverse("new_conversation"), {"text": "a <new> one", "model": "demo:demo"})
        created_while_held = await Conversation.objects.acount()
    finally:
        await write_lock.release()

    body = refused.content.decode()
    assert refused.status_code == 400 and BUSY in body and "a &lt;new&gt; one</textarea>" in body
    assert created_while_held == 0
    sent = await alice_async.post(reverse("new_conversation"), {"text": "a <new> one", "model": "demo:demo"})
    conversation = await Conversation.objects.aget(owner=alice)
    assert sent.status_code == 302 and sent["Location"] == conversation.get_absolute_url()
    running = generation.get_active(conversation.id)  # None: the instant demo reply is saved already
    if running is not None:
        await asyncio.wait_for(running.done.wait(), 20)
    assert [m[0:2] for m in await _messages(conversation)] == [("user", "complete"), ("assistant", "complete")]


async def test_another_conversations_socket_connects_while_a_send_waits_for_the_lock(
    alice, conversation, reply, openai_fake, settings, write_lock
):
    settings.CHAT_SEND_LOCK_SECONDS = 60  # the send waits on the lock until the release
    other = await database_sync_to_async(Conversation.objects.create)(owner=alice, title="the other one")
    await sync_to_async(openai_fake)(other, "fake-normal")
    cookie = await session_cookie(alice)
    sending = await _socket(cookie, other)

    await write_lock.take()
    try:
        await send(sending, action="send", text="waits for the lock")
        joining = await _socket(cookie, conversation)
        state = await joining.receive_from(timeout=10)
        unsaved_when_joined = await _messages(other)
    finally:
        await write_lock.release()

    frames = await until_final(sending)
    await joining.disconnect()
    await sending.disconnect()
    assert unsaved_when_joined == []
    assert f'id="msg-{reply.id}"' in state
    assert _acknowledged(frames) and delta_text(frames) == expected_text("fake-normal")


async def test_a_reply_whose_row_is_deleted_while_its_final_write_waits_is_let_go(
    alice, conversation, openai_fake, settings, write_lock, caplog
):
    settings.CHAT_WRITE_LOCK_SECONDS = 0.1
    settings.CHAT_FINAL_SAVE_RETRY_SECONDS = 300
    await sync_to_async(openai_fake)(conversation, LONG)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="a long one")
    await first_delta(communicator)
    running = generation.get_active(conversation.id)

    await write_lock.take()
    await _until_frame(communicator, NOT_SAVED)
    # The lock's holder deletes the conversation's messages (as a deletion in
    # another worker would) and commits: the next attempt finds no row.
    key = Conversation._meta.pk.get_db_prep_value(conversation.pk, connection)
    await write_lock.commit(f'DELETE FROM "{Message._meta.db_table}" WHERE conversation_id = %s', [key])
    await asyncio.wait_for(running.done.wait(), 20)
    await communicator.disconnect()

    assert generation.get_active(conversation.id) is None and not running.unsaved
    assert f"reply {running.message.id} ended after its conversation was deleted" in caplog.text
    assert await _messages(conversation) == []
