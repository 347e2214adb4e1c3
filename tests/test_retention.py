"""``manage.py purgeconversations``: conversations idle past CHAT_RETENTION_DAYS go, with their messages."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations.models import AuditLog, Conversation, Message

pytestmark = pytest.mark.django_db


def _purge(**options) -> str:
    out = io.StringIO()
    call_command("purgeconversations", stdout=out, **options)
    return out.getvalue()


def test_it_deletes_conversations_idle_past_the_retention_with_their_messages(alice, settings):
    settings.CHAT_RETENTION_DAYS = 30
    old = Conversation.objects.create(owner=alice, title="old", updated_at=timezone.now() - timedelta(days=31))
    recent = Conversation.objects.create(owner=alice, title="recent", updated_at=timezone.now() - timedelta(days=29))
    Message.objects.create(conversation=old, role="user", content="老的")
    Message.objects.create(conversation=recent, role="user", content="new")
    AuditLog.record(alice, AuditLog.Action.VIEW, [str(old.id)])

    assert "Deleted 1 conversation(s)" in _purge()
    assert list(Conversation.objects.values_list("title", flat=True)) == ["recent"]
    assert list(Message.objects.values_list("content", flat=True)) == ["new"]
    assert AuditLog.objects.count() == 1  # who read what outlives the conversation


def test_a_dry_run_deletes_nothing_and_zero_days_keeps_everything(alice, settings):
    Conversation.objects.create(owner=alice, title="old", updated_at=timezone.now() - timedelta(days=400))
    settings.CHAT_RETENTION_DAYS = 0
    assert "every conversation is kept" in _purge()
    assert "1 conversation(s) idle for over 365 days would be deleted" in _purge(days=365, dry_run=True)
    assert Conversation.objects.count() == 1
