"""The settings page: download everything, delete every conversation, delete the account."""

import asyncio
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chatsite.asgi import application
from conversations import export, generation
from conversations.models import AuditLog, Conversation, Feedback, Message

pytestmark = pytest.mark.django_db
# Tests with a socket or a reply: their database work happens on other threads.
transactional = pytest.mark.django_db(transaction=True)


def _download(client) -> dict:
    response = client.get(reverse("account_export"))
    assert response.status_code == 200
    return json.loads(b"".join(response.streaming_content))


@pytest.fixture
def branched(conversation, reply, alice) -> Message:
    """A second attempt at alice's reply (a branch), rated by her; returns it."""
    alice.email = "alice@example.com"
    alice.save(update_fields=["email"])
    again = Message.objects.create(
        conversation=conversation, parent=reply.parent, role="assistant", content="Hello again", status="complete"
    )
    Feedback.objects.create(message=again, user=alice, rating="up", comment="better")
    return again


@pytest.fixture
def charlies(charlie) -> Conversation:
    conv = Conversation.objects.create(owner=charlie, title="Charlie's secrets", model_key="demo:demo")
    Message.objects.create(conversation=conv, role="user", content="charlie's words")
    return conv


def test_the_settings_page_is_linked_near_log_out_and_offers_download_and_deletion(alice_client, conversation):
    home = alice_client.get(reverse("index")).content.decode()
    assert f'href="{reverse("account_settings")}"' in home

    body = alice_client.get(reverse("account_settings")).content.decode()
    assert f'href="{reverse("account_export")}"' in body
    assert f'action="{reverse("delete_all_conversations")}#settings-conversations"' in body
    assert f'action="{reverse("delete_account")}#settings-account"' in body
    assert 'type="checkbox" name="confirm"' in body and 'type="password" name="password"' in body
    assert "You have 1 conversation." in body


@pytest.mark.parametrize("name", ["account_settings", "account_export"])
def test_anonymous_visitors_are_sent_to_log_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["delete_all_conversations", "delete_account"])
def test_the_deletions_take_only_posts(alice_client, conversation, name):
    assert alice_client.get(reverse(name)).status_code == 405
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_the_download_is_a_private_attachment(alice_client, conversation):
    response = alice_client.get(reverse("account_export"))
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="chat-alice-')
    assert set(response["Cache-Control"].split(", ")) == {"private", "no-store"}


def test_the_download_holds_alices_account_and_every_message_of_every_branch(
    alice_client, alice, conversation, reply, branched, charlies
):
    response = alice_client.get(reverse("account_export"))
    raw = b"".join(response.streaming_content).decode()
    data = json.loads(raw)

    assert data["account"] == {
        "username": "alice",
        "email": "alice@example.com",
        "date_joined": alice.date_joined.isoformat(),
        "last_login": data["account"]["last_login"],
    }
    assert alice.password not in raw and "pbkdf2" not in raw and "password" not in raw
    (exported,) = data["conversations"]
    assert exported["id"] == str(conversation.id) and exported["title"] == "Alice's plans"
    assert "flags" not in exported  # the reviewers' notes are not the user's
    by_id = {m["id"]: m for m in exported["messages"]}
    assert set(by_id) == {str(reply.parent_id), str(reply.id), str(branched.id)}
    assert by_id[str(reply.id)]["content"] == "Hi **there**" and by_id[str(reply.id)]["superseded"]
    assert by_id[str(branched.id)]["current_branch"] and by_id[str(branched.id)]["parent"] == str(reply.parent_id)
    assert data["feedback"] == [
        {
            "conversation": str(conversation.id),
            "message": str(branched.id),
            "rating": "up",
            "comment": "better",
            "created_at": data["feedback"][0]["created_at"],
            "updated_at": data["feedback"][0]["updated_at"],
        }
    ]
    assert "Charlie" not in raw and "charlie" not in raw


