"""Conversations and their messages.

A conversation is a tree of messages (``parent``) so that branching can come
later without a migration; today the transcript is the chain of newest
children.  Every assistant message keeps its provenance: which provider and
model wrote it, with which parameters, how long it took, how it ended.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user) -> ConversationQuerySet:
        """The conversations ``user`` may open: their own and nobody else's."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)

    def active(self) -> ConversationQuerySet:
        return self.filter(archived=False)

    def by_activity(self) -> ConversationQuerySet:
        return self.order_by("-updated_at", "-created_at")


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="conversations", verbose_name=_("owner")
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    model_key = models.CharField(_("model"), max_length=200, blank=True, help_text=_("provider:model"))
    system_prompt = models.TextField(_("system prompt"), blank=True)
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_tokens = models.PositiveIntegerField(_("max tokens"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now, db_index=True)
    archived = models.BooleanField(_("archived"), default=False)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [models.Index(fields=["owner", "archived", "-updated_at"], name="conv_owner_activity")]

    def __str__(self) -> str:
        return self.display_title

    def get_absolute_url(self) -> str:
        return reverse("conversation", args=[self.id])

    @property
    def display_title(self) -> str:
        return self.title or str(_("New conversation"))

    def transcript(self) -> list[Message]:
        """The current branch, root first, in one query.

        Messages form a tree through ``parent``; a Retry adds a sibling.  The
        current branch follows the newest child at every step, so a retried
        reply replaces the failed one on screen while both stay stored.
        """
        children: dict[uuid.UUID | None, Message] = {}
        for message in self.messages.order_by("created_at", "id"):
            children[message.parent_id] = message  # later siblings win
        branch, current = [], children.get(None)
        while current is not None:
            branch.append(current)
            current = children.get(current.id)
        return branch

    def touch(self) -> None:
        self.updated_at = timezone.now()
        Conversation.objects.filter(pk=self.pk).update(updated_at=self.updated_at)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", _("System")
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    class Status(models.TextChoices):
        STREAMING = "streaming", _("Streaming")
        COMPLETE = "complete", _("Complete")
        STOPPED = "stopped", _("Stopped")
        ERROR = "error", _("Error")
        INTERRUPTED = "interrupted", _("Interrupted")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, models.CASCADE, related_name="messages", verbose_name=_("conversation")
    )
    parent = models.ForeignKey(
        "self", models.CASCADE, null=True, blank=True, related_name="children", verbose_name=_("parent")
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    reasoning = models.TextField(_("reasoning"), blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.COMPLETE)
    provider = models.CharField(_("provider"), max_length=50, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    parameters = models.JSONField(_("parameters"), default=dict, blank=True)
    finish_reason = models.CharField(_("finish reason"), max_length=32, blank=True)
    finish_reason_raw = models.CharField(_("provider finish reason"), max_length=64, blank=True)
    input_tokens = models.PositiveIntegerField(_("input tokens"), null=True, blank=True)
    output_tokens = models.PositiveIntegerField(_("output tokens"), null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(_("time to first token (ms)"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    error_kind = models.CharField(_("error kind"), max_length=32, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    # While streaming: when the worker writing it last said it was alive (see
    # conversations.generation's heartbeat); a stale one means that worker died.
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_transcript"),
            models.Index(fields=["status"], name="msg_status"),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()}: {self.content[:60]}"

    @property
    def model_key(self) -> str:
        return f"{self.provider}:{self.model}" if self.provider else ""

    @property
    def is_assistant(self) -> bool:
        return self.role == self.Role.ASSISTANT

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def tokens_per_second(self) -> float | None:
        if not self.output_tokens or not self.duration_ms:
            return None
        generating_ms = self.duration_ms - (self.first_token_ms or 0)
        if generating_ms <= 0:
            return None
        return self.output_tokens * 1000 / generating_ms
