import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(alice) -> Client:
    admin = get_user_model().objects.create_superuser("root", password="root-password-123")
    client = Client()
    client.force_login(admin)
    return client


def _make(owner, conversations: int, messages: int) -> Conversation:
    last = None
    for n in range(conversations):
        last = Conversation.objects.create(owner=owner, title=f"chat {n}", model_key="demo:demo")
        Message.objects.bulk_create(
            Message(conversation=last, role="user" if i % 2 == 0 else "assistant", content=f"m{i}", model="demo")
            for i in range(messages)
        )
    return last


def _count_queries(django_assert_num_queries, client, url) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches (content types, session) so only the page's own queries are compared
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_it_lists_conversations_with_constant_queries(admin_client_, alice, django_assert_num_queries):
    url = reverse("admin:conversations_conversation_changelist")
    _make(alice, 3, 2)
    few = _count_queries(django_assert_num_queries, admin_client_, url)
    _make(alice, 40, 4)
    many = _count_queries(django_assert_num_queries, admin_client_, url)
    assert few == many


def test_it_shows_messages_inline_with_constant_queries(admin_client_, alice, django_assert_num_queries):
    small = _make(alice, 1, 2)
    big = _make(alice, 1, 60)
    few = _count_queries(
        django_assert_num_queries, admin_client_, reverse("admin:conversations_conversation_change", args=[small.id])
    )
    many = _count_queries(
        django_assert_num_queries, admin_client_, reverse("admin:conversations_conversation_change", args=[big.id])
    )
    assert few == many


def test_it_searches_message_content(admin_client_, alice, conversation):
    Message.objects.create(conversation=conversation, role="user", content="needle in a haystack")
    Conversation.objects.create(owner=alice, title="Other")
    response = admin_client_.get(reverse("admin:conversations_conversation_changelist"), {"q": "needle"})
    body = response.content.decode()
    assert "Alice&#x27;s plans" in body
    assert "Other" not in body


def test_it_shows_message_count_and_owner(admin_client_, conversation, reply):
    body = admin_client_.get(reverse("admin:conversations_conversation_changelist")).content.decode()
    assert ">2<" in body
    assert "alice" in body


def test_it_keeps_messages_read_only(admin_client_, conversation, reply):
    # The change page is metadata only; the text is read (and audited) on the review page.
    body = admin_client_.get(
        reverse("admin:conversations_conversation_change", args=[conversation.id])
    ).content.decode()
    assert "Hi **there**" not in body
    assert 'name="messages-0-content"' not in body
    review = admin_client_.get(reverse("admin:conversations_conversation_review", args=[conversation.id]))
    assert "Hi <strong>there</strong>" in review.content.decode()
    assert b"<textarea" not in review.content.split(b"flag-form")[0]


def test_a_superuser_deletes_a_user_whose_usage_is_on_the_ledger(admin_client_, alice, reply):
    from conversations.models import RunUsage, UsageDay

    UsageDay.add("demo:demo", RunUsage(3, 2), user_id=alice.pk)
    url = f"/admin/auth/user/{alice.pk}/delete/"
    assert admin_client_.post(url, {"post": "yes"}).status_code == 302
    assert not get_user_model().objects.filter(pk=alice.pk).exists()
    assert not UsageDay.objects.exists()


def test_ledger_rows_are_never_deleted_from_their_own_pages(admin_client_, alice):
    from conversations.models import RunUsage, UsageDay

    UsageDay.add("demo:demo", RunUsage(3, 2), user_id=alice.pk)
    row = UsageDay.objects.get()
    assert admin_client_.post(f"/admin/conversations/usageday/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    changelist = admin_client_.get("/admin/conversations/usageday/")
    assert changelist.status_code == 200 and b"delete_selected" not in changelist.content
    assert UsageDay.objects.filter(pk=row.pk).exists()
