"""Titles written by a model after the first reply: a separate call, tagged
``title``, that never reaches the chat's stream and never overrides a rename."""

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from conversations import generation
from conversations.actions import clean_title
from conversations.markdown import render_markdown
from conversations.models import Conversation
from conversations.providers.demo import reply_text, tokens
from devtools.streamview import text_of
from tests.wsclient import connect, delta_text, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

QUESTION = "Plans for a weekend trip to Hangzhou in spring"
MODEL_TITLE = "Plans for a weekend trip"  # the demo model's title: the first five words


@pytest.fixture(autouse=True)
def _titles_on(settings):
    settings.CHAT_TITLE_MODEL = ""  # the conversation's own model


@pytest.fixture
def untitled(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model_key="demo:demo")


async def _follow_ups_done():
    await asyncio.wait_for(asyncio.gather(*generation.follow_ups()), 10)


async def _refresh(conversation) -> Conversation:
    return await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)


async def test_a_model_writes_the_title_after_the_first_reply_and_every_tab_gets_it(alice, untitled):
    communicator = await connect(alice, untitled)
    await send(communicator, action="send", text=QUESTION)
    await until_final(communicator)
    title_frame = await communicator.receive_from(timeout=10)
    await _follow_ups_done()
    await communicator.disconnect()

    assert 'id="conversation-title"' in title_frame and f">{MODEL_TITLE}</h1>" in title_frame
    assert f'id="nav-{untitled.id}"' in title_frame and "msg-" not in title_frame
    conversation = await _refresh(untitled)
    assert (conversation.title, conversation.title_source) == (MODEL_TITLE, "model")
    assert conversation.title_model == "demo:demo" and conversation.title_output_tokens == 5


async def test_the_title_call_never_reaches_the_chats_stream_or_transcript(alice, untitled):
    communicator = await connect(alice, untitled)
    await send(communicator, action="send", text=QUESTION)
    frames = await until_final(communicator)
    await communicator.receive_from(timeout=10)  # the title
    await _follow_ups_done()
    await communicator.disconnect()

    assert delta_text(frames) == text_of(render_markdown(reply_text(QUESTION)))
    assert not any(f">{MODEL_TITLE}</h1>" in frame for frame in frames)
    messages = await database_sync_to_async(list)(untitled.messages.order_by("created_at"))
    assert [(m.role, m.content) for m in messages] == [("user", QUESTION), ("assistant", reply_text(QUESTION))]
    # The reply's usage is its own; the title's is on the conversation.
    assert messages[1].output_tokens == len(tokens(reply_text(QUESTION)))


async def test_a_title_the_user_set_is_never_overwritten(alice, untitled, settings):
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 5  # time to rename while it streams
    communicator = await connect(alice, untitled)
    await send(communicator, action="send", text=QUESTION)
    await communicator.receive_from(timeout=10)  # the new bubbles
    await database_sync_to_async((await _refresh(untitled)).rename)("My own title")
    await until_final(communicator)
    await _follow_ups_done()

    assert await communicator.receive_nothing(timeout=0.2)  # no title frame was sent
    await communicator.disconnect()
    conversation = await _refresh(untitled)
    assert (conversation.title, conversation.title_source) == ("My own title", "user")
    assert conversation.title_model == ""


async def test_a_second_reply_does_not_write_a_title_again(alice, untitled):
    communicator = await connect(alice, untitled)
    await send(communicator, action="send", text=QUESTION)
    await until_final(communicator)
    await communicator.receive_from(timeout=10)
    await _follow_ups_done()
    await send(communicator, action="send", text="And the food?")
    await until_final(communicator)

    assert not generation.follow_ups()
    await communicator.disconnect()
    assert (await _refresh(untitled)).title == MODEL_TITLE


async def test_a_failed_title_call_keeps_the_first_line_and_logs_why(alice, untitled, settings, caplog):
    settings.CHAT_TITLE_MODEL = "openai:not-offered"
    communicator = await connect(alice, untitled)
    with caplog.at_level(logging.WARNING, logger="conversations.actions"):
        await send(communicator, action="send", text=QUESTION)
        await until_final(communicator)
        await _follow_ups_done()
    await communicator.disconnect()

    conversation = await _refresh(untitled)
    assert (conversation.title, conversation.title_source) == (QUESTION, "first_line")
    assert "not offered" in caplog.text


async def test_off_keeps_the_first_line_title(alice, untitled, settings):
    settings.CHAT_TITLE_MODEL = "off"
    communicator = await connect(alice, untitled)
    await send(communicator, action="send", text=QUESTION)
    await until_final(communicator)
    assert not generation.follow_ups()
    await communicator.disconnect()
    assert (await _refresh(untitled)).title_source == "first_line"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Weekend in Hangzhou."', "Weekend in Hangzhou"),
        ("Title: **Trip plans**\n\nMore text", "Trip plans"),
        ("标题：「杭州周末游」。", "杭州周末游"),
        ("   \n# Spring 🌸 trip\n", "Spring 🌸 trip"),
        ("", ""),
    ],
)
def test_it_cleans_a_models_answer_into_one_line(answer, title):
    assert clean_title(answer) == title


def test_renaming_marks_the_title_as_the_users_and_updates_the_sidebar(alice_client, conversation):
    response = alice_client.post(
        reverse("rename", args=[conversation.id]), {"title": "Trip 旅行"}, headers={"HX-Request": "true"}
    )

    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Trip 旅行", "user")
    body = response.content.decode()
    assert 'id="conversation-title"' in body and f'id="nav-{conversation.id}"' in body
    assert 'hx-swap-oob="outerHTML">Trip 旅行</a>' in body