def test_charlies_download_never_contains_alices_data(charlie_client, conversation, reply, branched, charlies):
    raw = json.dumps(_download(charlie_client))
    data = json.loads(raw)
    assert [c["id"] for c in data["conversations"]] == [str(charlies.id)]
    assert data["feedback"] == []
    assert "Alice" not in raw and "Hello again" not in raw and "Hi **there**" not in raw


def test_an_empty_account_downloads_a_valid_document(charlie_client):
    data = _download(charlie_client)
    assert data["account"]["username"] == "charlie"
    assert data["conversations"] == [] and data["feedback"] == []


def test_the_download_needs_as_many_queries_for_many_conversations_as_for_one(alice_client, alice, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_BATCH", 1000)

    def add_conversations(count):
        for number in range(count):
            conv = Conversation.objects.create(owner=alice, title=f"plans {number}")
            question = Message.objects.create(conversation=conv, role="user", content="q")
            answer = Message.objects.create(conversation=conv, parent=question, role="assistant", content="a")
            Feedback.objects.create(message=answer, user=alice, rating="down")

    def queries():
        with CaptureQueriesContext(connection) as captured:
            _download(alice_client)
        return len(captured)

    add_conversations(1)
    one = queries()
    add_conversations(9)
    assert queries() == one
    assert len(_download(alice_client)["conversations"]) == 10


@transactional
async def test_the_asgi_download_holds_the_same_document(alice, conversation, reply, branched):
    streamed = json.loads("".join([piece async for piece in export.aaccount_export(alice)]))
    built = json.loads("".join(await sync_to_async(list)(export.account_export(alice))))
    streamed.pop("exported_at"), built.pop("exported_at")
    assert streamed == built and len(streamed["conversations"][0]["messages"]) == 3


def test_deleting_all_conversations_needs_the_box_ticked(alice_client, conversation, reply):
    response = alice_client.post(reverse("delete_all_conversations"))
    assert response.status_code == 400
    assert "Tick the box to confirm." in response.content.decode()
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_deleting_all_conversations_deletes_alices_and_leaves_charlies(alice_client, conversation, reply, charlies):
    Conversation.objects.create(owner=conversation.owner, title="another", archived=True)
    response = alice_client.post(reverse("delete_all_conversations"), {"confirm": "on"}, follow=True)
    assert response.redirect_chain == [(reverse("account_settings"), 302)]
    assert "2 conversations deleted." in response.content.decode()
    assert not Conversation.objects.filter(owner=conversation.owner).exists()
    assert not Message.objects.filter(conversation=conversation).exists()
    assert Conversation.objects.filter(pk=charlies.pk).exists()


@transactional
async def test_deleting_all_conversations_stops_a_reply_being_written_first(alice, conversation, settings, caplog):
    settings.CHAT_DEMO_MODEL = "1"
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 200  # the reply is still being written when the deletion comes
    client = AsyncClient()
    await client.aforce_login(alice)
    assert (await client.post(reverse("send", args=[conversation.id]), {"text": "a long one"})).status_code == 302
    running = generation.get_active(conversation.id)
    assert running is not None and not running.done.is_set()

    with caplog.at_level(logging.INFO, logger="conversations.generation"):
        response = await client.post(reverse("delete_all_conversations"), {"confirm": "on"})
        assert response.status_code == 302
        # Its final save runs on the writer thread: before the deletion (the
        # cascade then takes the saved row) or after it (then it finds no row).
        await asyncio.wait_for(running.done.wait(), 10)

    assert running.message.status == "stopped"
    assert generation.get_active(conversation.id) is None
    assert not await Message.objects.filter(conversation_id=conversation.id).aexists()
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert "could not save reply" not in caplog.text


def test_a_wrong_password_deletes_nothing_and_says_so(alice_client, alice, conversation, reply):
    response = alice_client.post(reverse("delete_account"), {"password": "not-alices"})
    assert response.status_code == 400
    assert "That is not your password. Nothing was deleted." in response.content.decode()
    assert get_user_model().objects.filter(pk=alice.pk).exists()
    assert Message.objects.filter(conversation=conversation).count() == 2
    assert alice_client.get(reverse("index")).status_code == 200  # still logged in


def test_wrong_passwords_here_count_towards_the_log_in_lockout(alice_client, alice, conversation, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert alice_client.post(reverse("delete_account"), {"password": "guess"}).status_code == 400
    response = alice_client.post(reverse("delete_account"), {"password": "guess"})
    assert response.status_code == 429 and "Too many failed log-ins" in response.content.decode()
    # Even the right password is refused during the pause.
    alice_client.post(reverse("delete_account"), {"password": "alice-password-123"})
    assert get_user_model().objects.filter(pk=alice.pk).exists()
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_the_right_password_deletes_the_account_and_its_conversations_and_logs_out(
    alice_client, alice, conversation, reply, charlies
):
    AuditLog.record(alice, AuditLog.Action.VIEW, [charlies.id])  # alice was staff once

    response = alice_client.post(reverse("delete_account"), {"password": "alice-password-123"}, follow=True)

    assert response.redirect_chain == [(reverse("login"), 302)]
    assert "Your account and all its conversations were deleted." in response.content.decode()
    assert not get_user_model().objects.filter(username="alice").exists()
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(pk=reply.pk).exists()
    assert Conversation.objects.filter(pk=charlies.pk).exists()
    entry = AuditLog.objects.get()  # the audit log keeps its entry, without the account
    assert entry.actor is None and entry.actor_username == "alice"
    assert alice_client.get(reverse("index")).status_code == 302


async def _socket_in_another_session(user, conversation) -> WebsocketCommunicator:
    elsewhere = Client()
    await sync_to_async(elsewhere.force_login)(user)
    cookie = f"sessionid={elsewhere.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    assert (await communicator.connect(timeout=5))[0]
    # Answered only once the socket is in its groups, so it hears what follows.
    await communicator.send_to(text_data="{not json")
    assert "not valid JSON" in await communicator.receive_from(timeout=5)
    return communicator


async def _signed_in(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


@transactional
@pytest.mark.timeout(30)
async def test_deleting_all_conversations_tells_their_open_tabs_and_closes_them(alice, conversation, charlies):
    alices = await _socket_in_another_session(alice, conversation)
    charlie = await database_sync_to_async(get_user_model().objects.get)(username="charlie")
    untouched = await _socket_in_another_session(charlie, charlies)

    response = await (await _signed_in(alice)).post(reverse("delete_all_conversations"), {"confirm": "on"})

    assert response.status_code == 302
    assert "This conversation was deleted." in await alices.receive_from(timeout=5)
    assert await alices.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    assert await untouched.receive_nothing()
    await alices.disconnect()
    await untouched.disconnect()


@transactional
@pytest.mark.timeout(30)
async def test_deleting_the_account_closes_its_sockets_in_other_sessions(alice, conversation):
    communicator = await _socket_in_another_session(alice, conversation)

    response = await (await _signed_in(alice)).post(reverse("delete_account"), {"password": "alice-password-123"})

    assert response.status_code == 302
    # Two events close it (the conversations deleted, the session ended); with
    # Redis they may come in either order, so the notice may not come first.
    output = await communicator.receive_output(timeout=5)
    if output["type"] == "websocket.send":
        assert "This conversation was deleted." in output["text"]
        output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    await communicator.disconnect()
    assert not await database_sync_to_async(get_user_model().objects.filter(pk=alice.pk).exists)()


@transactional
@pytest.mark.timeout(30)
async def test_an_account_deleted_anywhere_loses_its_sockets(alice, conversation):
    """The admin, a shell, a command: the user model's post_delete closes the sockets."""
    communicator = await _socket_in_another_session(alice, conversation)
    await database_sync_to_async(lambda: get_user_model().objects.get(pk=alice.pk).delete())()
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()
