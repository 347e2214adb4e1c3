"""Share links: a read-only snapshot of the branch shown, behind an unguessable
link, for anyone (CHAT_SHARING=links) or anyone logged in (users), never when off.

alice owns the conversation; charlie has no access to it; rita is staff with
the review permission, sam staff without it."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from conversations.models import AuditLog, Message, Share

pytestmark = pytest.mark.django_db

PROMPT = "You are my private assistant for the surprise party"


@pytest.fixture
def links(settings):
    settings.CHAT_SHARING = "links"


@pytest.fixture
def shared(conversation, reply) -> Share:
    conversation.system_prompt = PROMPT
    conversation.save()
    return Share.snapshot(conversation)


def _staff(django_user_model, name: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(name, password=f"{name}-password-123", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="conversations", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_when_sharing_is_off_there_is_no_share_button_and_links_are_404(alice_client, conversation, reply, settings):
    settings.CHAT_SHARING = "off"
    share = Share.snapshot(conversation)

    assert 'id="share"' not in alice_client.get(conversation.get_absolute_url()).content.decode()
    assert alice_client.post(reverse("share", args=[conversation.id])).status_code == 404
    assert alice_client.get(share.get_absolute_url()).status_code == 404
    assert Client().get(share.get_absolute_url()).status_code == 404


def test_sharing_is_off_by_default():
    from chatsite import settings as project_settings

    assert project_settings.CHAT_SHARING == "off"


def test_share_makes_a_link_shown_in_the_conversation(alice_client, conversation, reply, links):
    assert 'id="share"' in alice_client.get(conversation.get_absolute_url()).content.decode()

    response = alice_client.post(reverse("share", args=[conversation.id]))

    assert response.status_code == 302
    share = conversation.shares.get()
    assert len(share.token) >= 32 and [m["role"] for m in share.messages] == ["user", "assistant"]
    assert share.get_absolute_url() in alice_client.get(conversation.get_absolute_url()).content.decode()


def test_with_links_anyone_reads_a_share_without_logging_in(shared, links):
    response = Client().get(shared.get_absolute_url())

    body = response.content.decode()
    assert response.status_code == 200
    assert "Hello?" in body and "Hi <strong>there</strong>" in body  # the stored sanitised HTML
    assert "Alice&#x27;s plans" in body


def test_a_share_page_has_no_controls(shared, links):
    body = Client().get(shared.get_absolute_url()).content.decode()

    assert "<form" not in body and "Regenerate" not in body and "Edit" not in body and "ws-connect" not in body


def test_a_share_is_marked_noindex_and_never_cached(shared, links):
    response = Client().get(shared.get_absolute_url())

    assert '<meta name="robots" content="noindex, nofollow">' in response.content.decode()
    assert "noindex" in response["X-Robots-Tag"]
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_with_users_an_anonymous_visitor_is_sent_to_log_in(shared, settings, charlie_client):
    settings.CHAT_SHARING = "users"

    response = Client().get(shared.get_absolute_url())

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert charlie_client.get(shared.get_absolute_url()).status_code == 200


def test_a_revoked_share_is_a_404_for_everyone(alice_client, shared, links):
    response = alice_client.post(reverse("revoke_share", args=[shared.pk]))

    assert response.status_code == 302
    shared.refresh_from_db()
    assert shared.revoked_at is not None
    assert Client().get(shared.get_absolute_url()).status_code == 404
    assert alice_client.get(shared.get_absolute_url()).status_code == 404


def test_a_deactivated_owners_share_stops_opening(alice, shared, links):
    alice.is_active = False
    alice.save()

    assert Client().get(shared.get_absolute_url()).status_code == 404


def test_a_reply_still_being_written_is_left_out_of_a_share(conversation, reply, links):
    question = Message.objects.create(conversation=conversation, parent=reply, role="user", content="And then?")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", status="streaming", content="Half"
    )
    share = Share.snapshot(conversation)

    assert [m["content"] for m in share.messages] == ["Hello?", "Hi **there**", "And then?"]


def test_an_unknown_token_is_a_404(links):
    assert Client().get(reverse("shared", args=["not-a-real-token"])).status_code == 404


def test_later_messages_and_edits_do_not_appear_in_an_existing_share(conversation, reply, shared, links):
    Message.objects.create(conversation=conversation, parent=reply, role="user", content="A later question")
    Message.objects.filter(pk=reply.pk).update(content="Rewritten afterwards", html="<p>Rewritten afterwards</p>")

    body = Client().get(shared.get_absolute_url()).content.decode()

    assert "A later question" not in body and "Rewritten afterwards" not in body
    assert "Hi <strong>there</strong>" in body


def test_a_share_holds_the_branch_shown_not_the_other_attempts(conversation, reply, links):
    other = Message.objects.create(
        conversation=conversation, parent=reply.parent, role="assistant", content="A newer attempt", status="complete"
    )
    share = Share.snapshot(conversation)

    body = Client().get(share.get_absolute_url()).content.decode()

    assert "A newer attempt" in body and "Hi <strong>there</strong>" not in body
    assert other.content in [m["content"] for m in share.messages]


def test_the_system_prompt_never_appears_in_a_share(shared, links):
    assert PROMPT not in Client().get(shared.get_absolute_url()).content.decode()
    assert PROMPT not in str(shared.messages)


def test_another_users_share_is_reachable_only_through_its_link(charlie_client, shared, links):
    assert charlie_client.get(shared.get_absolute_url()).status_code == 200
    assert shared.get_absolute_url() not in charlie_client.get(reverse("shares")).content.decode()
    assert charlie_client.post(reverse("revoke_share", args=[shared.pk])).status_code == 404
    shared.refresh_from_db()
    assert shared.revoked_at is None


def test_the_shares_page_lists_the_users_links_with_revoke(alice_client, shared, links):
    body = alice_client.get(reverse("shares")).content.decode()

    assert shared.get_absolute_url() in body and reverse("revoke_share", args=[shared.pk]) in body
    assert 'href="/shares/"' in body  # linked from the sidebar's account area


def test_a_revoke_from_the_shares_page_returns_there(alice_client, shared, links):
    response = alice_client.post(reverse("revoke_share", args=[shared.pk]), {"next": reverse("shares")})

    assert response["Location"] == reverse("shares")
    assert "You have no share links." in alice_client.get(reverse("shares")).content.decode()


def test_a_reviewer_opening_a_share_in_the_admin_is_audited(django_user_model, shared):
    rita = _staff(django_user_model, "rita", "view_share", "review_conversation")

    response = rita.get(reverse("admin:conversations_share_change", args=[shared.pk]))

    assert response.status_code == 200 and "Hello?" in response.content.decode()
    entry = AuditLog.objects.get()
    assert entry.actor_username == "rita" and entry.action == AuditLog.Action.VIEW
    assert entry.conversation_ids == [str(shared.conversation_id)] and entry.details["share"] == shared.pk


def test_staff_without_review_permission_cannot_read_a_share_in_the_admin(django_user_model, shared):
    sam = _staff(django_user_model, "sam", "view_share")

    change = sam.get(reverse("admin:conversations_share_change", args=[shared.pk])).content.decode()
    listing = sam.get(reverse("admin:conversations_share_changelist")).content.decode()
    searched = sam.get(reverse("admin:conversations_share_changelist") + "?messages__icontains=Hello")

    for page in (change, listing):
        assert "Hello?" not in page and "Alice&#x27;s plans" not in page and shared.token not in page
    assert searched.status_code == 400  # a lookup into the shared text is refused
    assert not AuditLog.objects.exists()
