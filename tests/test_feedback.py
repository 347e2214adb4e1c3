"""Owners rate replies from the reply footer; nobody else can."""

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from conversations.models import Feedback, Message

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _url(message) -> str:
    return reverse("feedback", args=[message.conversation_id, message.id])


def test_it_records_a_rating_and_comment_without_javascript(alice_client, alice, reply):
    response = alice_client.post(_url(reply), {"rating": "up", "comment": "  clear answer "})
    assert response.status_code == 302
    assert response["Location"] == f"{reply.conversation.get_absolute_url()}#msg-{reply.id}"
    feedback = Feedback.objects.get()
    assert (feedback.message, feedback.user, feedback.rating, feedback.comment) == (reply, alice, "up", "clear answer")


def test_it_answers_htmx_with_the_control_alone(alice_client, reply):
    response = alice_client.post(_url(reply), {"rating": "down"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith("<form")
    assert f'id="msg-{reply.id}-feedback"' in body
    assert 'value="clear" class="link rate rate-down" aria-pressed="true"' in body
    assert 'class="link rate rate-up" aria-pressed="false"' in body


def test_it_keeps_one_rating_per_user_and_reply(alice_client, reply):
    alice_client.post(_url(reply), {"rating": "up"})
    alice_client.post(_url(reply), {"rating": "down", "comment": "on second thought, wrong"})
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment) == ("down", "on second thought, wrong")


def test_it_removes_a_rating(alice_client, reply):
    alice_client.post(_url(reply), {"rating": "up"})
    alice_client.post(_url(reply), {"rating": "clear"})
    assert not Feedback.objects.exists()


def test_it_refuses_an_unknown_rating(alice_client, reply):
    response = alice_client.post(_url(reply), {"rating": "meh"}, **HTMX)
    assert response.status_code == 200  # htmx swaps only 2xx: the error shows in place
    assert 'role="alert"' in response.content.decode()
    assert alice_client.post(_url(reply), {"rating": "meh"}).status_code == 302
    assert not Feedback.objects.exists()


def test_it_refuses_overlong_comments(alice_client, reply):
    response = alice_client.post(_url(reply), {"rating": "up", "comment": "x" * 2001}, **HTMX)
    assert "at most 2000 characters" in response.content.decode()
    assert not Feedback.objects.exists()


def test_it_checks_ownership(charlie_client, reply):
    assert charlie_client.post(_url(reply), {"rating": "down"}).status_code == 404
    assert charlie_client.post(_url(reply), {"rating": "down"}, **HTMX).status_code == 404
    assert not Feedback.objects.exists()


def test_it_requires_login(client, reply):
    response = client.post(_url(reply), {"rating": "up"})
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert not Feedback.objects.exists()


def test_it_rates_only_finished_assistant_replies(alice_client, conversation, reply):
    question = reply.parent
    assert alice_client.post(_url(question), {"rating": "up"}).status_code == 404
    streaming = Message.objects.create(conversation=conversation, parent=reply, role="assistant", status="streaming")
    assert alice_client.post(_url(streaming), {"rating": "up"}).status_code == 404
    for status in ("error", "stopped", "interrupted"):
        Message.objects.filter(pk=streaming.pk).update(status=status)
        assert alice_client.post(_url(streaming), {"rating": "down"}).status_code == 302
    assert Feedback.objects.get().message == streaming


def test_it_answers_get_with_the_current_state(alice_client, alice, charlie_client, reply):
    Feedback.objects.create(message=reply, user=alice, rating="down", comment="too long")
    body = alice_client.get(_url(reply), **HTMX).content.decode()
    assert 'class="link rate rate-down" aria-pressed="true"' in body
    assert 'value="too long"' in body
    assert "hx-trigger" not in body  # it knows its state: no further request
    assert alice_client.get(_url(reply))["Location"].endswith(f"#msg-{reply.id}")
    assert charlie_client.get(_url(reply), **HTMX).status_code == 404


def test_it_shows_the_rating_on_the_page(alice_client, alice, reply):
    Feedback.objects.create(message=reply, user=alice, rating="up", comment="nice & short")
    body = alice_client.get(reply.conversation.get_absolute_url()).content.decode()
    assert 'value="clear" class="link rate rate-up" aria-pressed="true"' in body
    assert 'value="nice &amp; short"' in body
    assert f'action="{_url(reply)}"' in body
    assert f'hx-get="{_url(reply)}"' not in body  # the page knows the rating: no request for it


def test_it_offers_feedback_only_on_finished_replies(alice_client, conversation, reply):
    Message.objects.create(conversation=conversation, parent=reply, role="assistant", status="streaming")
    body = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert body.count('class="feedback inline"') == 1  # not on the question, not on the streaming reply


def test_it_renders_in_websocket_frames_for_htmx(reply):
    # Frames are rendered without a request: no CSRF input, so htmx's request
    # carries the token from <body hx-headers> instead.
    # They are rendered without a user too: the control fetches its state.
    html = render_to_string("conversations/_message.html", {"msg": reply, "oob": True})
    assert f'hx-post="{_url(reply)}"' in html
    assert "csrfmiddlewaretoken" not in html
    assert f'hx-get="{_url(reply)}" hx-trigger="load"' in html


def test_it_keeps_the_page_query_count_with_ratings(
    alice_client, alice, conversation, reply, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = conversation.get_absolute_url()
    alice_client.get(url)
    with CaptureQueriesContext(connection) as before:
        alice_client.get(url)
    parent = reply
    for _ in range(10):
        question = Message.objects.create(conversation=conversation, parent=parent, role="user", content="again")
        parent = Message.objects.create(conversation=conversation, parent=question, role="assistant", content="ok")
        Feedback.objects.create(message=parent, user=alice, rating="up")
    with django_assert_max_num_queries(len(before.captured_queries)):
        alice_client.get(url)


def test_it_shows_feedback_to_reviewers(reply, alice, django_user_model):
    from django.test import Client

    Feedback.objects.create(message=reply, user=alice, rating="down", comment="made that up")
    root = Client()
    root.force_login(django_user_model.objects.create_superuser("root", password="root-password-123"))
    body = root.get(reverse("admin:conversations_conversation_review", args=[reply.conversation_id])).content.decode()
    assert "made that up" in body
    assert "Thumbs down — alice" in body
    changelist = root.get(reverse("admin:conversations_conversation_changelist")).content.decode()
    assert "👍 0 · 👎 1" in changelist
