"""Measure websocket handshakes while another connection holds SQLite's write lock.

In one process (in-memory channel layer, the fake provider): a reply streams
in one conversation; after its first delta another connection takes the
database's write lock (``BEGIN IMMEDIATE``) and holds it for ``--hold``
seconds.  Once the reply's whole text has arrived (its final write has begun
and waits for the lock), ``--handshakes`` sockets, one after the other, open
another conversation of the same user; each is timed from the handshake to
its first frame (the page state: that conversation's last reply).  With
``--with-send``, a send in a third conversation is made just before the
handshakes, so that it too waits for the lock::

    rm -f /tmp/lockbench.sqlite3
    DJANGO_DEBUG=1 SQLITE_PATH=/tmp/lockbench.sqlite3 python manage.py migrate -v0
    DJANGO_DEBUG=1 SQLITE_PATH=/tmp/lockbench.sqlite3 python manage.py benchlockedhandshake --hold 8

Only the websocket frames and the fake provider are used, so the same file
measures an older tree too (copy it there).  SQLite only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import threading
import time

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from conversations.models import Conversation, Message
from devtools.fakeprovider import FakeProvider, expected_text
from devtools.streamview import StreamView, has_delta


class Command(BaseCommand):
    help = "Websocket handshake latency while another connection holds SQLite's write lock."

    def add_arguments(self, parser):
        parser.add_argument("--hold", type=float, default=8.0, help="seconds the other connection holds the lock")
        parser.add_argument("--handshakes", type=int, default=3)
        parser.add_argument("--tokens", type=int, default=100, help="the reply's length (0.02 s per token)")
        parser.add_argument("--with-send", action="store_true", help="a send waits for the lock too")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        if connection.vendor != "sqlite":
            raise CommandError("SQLite only: the lock is taken with BEGIN IMMEDIATE on its file")
        user, _ = get_user_model().objects.get_or_create(username="bench-lock")
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        model = f"fake-long@tokens={options['tokens']},delay=0.02"
        writing = Conversation.objects.create(owner=user, title="writing", model_key=f"openai:{model}")
        joined = Conversation.objects.create(owner=user, title="joined", model_key="demo:demo")
        waiting = Conversation.objects.create(owner=user, title="waiting", model_key=f"openai:{model}")
        question = Message.objects.create(conversation=joined, role="user", content="Hello?")
        Message.objects.create(conversation=joined, parent=question, role="assistant", content="Hi", status="complete")
        connection.close()
        with FakeProvider(tokens=20, delay=0.002) as fake:
            os.environ["OPENAI_API_KEY"] = "bench-not-a-key"
            os.environ["OPENAI_BASE_URL"] = fake.openai_base_url
            with override_settings(CHAT_MODELS=f"openai:{model}", CHAT_TITLE_MODEL="off", CHAT_PROVIDER_MAX_RETRIES=0):
                report = asyncio.run(self._measure(cookie, writing, joined, waiting, model, options))
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(f"lock held {options['hold']} s; the reply's text complete {report['text_done_s']:.2f} s in")
        for i, (ms, held) in enumerate(report["handshakes"], 1):
            self.stdout.write(f"handshake {i}: {ms:8.1f} ms  {'(lock still held)' if held else '(after release)'}")
        self.stdout.write(
            f"first final bubble {report['first_final_s']:.2f} s, saved one {report['final_s']:.2f} s "
            f"after the lock was taken; the row: {report['status']}"
        )
        if report["send"]:
            self.stdout.write(f"the other send: {report['send']}")

    async def _measure(self, cookie, writing, joined, waiting, model, options) -> dict:
        from chatsite.asgi import application

        def socket(conversation):
            headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
            return WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)

        sender, other_sender = socket(writing), socket(waiting)
        assert (await sender.connect(timeout=10))[0]
        assert (await other_sender.connect(timeout=10))[0]
        await sender.send_to(text_data=json.dumps({"action": "send", "text": "a long one"}))
        frames = [await sender.receive_from(timeout=30)]
        while not has_delta(frames[-1]):
            frames.append(await sender.receive_from(timeout=30))

        lock = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN IMMEDIATE")
        taken = time.perf_counter()
        released = threading.Event()

        def release():
            lock.execute("ROLLBACK")
            lock.close()
            released.set()

        timer = threading.Timer(options["hold"], release)
        timer.start()
        text = expected_text(model)
        while StreamView().apply(frames).text() != text:
            frames.append(await sender.receive_from(timeout=60))
        text_done = time.perf_counter() - taken

        async def answer() -> str:
            sent_at = time.perf_counter()
            await other_sender.send_to(text_data=json.dumps({"action": "send", "text": "waits for the lock"}))
            while True:  # the composer's answer: cleared (taken), or an error under it
                frame = await other_sender.receive_from(timeout=120)
                error = re.search(r'id="composer-error"[^>]*>([^<]+)</div>', frame)
                if "composer-ack" in frame or error:
                    outcome = f"refused ({error.group(1)})" if error else "taken"
                    return f"{outcome} after {time.perf_counter() - sent_at:.2f} s"

        answering = asyncio.ensure_future(answer()) if options["with_send"] else None
        handshakes = []
        for _ in range(options["handshakes"]):
            joiner = socket(joined)
            began = time.perf_counter()
            assert (await joiner.connect(timeout=60))[0]
            await joiner.receive_from(timeout=60)
            handshakes.append(((time.perf_counter() - began) * 1000, not released.is_set()))
            await joiner.disconnect()

        first_final = None
        while True:  # the final bubble; one saying it is not saved yet is followed by another
            frame = await sender.receive_from(timeout=120)
            if 'class="msg msg-assistant' in frame and "status-streaming" not in frame:
                first_final = first_final or time.perf_counter() - taken
                if "msg-unsaved" not in frame:
                    break
        final = time.perf_counter() - taken
        send_outcome = await answering if answering else ""
        await other_sender.disconnect()
        await sender.disconnect()
        timer.join()
        status = await database_sync_to_async(
            lambda: Message.objects.filter(conversation=writing, role="assistant").values_list("status", flat=True)[0]
        )()
        return {
            "text_done_s": text_done,
            "handshakes": handshakes,
            "first_final_s": first_final,
            "final_s": final,
            "status": status,
            "send": send_outcome,
        }
