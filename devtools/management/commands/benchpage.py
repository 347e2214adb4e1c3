"""Measure the conversation page: queries and server time for a long conversation.

Creates (in the configured database) a conversation of ``--messages``
messages, alternating user and assistant, the replies with some markdown, then
GETs its page (which shows the newest CHAT_PAGE_MESSAGES; then with
``?all=1``, every message) ``--repeat`` times through Django's test client as its owner
(a full request: middleware, view, template) and reports the number of
queries and the server time (min and median).  A second, small conversation
shows whether the query count depends on the length::

    SQLITE_PATH=/tmp/bench.sqlite3 DJANGO_DEBUG=0 CHAT_DEVTOOLS=1 DJANGO_SECRET_KEY=... DJANGO_ALLOWED_HOSTS=127.0.0.1 \
        python manage.py benchpage --messages 1000

Run it with DJANGO_DEBUG=0: debug mode re-reads templates on every request
(and CHAT_DEVTOOLS=1, which DJANGO_DEBUG=0 turns off, for the command to exist).
"""

from __future__ import annotations

import json
import statistics
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

from conversations.models import Conversation, Message

REPLY = (
    "Here is **a reply** with `code`, a list:\n\n- one\n- two\n\nand a block:\n\n```python\nprint({i})\n```\n"
    "Some more text to make it a realistic length for a chat reply, number {i}."
)


class Command(BaseCommand):
    help = "Queries and server time of the conversation page with many messages."

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=1000)
        parser.add_argument("--repeat", type=int, default=5)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        # Production serves hashed names from collectstatic's manifest; without
        # one (no collectstatic here) plain static URLs stand in for them.
        storages = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        with override_settings(STORAGES=storages):
            self._measure(options)

    def _measure(self, options) -> None:
        user, _ = get_user_model().objects.get_or_create(username="bench-page")
        report = {"messages": options["messages"]}
        for label, count, query in (
            ("small", 10, ""),
            ("long", options["messages"], ""),
            ("long_all", options["messages"], "?all=1"),
        ):
            conversation = self._conversation(user, count)
            client = Client(HTTP_HOST="127.0.0.1")  # the test client is exempt from ALLOWED_HOSTS only under tests
            client.force_login(user)
            url = reverse("conversation", args=[conversation.id]) + query
            times, queries, size = [], 0, 0
            for _ in range(options["repeat"]):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.status_code
                queries, size = len(captured.captured_queries), len(response.content)
            report[label] = {
                "messages": count,
                "queries": queries,
                "ms_min": round(min(times), 1),
                "ms_median": round(statistics.median(times), 1),
                "kb": round(size / 1024, 1),
            }
            conversation.delete()
        report["constant_queries"] = report["small"]["queries"] == report["long"]["queries"]
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                self.stdout.write(f"{key:18} {value}")

    def _conversation(self, user, count: int) -> Conversation:
        with transaction.atomic():
            conversation = Conversation.objects.create(owner=user, title=f"page bench {count}")
            parent = None
            for i in range(count):
                assistant = i % 2 == 1
                parent = Message(
                    conversation=conversation,
                    parent=parent,
                    role=Message.Role.ASSISTANT if assistant else Message.Role.USER,
                    content=REPLY.format(i=i) if assistant else f"Question {i}: how does this work?",
                    status=Message.Status.COMPLETE,
                )
                if assistant:
                    # As a reply is stored when it ends: provenance and its rendered HTML.
                    parent.provider, parent.model, parent.finish_reason = "openai", "gpt-4.1-mini", "stop"
                    parent.input_tokens, parent.output_tokens = 120 + i, 80
                    parent.first_token_ms, parent.duration_ms = 350, 2400
                    parent.store_html()
                parent.save()
        return conversation
