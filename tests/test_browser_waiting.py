"""The "Waiting for the model… N s" line in real headless Chromium: chat.js
counts on from the seconds the server rendered, and drops the line once the
reply's text shows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.frames import bubble
from conversations.models import Message
from tests.test_browser_chat import _open, _send, _wait_for_text, alice_in  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

WAITING = "#transcript .msg-assistant .msg-waiting"


def test_the_page_counts_on_from_the_seconds_already_waited(page, alice_in):  # noqa: F811
    # A joining tab's bubble of a reply asked for 40 s ago, as the template
    # renders it (a live one would be settled: this server runs no such reply).
    conversation = _open(page, alice_in, "openai:fake-normal")
    waiting = Message(
        conversation=conversation,
        role="assistant",
        status="streaming",
        provider="openai",
        model="fake-normal",
        created_at=timezone.now() - timedelta(seconds=40),
    )
    insert = "html => document.getElementById('transcript').insertAdjacentHTML('beforeend', html)"
    page.evaluate(insert, bubble(waiting))

    assert page.locator(f"{WAITING} .waited").text_content() == "40"
    page.wait_for_function(
        f"Number(document.querySelector('{WAITING} .waited').textContent) >= 41", polling=100, timeout=5000
    )
    assert page.locator(WAITING).inner_text().startswith("Waiting for the model…")  # visible after a second


def test_the_waiting_line_goes_when_the_first_text_arrives(page, alice_in):  # noqa: F811
    _open(page, alice_in, "openai:fake-slow-first")
    _send(page, "Take your time")
    page.wait_for_selector(WAITING, state="attached")
    _wait_for_text(page)

    assert page.locator('.msg-assistant[data-status="streaming"]').count() == 1  # still streaming
    assert page.locator(WAITING).count() == 0
