"""The streaming bubble's "Waiting for the model… N s" line: rendered with
the seconds waited so far (chat.js counts on from there), only until the
model has sent something, and in a joining tab's snapshot too."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations import frames
from conversations.models import Message
from tests.wsclient import connect, send, until_final

WAITING = 'Waiting for the model… <span class="waited">12</span> s'


@pytest.fixture
def streaming(conversation) -> Message:
    question = Message.objects.create(conversation=conversation, role="user", content="Hello?")
    return Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        status="streaming",
        provider="demo",
        model="demo",
        created_at=timezone.now() - timedelta(seconds=12, milliseconds=300),
    )


@pytest.mark.django_db
def test_a_reply_with_nothing_yet_says_how_long_it_has_waited(streaming):
    html = frames.bubble(streaming)

    assert f'id="msg-{streaming.id}-waiting" data-waited="12">{WAITING}</p>' in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"content": "Hello"},
        {"reasoning": "Thinking"},
        {"parameters": {"continuations": 1}},  # a Continue: its row is older than the wait
        {"status": "error", "error": "The model provider took too long to respond."},
    ],
)
def test_the_waiting_line_goes_once_the_model_sent_something_or_the_reply_ended(streaming, change):
    for name, value in change.items():
        setattr(streaming, name, value)

    assert "msg-waiting" not in frames.bubble(streaming)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_tab_joining_while_the_model_is_silent_sees_the_waiting_line(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-slow-first@first_delay=0.8")
    first = await connect(alice, conversation)
    await send(first, action="send", text="take your time")
    new_bubbles = ""
    while "msg-assistant" not in new_bubbles:
        new_bubbles = await first.receive_from(timeout=10)
    second = await connect(alice, conversation)
    snapshot = await second.receive_from(timeout=10)
    await until_final(first)
    final = await until_final(second)
    await first.disconnect()
    await second.disconnect()

    assert 'class="msg-waiting"' in new_bubbles and 'data-waited="0"' in new_bubbles
    assert "status-streaming" in snapshot and 'class="msg-waiting"' in snapshot
    assert "msg-waiting" not in final[-1]
