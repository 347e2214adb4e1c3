"""The home page: a composer that starts a conversation with its first message."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.urls import reverse

from conversations import generation
from conversations.models import Conversation, Message
from conversations.providers.demo import reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def alice_async(alice) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(alice)
    return client


@pytest.fixture
def two_models(settings, monkeypatch):
    """An OpenAI model first (the default), then the demo."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    settings.CHAT_MODELS = "openai:gpt-4.1-mini"
    settings.CHAT_DEMO_MODEL = "1"


async def _reply_finished(conversation: Conversation) -> None:
    running = generation.get_active(conversation.id)  # None: it has already finished and saved
    if running is not None:
        await asyncio.wait_for(running.done.wait(), 20)


async def _only_conversation(owner) -> tuple[Conversation, list[Message]]:
    conversation = await Conversation.objects.aget(owner=owner)
    messages = await database_sync_to_async(list)(conversation.messages.order_by("created_at"))
    return conversation, messages


def test_the_home_page_shows_the_composer_and_the_model_picker(alice_client, two_models):
    body = alice_client.get(reverse("index")).content.decode()

    assert f'action="{reverse("new_conversation")}"' in body
    assert '<textarea name="text" id="composer-text"' in body
    assert "autofocus" in body
    assert '<optgroup label="OpenAI-compatible"><option value="openai:gpt-4.1-mini">' in body
    assert '<optgroup label="Offline demo"><option value="demo:demo">' in body
    assert "ws-send" not in body  # no socket on this page: a plain form post


async def test_sending_creates_one_conversation_with_the_message_and_its_reply(alice_async, alice, two_models):
    response = await alice_async.post(reverse("new_conversation"), {"text": "Hello from home", "model": "demo:demo"})

    conversation, messages = await _only_conversation(alice)
    assert response.status_code == 302
    assert response["Location"] == conversation.get_absolute_url()
    assert await Conversation.objects.acount() == 1
    assert (conversation.model_key, conversation.title) == ("demo:demo", "Hello from home")
    # The reply was started before the redirect, so the page's socket joins it.
    assert [m.role for m in messages] == ["user", "assistant"]
    await _reply_finished(conversation)
    _conversation, (question, reply) = await _only_conversation(alice)
    assert question.content == "Hello from home"
    assert (reply.status, reply.parent_id) == ("complete", question.id)
    assert reply.content == reply_text("Hello from home")


async def test_without_a_model_it_uses_the_first_offered_one(alice_async, alice):
    response = await alice_async.post(reverse("new_conversation"), {"text": "Hi"})

    conversation, _messages = await _only_conversation(alice)
    assert response.status_code == 302
    assert conversation.model_key == "demo:demo"
    await _reply_finished(conversation)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_an_empty_message_creates_nothing_and_shows_an_error(alice_client, text):
    response = alice_client.post(reverse("new_conversation"), {"text": text, "model": "demo:demo"})

    body = response.content.decode()
    assert response.status_code == 400
    assert "Type a message first." in body
    assert 'id="composer-text"' in body
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_a_model_that_is_not_offered_creates_nothing_and_keeps_the_text(alice_client):
    response = alice_client.post(
        reverse("new_conversation"), {"text": "Keep <b>this</b>", "model": "openai:gpt-4.1-mini"}
    )

    body = response.content.decode()
    assert response.status_code == 400
    assert "That model is not offered here." in body
    assert "Keep &lt;b&gt;this&lt;/b&gt;</textarea>" in body
    assert not Conversation.objects.exists()


def test_with_no_model_configured_it_creates_nothing_and_says_why(alice_client, settings):
    settings.CHAT_DEMO_MODEL = "0"

    response = alice_client.post(reverse("new_conversation"), {"text": "Anyone there?"})

    assert response.status_code == 400
    assert "No model is configured, so nothing can answer yet." in response.content.decode()
    assert not Conversation.objects.exists()


def test_the_new_conversation_url_leads_to_the_home_page_when_opened(alice_client):
    response = alice_client.get(reverse("new_conversation"))

    assert response.status_code == 302
    assert response["Location"] == reverse("index")
    assert not Conversation.objects.exists()


def test_the_sidebars_new_chat_link_opens_the_home_page(alice_client, conversation):
    body = alice_client.get(conversation.get_absolute_url()).content.decode()

    assert f'<a href="{reverse("index")}" class="button primary wide new-conversation">' in body
    assert f'action="{reverse("new_conversation")}"' not in body


def test_charlie_never_sees_alices_conversations(charlie_client, conversation, reply):
    body = charlie_client.get(reverse("index")).content.decode()

    assert conversation.get_absolute_url() not in body
    assert "Alice&#x27;s plans" not in body
    assert "No conversations yet." in body


def test_empty_conversations_are_not_in_the_sidebar_but_stay_reachable(alice_client, alice, conversation, reply):
    empty = Conversation.objects.create(owner=alice, title="Nothing here")

    body = alice_client.get(reverse("index")).content.decode()

    assert f'id="nav-{conversation.id}"' in body
    assert f'id="nav-{empty.id}"' not in body and "Nothing here" not in body
    assert alice_client.get(empty.get_absolute_url()).status_code == 200


def test_with_messages_keeps_only_conversations_that_have_one(alice, conversation, reply):
    Conversation.objects.create(owner=alice, title="Nothing here")

    assert list(Conversation.objects.with_messages()) == [conversation]
