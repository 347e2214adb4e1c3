"""Regenerate, edit and switch between branches, over the websocket: consumer
→ actions → the real openai SDK → the fake provider over HTTP."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.urls import reverse

from conversations import generation
from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from tests.wsclient import connect, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

REPLY = expected_text("fake-normal")


@database_sync_to_async
def _branch(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in Conversation.objects.get(pk=conversation.pk).transcript()]


@database_sync_to_async
def _message(conversation, role, content) -> Message:
    return Message.objects.filter(conversation=conversation, role=role, content=content).latest("created_at")


async def _exchange(communicator, text):
    await send(communicator, action="send", text=text)
    return await until_final(communicator)


def _sent_history(fake_provider) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in fake_provider.requests[-1].json["messages"]]


async def test_regenerate_makes_a_sibling_reply_and_shows_it(alice, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await _exchange(communicator, "first")
    first = await _message(conversation, "assistant", REPLY)

    await send(communicator, action="regenerate", message=str(first.id))
    frames = await until_final(communicator)
    await communicator.disconnect()

    assert any(f'hx-swap-oob="outerHTML:#msg-{first.id}"' in f for f in frames)
    replies = await database_sync_to_async(list)(conversation.messages.filter(role="assistant").order_by("created_at"))
    assert len(replies) == 2 and replies[0].parent_id == replies[1].parent_id
    assert replies[1].status == "complete"
    assert "2 / 2" in frames[-1]
    assert _sent_history(fake_provider) == [("user", "first")]


async def test_regenerate_with_another_model_records_that_model(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    other = await sync_to_async(openai_fake)(conversation, "fake-long@tokens=3")
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(model_key="openai:fake-normal")
    communicator = await connect(alice, conversation)
    await _exchange(communicator, "first")
    first = await _message(conversation, "assistant", REPLY)

    await send(communicator, action="regenerate", message=str(first.id), model=other)
    await until_final(communicator)
    await communicator.disconnect()

    newest = await database_sync_to_async(conversation.messages.filter(role="assistant").latest)("created_at")
    assert newest.model_key == other and first.model_key == "openai:fake-normal"
    assert (
        await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    ).model_key == "openai:fake-normal"


async def _next_transcript(communicator) -> str:
    """The next whole-transcript frame (a send's sidebar move, gathered for a moment, may come first)."""
    while True:
        frame = await communicator.receive_from(timeout=10)
        if 'id="transcript"' in frame:
            return frame


async def test_edit_sends_a_new_sibling_and_keeps_the_old_branch(alice, conversation, openai_fake, fake_provider):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await _exchange(communicator, "first")
    await _exchange(communicator, "second")
    question = await _message(conversation, "user", "first")

    await send(communicator, action="edit", message=str(question.id), text="first, edited 改")
    edited = await _next_transcript(communicator)
    await until_final(communicator)

    assert await _branch(conversation) == [("user", "first, edited 改"), ("assistant", REPLY)]
    assert _sent_history(fake_provider) == [("user", "first, edited 改")]  # only the shown branch
    assert "second" not in edited
    assert await database_sync_to_async(conversation.messages.count)() == 6  # the old branch is kept

    # Switching back restores the old message and everything after it.
    await send(communicator, action="switch", message=str(question.id))
    switched = await _next_transcript(communicator)
    await communicator.disconnect()
    assert await _branch(conversation) == [
        ("user", "first"),
        ("assistant", REPLY),
        ("user", "second"),
        ("assistant", REPLY),
    ]
    assert "1 / 2" in switched and "second" in switched


async def test_a_switch_is_remembered_for_a_reload_and_other_tabs(alice, alice_client, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    first_tab = await connect(alice, conversation)
    second_tab = await connect(alice, conversation)
    await _exchange(first_tab, "first")
    await until_final(second_tab)
    first = await _message(conversation, "assistant", REPLY)
    await send(first_tab, action="regenerate", message=str(first.id))
    await until_final(first_tab)
    await until_final(second_tab)

    await send(first_tab, action="switch", message=str(first.id))
    await _next_transcript(first_tab)
    followed = await _next_transcript(second_tab)
    await first_tab.disconnect()
    await second_tab.disconnect()

    assert f'id="msg-{first.id}"' in followed and "1 / 2" in followed
    page = await sync_to_async(alice_client.get)(reverse("conversation", args=[conversation.id]))
    assert f'id="msg-{first.id}"' in page.content.decode()


@pytest.mark.parametrize("action", ["regenerate", "edit", "switch"])
async def test_branch_actions_are_refused_while_a_reply_streams(alice, conversation, openai_fake, action):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await _exchange(communicator, "first")
    question = await _message(conversation, "user", "first")
    reply = await _message(conversation, "assistant", REPLY)
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=400,delay=0.02")
    await send(communicator, action="send", text="slow one")
    await communicator.receive_from(timeout=10)  # the new bubbles

    target = question if action == "edit" else reply
    await send(communicator, action=action, message=str(target.id), text="changed")
    while "still being written" not in (frame := await communicator.receive_from(timeout=10)):
        assert 'id="transcript"' not in frame
    await send(communicator, action="stop")
    await until_final(communicator)
    await communicator.disconnect()
    assert await database_sync_to_async(conversation.messages.count)() == 4


async def test_another_users_message_cannot_be_switched_to(alice, charlie, conversation, openai_fake):
    other = await database_sync_to_async(Conversation.objects.create)(owner=charlie, model_key="demo:demo")
    stranger = await database_sync_to_async(Message.objects.create)(conversation=other, role="user", content="x")
    communicator = await connect(alice, conversation)
    await send(communicator, action="switch", message=str(stranger.id))
    frame = await communicator.receive_from(timeout=10)
    await communicator.disconnect()
    assert "not found" in frame
    assert (await database_sync_to_async(Message.objects.get)(pk=stranger.pk)).shown_at is None


async def test_each_branch_action_works_without_javascript(alice, conversation):
    client = AsyncClient()
    await client.aforce_login(alice)

    async def post(name, *args, **data):
        response = await client.post(reverse(name, args=[conversation.id, *args]), data)
        assert response.status_code == 302
        running = generation.get_active(conversation.id)
        if running is not None:
            await asyncio.wait_for(running.done.wait(), 20)

    await post("send", text="hello")
    question = await _message(conversation, "user", "hello")
    await post("edit_message", question.id, text="hello again")
    assert (await _branch(conversation))[0] == ("user", "hello again")
    await post("switch", question.id)
    assert (await _branch(conversation))[0] == ("user", "hello")
    reply = await database_sync_to_async(conversation.messages.get)(role="assistant", parent=question)
    await post("regenerate", reply.id)
    assert await database_sync_to_async(conversation.messages.filter(role="assistant", parent=question).count)() == 2
