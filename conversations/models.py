"""Conversations and their messages.

A conversation is a tree of messages (``parent``) so that branching can come
later without a migration; today the transcript is the chain of newest
children.  Every assistant message keeps its provenance: which endpoint
(``provider``: "openai", "anthropic" or a configured endpoint's name) and
model wrote it, with which parameters, how long it took, how it ended.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import EmptyResultSet
from django.core.files.storage import storages
from django.db import connection, models, transaction
from django.db.models import Case, Count, Exists, OuterRef, Q, Subquery, Sum, TextField, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_variables

from conversations.streaming_markdown import StreamingMarkdown


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user) -> ConversationQuerySet:
        """The conversations ``user`` may open: their own and nobody else's."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(owner=user)

    def active(self) -> ConversationQuerySet:
        return self.filter(archived=False)

    def in_sidebar(self) -> ConversationQuerySet:
        """Not archived and with a message: what the sidebar lists."""
        return self.active().with_messages()

    def pinned(self) -> ConversationQuerySet:
        """Pinned ones, by activity as the rest (a new message moves one to the top of its group)."""
        return self.filter(pinned_at__isnull=False).order_by("-updated_at", "-id")

    def unpinned_before(self, cursor: str | None) -> ConversationQuerySet:
        """Unpinned ones by activity, newest first, after the ``cursor`` of the
        last one shown (keyset paging on (updated_at, id): a conversation that
        moves up meanwhile is not shown twice, and no OFFSET is scanned)."""
        rows = self.filter(pinned_at__isnull=True).order_by("-updated_at", "-id")
        if cursor is None:
            return rows
        updated_at, pk = parse_cursor(cursor)
        return rows.filter(Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, pk__lt=pk))

    def idle_for(self, days: float) -> ConversationQuerySet:
        """Conversations with no activity (no message, rename or setting) for ``days``."""
        return self.filter(updated_at__lt=timezone.now() - timedelta(days=days))

    def by_activity(self) -> ConversationQuerySet:
        return self.order_by("-updated_at", "-created_at")

    def titled(self, text: str) -> ConversationQuerySet:
        """Those whose title contains ``text``, case-insensitively (see ``MessageQuerySet.containing``)."""
        return self.filter(_contains("conversations_conversation", "title", text))

    def with_message_containing(self, text: str) -> ConversationQuerySet:
        """Those with a message containing ``text`` (see ``MessageQuerySet.containing``)."""
        if _indexed_on_sqlite(text):
            # The index's own conversation column: tens of thousands of matches cost no message reads.
            return self.filter(pk__in=_sqlite_matches("conversations_message", text, "conversation"))
        return self.filter(Exists(Message.objects.filter(conversation=OuterRef("pk")).containing(text)))

    def with_messages(self) -> ConversationQuerySet:
        """Those with at least one message: an empty one is nothing to go back to."""
        return self.filter(Exists(Message.objects.filter(conversation=OuterRef("pk"))))

    def with_review_stats(self) -> ConversationQuerySet:
        """Counts, tokens, status flags, feedback and flags for the admin list.

        Correlated subqueries rather than Count/Sum over joins: several joined
        aggregates multiply each other's rows, and subqueries keep the list at
        one query however many conversations or messages there are."""
        replies = Q(role=Message.Role.ASSISTANT)
        return self.annotate(
            message_count=_per_conversation(Message, Count("id")),
            reply_count=_per_conversation(Message, Count("id"), replies),
            # None (shown blank) when no reply reported tokens, rather than a made-up 0.
            tokens_in=_per_conversation(Message, Sum("input_tokens"), replies, default=None),
            tokens_out=_per_conversation(Message, Sum("output_tokens"), replies, default=None),
            error_count=_per_conversation(Message, Count("id"), replies & Q(status=Message.Status.ERROR)),
            stopped_count=_per_conversation(Message, Count("id"), replies & Q(status=Message.Status.STOPPED)),
            interrupted_count=_per_conversation(Message, Count("id"), replies & Q(status=Message.Status.INTERRUPTED)),
            thumbs_up=_per_conversation(Feedback, Count("id"), Q(rating=Feedback.Rating.UP), via="message__"),
            thumbs_down=_per_conversation(Feedback, Count("id"), Q(rating=Feedback.Rating.DOWN), via="message__"),
            flag_count=_per_conversation(Flag, Count("id")),
            open_flag_count=_per_conversation(Flag, Count("id"), Q(resolved=False)),
        )


SEARCH_INDEXED_CHARS = 3  # trigram indexes need a whole trigram


def search_is_indexed(text: str) -> bool:
    """Whether an index answers a search for ``text`` (else it is a scan, to
    bound).  SQLite's trigram tokenizer takes every character, so any 3 do;
    pg_trgm takes trigrams of letters and digits only, so a pattern needs 3 of
    them in a row (not "!!!", "。。。" or emoji)."""
    if connection.vendor == "sqlite":
        return len(text) >= SEARCH_INDEXED_CHARS
    return _TRIGRAM_WORD.search(text) is not None


_TRIGRAM_WORD = re.compile(rf"[^\W_]{{{SEARCH_INDEXED_CHARS}}}")


def _indexed_on_sqlite(text: str) -> bool:
    return connection.vendor == "sqlite" and len(text) >= SEARCH_INDEXED_CHARS


def _sqlite_matches(table: str, text: str, column: str = "key") -> RawSQL:
    """The ids (``key``) or conversation ids of ``table``'s rows containing
    ``text``, from the FTS5 trigram table the 0010 migration keeps (a phrase
    query: the trigrams in a row, so a substring)."""
    sql = (
        f"SELECT r.{column} FROM {table}_search f JOIN {table}_search_rows r ON r.rowid = f.rowid "
        f"WHERE {table}_search MATCH %s"
    )
    return RawSQL(sql, [_phrase(text)])


def _phrase(text: str) -> str:
    """An FTS5 phrase query for ``text`` as it is (quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'


def _contains(table: str, column: str, text: str) -> Q:
    """``column`` contains ``text``: through the FTS5 trigram table on SQLite,
    else ``icontains`` (UPPER(...) LIKE, which the pg_trgm index on
    UPPER(column) serves on PostgreSQL)."""
    if _indexed_on_sqlite(text):
        return Q(pk__in=_sqlite_matches(table, text))
    return Q(**{f"{column}__icontains": text})


def _per_conversation(model, aggregate, condition: Q | None = None, via: str = "", default: int | None = 0):
    """``aggregate`` over ``model``'s rows of the outer conversation, as a subquery (``default`` when none)."""
    rows = model.objects.filter(**{f"{via}conversation": OuterRef("pk")})
    if condition is not None:
        rows = rows.filter(condition)
    value = rows.order_by().values(f"{via}conversation").annotate(value=aggregate).values("value")[:1]
    if default is None:
        return Subquery(value, output_field=models.IntegerField())
    return Coalesce(Subquery(value), default, output_field=models.IntegerField())


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="conversations", verbose_name=_("owner")
    )

    class TitleSource(models.TextChoices):
        NONE = "", _("None")
        FIRST_LINE = "first_line", _("First line of the first message")
        MODEL = "model", _("Written by a model")
        USER = "user", _("Set by the user")

    title = models.CharField(_("title"), max_length=200, blank=True)
    title_source = models.CharField(_("title source"), max_length=16, choices=TitleSource.choices, blank=True)
    # The title call's own provenance and usage, kept apart from the replies'.
    title_model = models.CharField(_("title model"), max_length=200, blank=True)
    title_input_tokens = models.PositiveIntegerField(_("title input tokens"), null=True, blank=True)
    title_output_tokens = models.PositiveIntegerField(_("title output tokens"), null=True, blank=True)
    model_key = models.CharField(_("model"), max_length=200, blank=True, help_text=_("provider:model"))
    system_prompt = models.TextField(_("system prompt"), blank=True)
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_tokens = models.PositiveIntegerField(_("max tokens"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now, db_index=True)
    archived = models.BooleanField(_("archived"), default=False)
    pinned_at = models.DateTimeField(_("pinned"), null=True, blank=True)

    class Source(models.TextChoices):
        HERE = "", _("Written here")
        CHATSITE = "chatsite", _("Imported from this app's export")
        CHATGPT = "chatgpt", _("Imported from ChatGPT")
        CLAUDE = "claude", _("Imported from Claude")

    # Where an imported conversation came from, and its id there (a re-import skips it).
    imported_from = models.CharField(_("imported from"), max_length=16, choices=Source.choices, blank=True)
    source_id = models.CharField(_("id at the source"), max_length=200, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [models.Index(fields=["owner", "archived", "-updated_at"], name="conv_owner_activity")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "imported_from", "source_id"],
                condition=~Q(source_id=""),
                name="conv_imported_once",
            )
        ]
        # Reading what users wrote is a separate grant from seeing that conversations exist.
        permissions = [("review_conversation", _("Can read conversation transcripts in the admin"))]

    def __str__(self) -> str:
        return self.display_title

    def get_absolute_url(self) -> str:
        return reverse("conversation", args=[self.id])

    @property
    def display_title(self) -> str:
        return self.title or str(_("New conversation"))

    def transcript(self, through: uuid.UUID | None = None) -> Transcript:
        """The message tree in one query, and the branch the user sees (or the
        one through message ``through``, see Transcript)."""
        return Transcript(self.messages.order_by("created_at", "id"), through=through)

    def first_message_sets_title(self, text: str) -> bool:
        """Give an untitled conversation its first message's first line as a
        title (not saved); True when it did."""
        if self.title:
            return False
        line = " ".join(text.split())
        self.title = line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"
        self.title_source = self.TitleSource.FIRST_LINE
        return True

    def rename(self, title: str) -> None:
        """The user's own title, which no model title ever replaces."""
        self.title, self.title_source = title, self.TitleSource.USER
        self.save(update_fields=["title", "title_source"])

    def take_model_title(self, title: str, model_key: str, tokens_in: int | None, tokens_out: int | None) -> bool:
        """Replace the first-line title with a model's; False (nothing saved)
        when the title is no longer the first line's (the user renamed it)."""
        fields = {
            "title": title,
            "title_source": self.TitleSource.MODEL,
            "title_model": model_key,
            "title_input_tokens": tokens_in,
            "title_output_tokens": tokens_out,
        }
        # One conditional UPDATE, so a rename that lands meanwhile wins.
        taken = Conversation.objects.filter(pk=self.pk, title_source=self.TitleSource.FIRST_LINE).update(**fields)
        if taken:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(taken)

    def review_context(self) -> dict:
        """The review page's data in three queries: messages, feedback, flags."""
        messages = list(self.messages.all())
        feedback = defaultdict(list)
        for f in Feedback.objects.filter(message__conversation=self).select_related("user"):
            feedback[f.message_id].append(f)
        flags = defaultdict(list)
        for flag in Flag.objects.filter(conversation=self).select_related("reviewer"):
            flags[flag.message_id].append(flag)
        for m in messages:
            m.review_feedback = feedback.get(m.id, [])
            m.review_flags = flags.get(m.id, [])
        return {"nodes": Transcript(messages).tree(), "conversation_flags": flags.get(None, [])}

    def pin(self, pinned: bool) -> None:
        self.pinned_at = timezone.now() if pinned else None
        self.save(update_fields=["pinned_at"])

    def archive(self, archived: bool) -> None:
        """Archived ones leave the sidebar (and their pin) but stay readable and writable by URL."""
        self.archived = archived
        if archived:
            self.pinned_at = None
        self.save(update_fields=["archived", "pinned_at"])

    @property
    def cursor(self) -> str:
        """Where the sidebar's next page starts after this conversation."""
        return f"{self.updated_at.astimezone(UTC):%Y%m%dT%H%M%S.%f}_{self.pk}"

    def touch(self, *fields: str) -> None:
        """Mark it active now, saving ``fields`` too."""
        self.updated_at = timezone.now()
        self.save(update_fields=["updated_at", *fields])


TITLE_CHARS = 60
SIDEBAR_PAGE = 50


def parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A sidebar cursor (``Conversation.cursor``) back to (updated_at, id); ValueError if it is not one."""
    moment, _sep, pk = cursor.partition("_")
    return datetime.strptime(moment, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC), uuid.UUID(pk)


def activity_group(moment: datetime, today: date) -> tuple[str, str]:
    """The sidebar group of a conversation last active at ``moment``: its key
    and heading, by the day in the server's time zone."""
    day = timezone.localdate(moment)
    age = (today - day).days
    if age <= 0:
        return "today", str(_("Today"))
    if age == 1:
        return "yesterday", str(_("Yesterday"))
    if age <= 7:
        return "week", str(_("Previous 7 days"))
    if age <= 30:
        return "month", str(_("Previous 30 days"))
    return f"{day:%Y-%m}", date_format(day, "YEAR_MONTH_FORMAT")


@dataclass
class SidebarGroup:
    key: str
    label: str
    items: list[Conversation]
    # The continuation of the previous page's last group: no heading again.
    continued: bool = False


@dataclass
class SidebarPage:
    """One page of a user's sidebar: the pinned ones (first page only), the
    rest grouped by activity, and the cursor of the next page (None at the end)."""

    pinned: list[Conversation]
    groups: list[SidebarGroup]
    next_cursor: str | None
    first: bool

    @classmethod
    def load(cls, user, before: str | None = None, size: int = SIDEBAR_PAGE, today: date | None = None) -> SidebarPage:
        """Raises ValueError for a ``before`` that is not a cursor."""
        listed = Conversation.objects.for_user(user).in_sidebar().only("id", "title", "updated_at", "pinned_at")
        today = today or timezone.localdate()
        rows = list(listed.unpinned_before(before)[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        groups: list[SidebarGroup] = []
        # The first page always has a Today heading, where live updates put a conversation.
        if before is None:
            groups.append(SidebarGroup("today", str(_("Today")), []))
        else:
            key, label = activity_group(parse_cursor(before)[0], today)
            groups.append(SidebarGroup(key, label, [], continued=True))
        for row in rows:
            key, label = activity_group(row.updated_at, today)
            if key != groups[-1].key:
                groups.append(SidebarGroup(key, label, []))
            groups[-1].items.append(row)
        pinned = list(listed.pinned()) if before is None else []
        return cls(pinned, groups, rows[-1].cursor if more else None, before is None)

    @property
    def empty(self) -> bool:
        return not self.pinned and not any(group.items for group in self.groups)


# What a reply's end writes (Message.finish, then Message.save_finished).
REPLY_FIELDS = [
    "content",
    "reasoning",
    "reasoning_ms",
    "status",
    "error",
    "error_kind",
    "error_detail",
    "finish_reason",
    "finish_reason_raw",
    "input_tokens",
    "output_tokens",
    "first_token_ms",
    "duration_ms",
    "completed_at",
    "html",
    "html_version",
]
CHECKPOINT_CHUNK = 100  # replies per checkpoint statement
# For a reply whose server reported no usage: a low estimate (English runs
# about 4 characters a token, Chinese 1 to 2).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class RunUsage:
    """Tokens one call used; ``metered`` False when its server did not report
    them all (what is missing is then estimated, or 0 for the input)."""

    input_tokens: int
    output_tokens: int
    metered: bool = True


class MessageQuerySet(models.QuerySet):
    def replies(self) -> MessageQuerySet:
        return self.filter(role=Message.Role.ASSISTANT)

    def streaming(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.STREAMING)

    def of_owner(self, user) -> MessageQuerySet:
        return self.filter(conversation__owner=user)

    def containing(self, text: str) -> MessageQuerySet:
        """Messages whose own text contains ``text`` as a substring, whatever
        the script (no word splitting: 你好 is found in 你好世界),
        case-insensitively as the database folds case.  When
        ``search_is_indexed(text)`` an index answers (SQLite: FTS5 trigram;
        PostgreSQL: pg_trgm); otherwise it is a plain scan, which callers should bound."""
        return self.filter(_contains("conversations_message", "content", text))

    def in_newest_conversations_containing(self, text: str, conversations, limit: int) -> MessageQuerySet:
        """The messages containing ``text`` (as ``containing``) in the
        ``limit`` most recently active of ``conversations`` that have one:
        ordering every match of a common word by its conversation would read
        them all, so the conversations are chosen first."""
        if not _indexed_on_sqlite(text):
            newest = conversations.with_message_containing(text).by_activity().values("pk")[:limit]
            return self.filter(conversation__in=newest).containing(text)
        try:
            scope, params = conversations.values("pk").query.sql_with_params()
        except EmptyResultSet:
            return self.none()
        # One pass over the index, materialised; then only the chosen conversations' rows.
        table = "conversations_message"
        sql = (
            f"WITH hits AS MATERIALIZED (SELECT r.key, r.conversation FROM {table}_search f "
            f"JOIN {table}_search_rows r ON r.rowid = f.rowid WHERE {table}_search MATCH %s), "
            "newest AS (SELECT c.id FROM conversations_conversation c "
            f"WHERE c.id IN ({scope}) AND c.id IN (SELECT conversation FROM hits) "
            "ORDER BY c.updated_at DESC, c.created_at DESC LIMIT %s) "
            "SELECT key FROM hits WHERE conversation IN (SELECT id FROM newest)"
        )
        return self.filter(pk__in=RawSQL(sql, [_phrase(text), *params, limit]))

    def started_since(self, moment) -> MessageQuerySet:
        return self.replies().filter(created_at__gte=moment)

    def finished(self) -> MessageQuerySet:
        return self.exclude(status=Message.Status.STREAMING)

    def checkpoint(self, texts: dict[uuid.UUID, tuple[str, str]], beats: list[uuid.UUID]) -> None:
        """Write the text so far (content, reasoning) of the replies in ``texts``
        and a fresh heartbeat for them and for ``beats``: one statement per
        ``CHECKPOINT_CHUNK`` replies, never one per reply.  Only rows still
        streaming are touched, so a reply that ended meanwhile keeps its final text."""
        now = timezone.now()
        streaming = self.streaming()
        with transaction.atomic():
            ids = list(texts)
            for start in range(0, len(ids), CHECKPOINT_CHUNK):
                chunk = ids[start : start + CHECKPOINT_CHUNK]
                streaming.filter(pk__in=chunk).update(
                    content=Case(*(When(pk=i, then=Value(texts[i][0])) for i in chunk), output_field=TextField()),
                    reasoning=Case(*(When(pk=i, then=Value(texts[i][1])) for i in chunk), output_field=TextField()),
                    heartbeat_at=now,
                )
            if beats:
                streaming.filter(pk__in=beats).update(heartbeat_at=now)

    def silent_since(self, cutoff) -> MessageQuerySet:
        """Streaming replies no worker has vouched for since ``cutoff``."""
        return self.streaming().filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff))

    def interrupt(self, limit: int = 500) -> list[Message]:
        """Mark these streaming replies interrupted (their worker is gone),
        keeping their checkpointed text; returns them."""
        ids = list(self.streaming().values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
            status=Message.Status.INTERRUPTED, completed_at=timezone.now()
        )
        interrupted = list(Message.objects.filter(pk__in=ids, status=Message.Status.INTERRUPTED))
        for message in interrupted:
            message.is_tail = True  # nothing can follow a reply while it streams
            # Nor can anyone choose from a comparison while a reply of it streams: still columns.
            message.column = bool(message.comparison)
        return interrupted


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
    # From the request to the answer's first token, for a reply that reasoned first ("Thought for N s").
    reasoning_ms = models.PositiveIntegerField(_("time thinking (ms)"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    error_kind = models.CharField(_("error kind"), max_length=32, blank=True)
    # The provider's own words about the error (redacted and trimmed by the
    # provider module: conversations.providers.base.redact), shown under ours.
    error_detail = models.TextField(_("provider's error message"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    # While streaming: when the worker writing it last said it was alive (see
    # conversations.generation's heartbeat); a stale one means that worker died.
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    # The reply's sanitised HTML as rendered when it ended (a cache: rendering
    # markdown is most of a long conversation's page time); valid only for
    # the renderer version it was made with.
    html = models.TextField(_("rendered HTML"), blank=True, editable=False)
    html_version = models.PositiveSmallIntegerField(_("renderer version"), default=0, editable=False)
    # When the user last switched to this message among its siblings: the
    # branch shown follows, at every fork, the sibling shown or created last.
    shown_at = models.DateTimeField(_("last shown"), null=True, blank=True, editable=False)

    objects = MessageQuerySet.as_manager()

    # Not columns: True for the last message of the branch shown (set by
    # Transcript and by the reply being written), which alone can be continued;
    # and its place among its siblings (set by Transcript for the branch shown).
    is_tail = False
    run_usage: RunUsage | None = None  # set by finish()
    temporary = False  # a temporary chat's message: no row, so nothing to rate, branch or continue
    sibling_number = sibling_count = 1
    previous_sibling = next_sibling = None
    # A comparison still being compared (see Transcript): on the reply the
    # branch shows, all its replies, drawn side by side; ``column`` on each.
    compared: list[Message] | None = None
    column = False

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
    def can_retry(self) -> bool:
        return self.is_assistant and self.status in (self.Status.ERROR, self.Status.STOPPED, self.Status.INTERRUPTED)

    @property
    def can_continue(self) -> bool:
        """Only the branch's last reply can be extended, and only one that was cut short."""
        cut_short = self.status in (self.Status.STOPPED, self.Status.INTERRUPTED) or (
            self.finish_reason == "length" and self.status == self.Status.COMPLETE
        )
        return self.is_assistant and self.is_tail and cut_short

    # --- a reply's lifecycle: start (or reopen), checkpoints, finish or interrupt
    @classmethod
    def start_reply(cls, conversation: Conversation, parent: Message | None, spec, *, comparison: str = "") -> Message:
        """Create the streaming row of a new reply to ``parent`` by model ``spec``;
        ``comparison`` names the comparison it is one reply of (see ``comparison``)."""
        parameters = {
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens or spec.max_tokens,
            "system_prompt": bool(conversation.system_prompt),
            "streaming": spec.streaming,
        }
        if comparison:
            parameters["comparison"] = comparison
        return cls.objects.create(
            conversation=conversation,
            parent=parent,
            role=cls.Role.ASSISTANT,
            status=cls.Status.STREAMING,
            heartbeat_at=timezone.now(),
            provider=spec.endpoint_name,
            model=spec.name,
            parameters=parameters,
        )

    @property
    def comparison(self) -> str:
        """The id of the comparison this reply is one of ("" if none): several
        models' sibling replies to one message, started together."""
        return (self.parameters or {}).get("comparison", "") if self.is_assistant else ""

    def reopen(self, spec) -> None:
        """Stream this reply again to extend it (Continue): the text grows,
        usage adds up, and ``parameters["continuations"]`` counts how often."""
        self.status = self.Status.STREAMING
        self.heartbeat_at = timezone.now()
        self.provider, self.model = spec.endpoint_name, spec.name
        self.parameters = {**self.parameters, "continuations": self.parameters.get("continuations", 0) + 1}
        self.error = self.error_kind = self.error_detail = ""
        self.html = ""  # the text will grow: the stored rendering no longer matches it
        self.save(
            update_fields=[
                *("status", "heartbeat_at", "provider", "model", "parameters"),
                *("error", "error_kind", "error_detail", "html"),
            ]
        )

    def finish(
        self,
        status: str,
        *,
        content: str,
        reasoning: str,
        error: str = "",
        error_kind: str = "",
        error_detail: str = "",
        finish_reason: str | None = None,
        finish_reason_raw: str = "",
        usage: tuple[int | None, int | None] | None = None,
        first_token_ms: int | None = None,
        duration_ms: int | None = None,
        reasoning_ms: int | None = None,
    ) -> None:
        """Assign how the reply ended and render its HTML (``save_finished`` writes it).
        ``reasoning_ms`` None keeps what an earlier part of a continued reply measured."""
        # What this run used (a Continue's own part), for the owner's ledger;
        # (None, n) when the server reported nothing (a Stop, mostly): its
        # output is then estimated from the text, so Stop is no way round a budget.
        tokens_in, tokens_out = usage if usage is not None else (None, None)
        if usage is not None or status != self.Status.ERROR or content != self.content:
            estimate = math.ceil(max(0, len(content) - len(self.content)) / CHARS_PER_TOKEN)
            self.run_usage = RunUsage(
                tokens_in or 0, estimate if tokens_out is None else tokens_out, None not in (tokens_in, tokens_out)
            )
        self.content, self.reasoning, self.status = content, reasoning, status
        if reasoning_ms is not None:
            self.reasoning_ms = reasoning_ms
        self.error, self.error_kind, self.error_detail = error, error_kind, error_detail
        if finish_reason is not None:
            self.finish_reason, self.finish_reason_raw = finish_reason, finish_reason_raw
        elif status != self.Status.COMPLETE:
            self.finish_reason = self.finish_reason_raw = ""
        if usage is not None:
            self.input_tokens = tokens_in
            if self.parameters.get("continuations") and self.output_tokens and tokens_out is not None:
                self.output_tokens += tokens_out
            else:
                self.output_tokens = tokens_out
        self.store_html()
        self.first_token_ms, self.duration_ms = first_token_ms, duration_ms
        self.completed_at = timezone.now()

    def show(self) -> None:
        """Make the branch through this message the one shown: it, and each of
        its ancestors, becomes the one shown among its siblings (a branch
        switch; a search result deep in another branch needs the ancestors)."""
        parents = dict(Message.objects.filter(conversation_id=self.conversation_id).values_list("id", "parent_id"))
        path, step = [], self.id
        while step is not None and step not in path:
            path.append(step)
            step = parents.get(step)
        self.shown_at = timezone.now()
        Message.objects.filter(pk__in=path).update(shown_at=self.shown_at)

    def save_finished(self) -> None:
        """The one write at the end of a reply, with what it used added to its
        owner's usage ledger in the same transaction (so a retried write never
        counts twice)."""
        with transaction.atomic():
            saved = Message.objects.filter(pk=self.pk).update(**{name: getattr(self, name) for name in REPLY_FIELDS})
            if self.run_usage is not None:
                # The owner as the reply knew it, so that a conversation deleted
                # while its reply was written still counts what it used.
                if Message.conversation.is_cached(self):
                    UsageDay.add(self.model_key, self.run_usage, user_id=self.conversation.owner_id)
                else:
                    UsageDay.add(self.model_key, self.run_usage, conversation_id=self.conversation_id)
        if not saved:
            raise Message.DoesNotExist(f"reply {self.pk} is gone (its conversation was deleted)")

    def content_html(self) -> SafeString:
        """The reply's text as sanitised HTML: stored when it ended, else rendered now."""
        from conversations.markdown import RENDER_VERSION, render_markdown

        if self.html and self.html_version == RENDER_VERSION and not self.is_streaming:
            return mark_safe(self.html)  # produced by render_markdown, which sanitises
        return render_markdown(self.content)

    def store_html(self) -> SafeString:
        """Render the text now and keep the HTML for ``content_html`` (saved with the row)."""
        from conversations.markdown import RENDER_VERSION, render_markdown

        rendered = render_markdown(self.content)
        self.html, self.html_version = str(rendered), RENDER_VERSION
        return rendered

    @property
    def is_waiting(self) -> bool:
        """Streaming, and nothing from the model yet (a Continue shows its text instead)."""
        return self.is_streaming and not (self.content or self.reasoning or self.parameters.get("continuations"))

    @property
    def waited_seconds(self) -> int:
        """Whole seconds since the reply was asked for (its row was created)."""
        return max(0, int((timezone.now() - self.created_at).total_seconds()))

    @property
    def thought_seconds(self) -> int | None:
        """Whole seconds spent thinking (at least 1), None if the reply did not reason first."""
        return None if self.reasoning_ms is None else max(1, round(self.reasoning_ms / 1000))

    @cached_property
    def streaming_markdown(self) -> StreamingMarkdown:
        """The text so far, split as a stream shows it (finished blocks, open
        tail); the reply being written sets its own on the bubble it draws."""
        stream = StreamingMarkdown(self.content)
        stream.feed("")
        return stream

    @property
    def finish_label(self) -> str:
        """How the reply ended, in the words people use; empty for a natural end."""
        labels = {
            "length": _("Cut off at the length limit"),
            "content_filter": _("Blocked by the provider's filter"),
            "tool_calls": _("The model asked for a tool"),
            "refusal": _("The model refused"),
        }
        return str(labels.get(self.finish_reason, ""))

    @property
    def tokens_per_second(self) -> float | None:
        """Output speed while writing; None for a reply that arrived in one piece."""
        if self.parameters.get("streaming") is False:
            return None
        if not self.output_tokens or not self.duration_ms:
            return None
        generating_ms = self.duration_ms - (self.first_token_ms or 0)
        if generating_ms <= 0:
            return None
        return self.output_tokens * 1000 / generating_ms


class Feedback(models.Model):
    """A user's thumbs up or down on one reply, with an optional comment.

    One per user and reply: rating again changes it, clearing removes it."""

    class Rating(models.TextChoices):
        UP = "up", _("Thumbs up")
        DOWN = "down", _("Thumbs down")

    message = models.ForeignKey(Message, models.CASCADE, related_name="feedback", verbose_name=_("message"))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="message_feedback", verbose_name=_("user")
    )
    rating = models.CharField(_("rating"), max_length=8, choices=Rating.choices)
    comment = models.TextField(_("comment"), blank=True, max_length=2000)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("feedback")
        verbose_name_plural = _("feedback")
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="feedback_one_per_user")]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} ({self.message_id})"

    @classmethod
    def attach(cls, messages: list[Message], user) -> list[Message]:
        """Set ``msg.user_feedback`` (a Feedback or None) on each message, in one query.

        ``feedback_known`` tells the template so; a bubble rendered without it
        (a websocket frame, which has no user) fetches its rating instead."""
        # A comparison's other columns are rated too.
        every = [*messages, *(c for m in messages if m.compared for c in m.compared if c is not m)]
        ids = [m.id for m in every if m.is_assistant]
        mine = {}
        if ids and user.is_authenticated:
            mine = {f.message_id: f for f in cls.objects.filter(message_id__in=ids, user=user)}
        for m in every:
            m.user_feedback = mine.get(m.id)
            m.feedback_known = True
        return messages


class Flag(models.Model):
    """A reviewer's note that a conversation, or one reply in it, needs attention."""

    class Reason(models.TextChoices):
        HARMFUL = "harmful", _("Harmful or unsafe")
        WRONG = "wrong", _("Wrong or low quality")
        PRIVACY = "privacy", _("Personal data")
        BUG = "bug", _("Bug in the app")
        OTHER = "other", _("Other")

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="flags", verbose_name=_("conversation"))
    message = models.ForeignKey(
        Message, models.CASCADE, null=True, blank=True, related_name="flags", verbose_name=_("reply")
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="review_flags", verbose_name=_("reviewer")
    )
    reason = models.CharField(_("reason"), max_length=16, choices=Reason.choices)
    note = models.TextField(_("note"), blank=True, max_length=2000)
    resolved = models.BooleanField(_("resolved"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("flag")
        verbose_name_plural = _("flags")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        # The conversation's id, never its title: staff without review permission see flags.
        return f"{self.get_reason_display()} ({self.conversation_id})"


class AuditLog(models.Model):
    """Who read or exported which users' conversations, and when.

    Written by the admin review views; never edited (the admin offers no add,
    change or delete)."""

    class Action(models.TextChoices):
        VIEW = "view", _("Viewed transcript")
        EXPORT = "export", _("Exported")
        SEARCH = "search", _("Searched message content")

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+", verbose_name=_("actor")
    )
    # Kept as text too, so the record survives the actor's account being deleted.
    actor_username = models.CharField(_("actor username"), max_length=150)
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    conversation_ids = models.JSONField(_("conversations"), default=list, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("audit log entry")
        verbose_name_plural = _("audit log")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.actor_username} {self.action} {self.created_at:%Y-%m-%d %H:%M}"

    @classmethod
    def record(cls, user, action: str, conversation_ids, **details) -> AuditLog:
        return cls.objects.create(
            actor=user,
            actor_username=user.get_username(),
            action=action,
            conversation_ids=[str(pk) for pk in conversation_ids],
            details=details,
        )


class UsageDay(models.Model):
    """What one user's calls to one model used on one day (the server's time
    zone): a ledger apart from the messages, so that deleting a conversation
    gives nothing back to a budget.  Replies and titles both count."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="+", verbose_name=_("user"))
    day = models.DateField(_("day"))
    model_key = models.CharField(_("model"), max_length=260)
    calls = models.PositiveIntegerField(_("calls"), default=0)
    input_tokens = models.PositiveBigIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveBigIntegerField(_("output tokens"), default=0)
    # Calls whose server reported no (or partial) usage: their tokens are a low estimate.
    unmetered = models.PositiveIntegerField(_("calls without usage"), default=0)

    class Meta:
        verbose_name = _("usage")
        verbose_name_plural = _("usage")
        constraints = [models.UniqueConstraint(fields=["user", "day", "model_key"], name="usage_user_day_model")]
        ordering = ("-day", "model_key")

    def __str__(self) -> str:
        return f"{self.day} {self.model_key}"

    @classmethod
    def add(cls, model_key: str, used: RunUsage, *, user_id=None, conversation_id=None) -> None:
        """Add one call to today's row of ``user_id`` (or of ``conversation_id``'s
        owner), creating it if need be: one statement, an upsert, so two workers
        adding at once both count.  Call it inside the transaction that records
        the call, so that a retried write counts once."""
        table, conversations = cls._meta.db_table, Conversation._meta.db_table
        if conversation_id is not None:
            key = Conversation._meta.pk.get_db_prep_value(conversation_id, connection)
            owner, source = "owner_id", f" FROM {conversations} WHERE id = %s"
        else:
            owner, source, key = "%s", " WHERE 1 = 1", user_id  # WHERE: SQLite's upsert needs one after SELECT
        values = [timezone.localdate(), model_key, used.input_tokens, used.output_tokens, 0 if used.metered else 1]
        params = [key, *values] if conversation_id is None else [*values, key]
        sql = (
            f"INSERT INTO {table} (user_id, day, model_key, calls, input_tokens, output_tokens, unmetered) "
            f"SELECT {owner}, %s, %s, 1, %s, %s, %s{source} "
            "ON CONFLICT (user_id, day, model_key) DO UPDATE SET "
            f"calls = {table}.calls + 1, "
            f"input_tokens = {table}.input_tokens + excluded.input_tokens, "
            f"output_tokens = {table}.output_tokens + excluded.output_tokens, "
            f"unmetered = {table}.unmetered + excluded.unmetered"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


class BudgetQuerySet(models.QuerySet):
    def for_user(self, user) -> BudgetQuerySet:
        """The budgets that bind ``user``: their own, their groups', everyone's."""
        return self.filter(
            Q(user=user) | Q(group__in=user.groups.all()) | Q(user__isnull=True, group__isnull=True)
        ).select_related("group")


class Budget(models.Model):
    """A daily or monthly allowance of tokens and/or cost (USD, priced from the
    model catalogue) for one user, each member of a group (or the group as a
    whole, ``shared``), or everyone.  Checked before a reply is asked for."""

    class Period(models.TextChoices):
        DAY = "day", _("Daily")
        MONTH = "month", _("Monthly")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="budgets",
        verbose_name=_("user"),
        help_text=_("Leave user and group empty for a budget every user has."),
    )
    group = models.ForeignKey(
        "auth.Group", models.CASCADE, null=True, blank=True, related_name="budgets", verbose_name=_("group")
    )
    shared = models.BooleanField(
        _("shared by the group"),
        default=False,
        help_text=_("On: the group's members draw on one allowance together. Off: each member has this budget."),
    )
    period = models.CharField(_("period"), max_length=8, choices=Period.choices, default=Period.DAY)
    max_tokens = models.PositiveBigIntegerField(
        _("token limit"), null=True, blank=True, help_text=_("Input and output tokens together.")
    )
    max_cost = models.DecimalField(
        _("cost limit (USD)"),
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text=_("Priced from the model catalogue; models without a price count nothing here."),
    )

    objects = BudgetQuerySet.as_manager()

    class Meta:
        verbose_name = _("budget")
        verbose_name_plural = _("budgets")
        constraints = [
            models.CheckConstraint(condition=Q(user__isnull=True) | Q(group__isnull=True), name="budget_user_or_group"),
            models.CheckConstraint(
                condition=Q(max_tokens__isnull=False) | Q(max_cost__isnull=False), name="budget_has_a_limit"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_period_display()} · {self.holder}"

    @property
    def holder(self) -> str:
        if self.user_id:
            return self.user.get_username()
        if self.group_id:
            return str(self.group)
        return str(_("everyone"))

    def period_bounds(self, now=None):
        """(first day, the moment it renews) of the current period, in the server's time zone."""
        today = timezone.localdate(now)
        if self.period == self.Period.DAY:
            first, renews = today, today + timedelta(days=1)
        else:
            first = today.replace(day=1)
            renews = (first + timedelta(days=32)).replace(day=1)
        return first, timezone.make_aware(datetime.combine(renews, time()))


class SignupAttemptQuerySet(models.QuerySet):
    def from_address(self, ip: str, since) -> SignupAttemptQuerySet:
        return self.filter(ip=ip, created_at__gte=since)


class SignupAttempt(models.Model):
    """An account created from a client address, counted by the sign-up
    throttle (CHAT_SIGNUPS_PER_HOUR) in the database so that every worker
    agrees.  Rows older than the window are pruned as accounts are created."""

    WINDOW = timedelta(hours=1)

    ip = models.CharField(_("address"), max_length=64)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    objects = SignupAttemptQuerySet.as_manager()

    class Meta:
        verbose_name = _("sign-up")
        verbose_name_plural = _("sign-ups")
        indexes = [models.Index(fields=["ip", "created_at"], name="signup_ip_created")]

    def __str__(self) -> str:
        return f"{self.ip} {self.created_at:%Y-%m-%d %H:%M}"

    @classmethod
    def wait_for(cls, ip: str) -> timedelta | None:
        """Inside a transaction: how long until ``ip`` may create another
        account, or None if it may now.  The address's recent rows are locked,
        so that two sign-ups from one address in two workers are counted one
        after the other (on PostgreSQL; SQLite serialises its writers)."""
        most = settings.CHAT_SIGNUPS_PER_HOUR
        if not most:
            return None
        now = timezone.now()
        recent = cls.objects.from_address(ip, now - cls.WINDOW)
        list(recent.select_for_update().values_list("pk", flat=True))
        if recent.count() < most:
            return None
        oldest = recent.order_by("created_at").values_list("created_at", flat=True)[0]
        return oldest + cls.WINDOW - now

    @classmethod
    def record(cls, ip: str) -> SignupAttempt:
        cls.objects.filter(created_at__lt=timezone.now() - cls.WINDOW).delete()
        return cls.objects.create(ip=ip)


@dataclass
class TreeNode:
    """A message's place in the whole tree, for admin review and export."""

    message: Message
    depth: int
    current: bool  # on the branch the user sees now
    superseded: bool  # a later sibling (a Retry) replaced it
    attempt: int  # 1-based position among its siblings
    attempts: int


def _shown_order(message: Message):
    """Among siblings, the one shown is the latest switched to or created."""
    when = max(message.created_at, message.shown_at) if message.shown_at else message.created_at
    return when, message.created_at, str(message.id)


def _undecided_comparison(step: list[Message], shown: Message) -> list[Message]:
    """The replies of the comparison among siblings ``step``, in creation
    (model) order, when the one that would be shown is of a comparison and was
    never switched to: nobody chose from it yet.  Else []."""
    if not shown.comparison or shown.shown_at is not None:
        return []
    return [m for m in step if m.comparison == shown.comparison]


class Transcript:
    """A conversation's messages as a tree (``parent``), and the branch shown.

    At every fork the branch shown follows the sibling the user switched to
    or that was created last, whichever happened later: a regenerated reply or
    an edited message replaces the old one on screen while both stay stored,
    and a switch back finds the subtree as it was last seen.  Iterating,
    indexing and ``len`` are over that branch, root first.

    ``through`` (a message id) picks, above that message, the forks leading
    to it instead, without storing anything (a search result's link);
    ``diverges`` is then True when that is not the branch stored as shown.

    A comparison (several models' replies to one message, started together)
    nobody has chosen from yet shows its first model's reply on the branch;
    while those replies end the branch, that reply's ``compared`` lists them
    all, to be drawn as columns (``column``).  Choosing one is a switch to it
    ("Continue with this one"); a message sent without choosing continues
    from the first.
    """

    def __init__(self, messages, through: uuid.UUID | None = None) -> None:
        self.messages: list[Message] = sorted(messages, key=lambda m: (m.created_at, str(m.id)))
        self.children: dict[uuid.UUID | None, list[Message]] = defaultdict(list)
        by_id = {}
        for message in self.messages:
            self.children[message.parent_id].append(message)
            by_id[message.id] = message
        path = set()
        while through in by_id and through not in path:
            path.add(through)
            through = by_id[through].parent_id
        self.diverges = False
        self.branch: list[Message] = []
        step = self.children.get(None)
        compared: list[Message] = []
        while step:
            shown = max(step, key=_shown_order)
            compared = _undecided_comparison(step, shown)
            if compared:
                shown = compared[0]
            forced = next((m for m in step if m.id in path), shown)
            if forced is not shown:
                compared = []
            self.diverges = self.diverges or forced is not shown
            shown = forced
            number = step.index(shown)
            shown.sibling_number, shown.sibling_count = number + 1, len(step)
            shown.previous_sibling = step[number - 1].id if number else None
            shown.next_sibling = step[number + 1].id if number + 1 < len(step) else None
            self.branch.append(shown)
            step = self.children.get(shown.id)
        if self.branch:
            self.branch[-1].is_tail = True
            if len(compared) > 1 and compared[0] is self.branch[-1]:
                for reply in compared:
                    reply.column, reply.is_tail = True, True
                self.branch[-1].compared = compared

    def __iter__(self):
        return iter(self.branch)

    def __len__(self) -> int:
        return len(self.branch)

    def __getitem__(self, index):
        return self.branch[index]

    def index_of(self, message_id: uuid.UUID) -> int | None:
        """The position of ``message_id`` in the shown branch (None if it is not on it)."""
        for index, message in enumerate(self.branch):
            if message.id == message_id:
                return index
        return None

    @property
    def last_reply(self) -> Message | None:
        """The branch's last message if it is a reply."""
        return self.branch[-1] if self.branch and self.branch[-1].is_assistant else None

    @property
    def last_replies(self) -> list[Message]:
        """The replies that end the branch: a comparison's columns, else the last reply (or none)."""
        last = self.last_reply
        if last is None:
            return []
        return list(last.compared) if last.compared else [last]

    def window_through(self, size: int, message_id: uuid.UUID | None) -> tuple[list[Message], uuid.UUID | None]:
        """As ``window`` (the newest ``size``), reaching back to ``message_id``
        and one message before it when it is further up the branch."""
        shown, before = self.window(size)
        index = self.index_of(message_id) if message_id else None
        if index is None or index >= len(self.branch) - len(shown):
            return shown, before
        start = max(0, index - 1)
        return self.branch[start:], self.branch[start].id if start > 0 else None

    def window(self, size: int, end: int | None = None) -> tuple[list[Message], uuid.UUID | None]:
        """The ``size`` messages of the branch before index ``end`` (default:
        the newest), and the id to ask for the ones before them (None when none)."""
        end = len(self.branch) if end is None else end
        start = max(0, end - size)
        return self.branch[start:end], self.branch[start].id if start > 0 else None

    def tree(self) -> list[TreeNode]:
        """Every message once, depth first in creation order; a chain keeps its
        depth, only a fork indents."""
        current = {m.id for m in self.branch}
        roots = self.children.get(None, [])
        nodes: list[TreeNode] = []
        # Iterative, so a 1,000-message chain does not hit the recursion limit.
        stack = [(m, 0, i + 1, len(roots)) for i, m in reversed(list(enumerate(roots)))]
        while stack:
            m, depth, attempt, attempts = stack.pop()
            nodes.append(TreeNode(m, depth, m.id in current, attempt < attempts, attempt, attempts))
            kids = self.children.get(m.id, [])
            child_depth = depth + 1 if len(kids) > 1 else depth
            stack.extend((k, child_depth, i + 1, len(kids)) for i, k in reversed(list(enumerate(kids))))
        return nodes


class ShareQuerySet(models.QuerySet):
    def live(self) -> ShareQuerySet:
        """Not revoked, and of an active account (a deactivated one's links stop opening, as its conversations do)."""
        return self.filter(revoked_at__isnull=True, conversation__owner__is_active=True)

    def of_owner(self, user) -> ShareQuerySet:
        return self.filter(conversation__in=Conversation.objects.for_user(user))


class Share(models.Model):
    """A read-only copy of the branch a conversation showed when it was shared,
    behind an unguessable token.  The messages are copied (role, model, text
    and sanitised HTML), not referenced: a later edit, reply or branch switch
    never reaches an existing share, and the system prompt is never part of it."""

    token = models.CharField(_("token"), max_length=64, unique=True, editable=False)
    conversation = models.ForeignKey(
        Conversation, models.CASCADE, related_name="shares", verbose_name=_("conversation")
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    messages = models.JSONField(_("messages"), default=list, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ShareQuerySet.as_manager()

    class Meta:
        verbose_name = _("share")
        verbose_name_plural = _("shares")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.conversation_id} {self.created_at:%Y-%m-%d %H:%M}"

    def get_absolute_url(self) -> str:
        return reverse("shared", args=[self.token])

    @classmethod
    def snapshot(cls, conversation: Conversation) -> Share:
        """Share the branch shown now; a reply still being written is left out (it has no final text yet)."""
        copied = [
            {
                "role": m.role,
                "content": m.content,
                "html": str(m.content_html()) if m.is_assistant else "",
                "provider": m.provider,
                "model": m.model,
                "status": m.status,
                "finish_reason": m.finish_reason,
            }
            for m in conversation.transcript()
            if m.role != Message.Role.SYSTEM and not m.is_streaming
        ]
        return cls.objects.create(
            token=secrets.token_urlsafe(24),
            conversation=conversation,
            title=conversation.display_title,
            messages=copied,
        )

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def shown_messages(self) -> list[Message]:
        """The copied messages as unsaved ``Message`` objects, for the one bubble template."""
        from conversations.markdown import RENDER_VERSION

        shown = []
        for copied in self.messages:
            message = Message(
                conversation_id=self.conversation_id,
                role=copied["role"],
                content=copied["content"],
                provider=copied.get("provider", ""),
                model=copied.get("model", ""),
                status=copied.get("status", Message.Status.COMPLETE),
                finish_reason=copied.get("finish_reason", ""),
            )
            # The HTML sanitised at share time, as rendered then (not rendered again).
            message.html, message.html_version = copied.get("html", ""), RENDER_VERSION
            shown.append(message)
        return shown


API_KEY_PREFIX = "chat_"
API_KEY_SHOWN_CHARS = len(API_KEY_PREFIX) + 8  # "chat_ab12cd34": enough to tell a user's keys apart
API_KEY_MAX_CHARS = 200  # a longer bearer token is no key of ours, and is not hashed
# A key's last use is written at most this often: a busy script does not write on every call.
API_KEY_TOUCH_EVERY = timedelta(seconds=60)


class RawApiKey(str):
    """A key as issued: a string whose repr shows only its prefix, so that an
    error report's locals, a template context or a stray ``%r`` in a log never
    print the key itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<API key {self[:API_KEY_SHOWN_CHARS]}…>"


def api_key_digest(raw: str) -> str:
    """SHA-256 hex of the whole key.  A fast hash is right: a key is 32 random
    bytes, so there is nothing to guess from its digest, unlike a password."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def for_user(self, user) -> ApiKeyQuerySet:
        """The keys ``user`` may see and revoke: their own."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)

    def active(self) -> ApiKeyQuerySet:
        """Not revoked, and of an active account (a deactivated one's keys stop working, as its log-in does)."""
        return self.filter(revoked_at__isnull=True, owner__is_active=True)

    def revoke(self) -> int:
        """Revoke those not revoked yet, in one UPDATE; how many were."""
        return self.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


class ApiKey(models.Model):
    """A user's key for the HTTP API, named by them, shown to them once.

    Only the SHA-256 ``digest`` of the key is stored, and its first characters
    (``prefix``) to tell keys apart in lists; nobody, staff included, can read
    a key back.  A key is ``chat_`` and 32 random bytes (``secrets.token_urlsafe``).

    The API's contract: ``ApiKey.authenticate(raw)`` (synchronous: wrap it in
    ``database_sync_to_async``) returns the key with its ``owner`` loaded, or
    None; requests are then made as ``key.owner``, with the same limits and
    budgets as in the browser."""

    class LimitReached(Exception):
        """The user has as many keys as CHAT_MAX_API_KEYS allows; ``message`` says so, for them."""

        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.message = message

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_keys", verbose_name=_("owner")
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, editable=False)
    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ("-created_at", "-id")
        # Staff may end a key (a leaked one, say) without being able to change or delete anything.
        permissions = [("revoke_apikey", _("Can revoke users' API keys"))]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiKey, RawApiKey]:
        """A new key for ``user``: the row (which keeps no secret) and the key
        itself, to show once and never again.  Raises ``ApiKey.LimitReached``
        when the user already has CHAT_MAX_API_KEYS keys in use (0: no limit)."""
        raw = RawApiKey(API_KEY_PREFIX + secrets.token_urlsafe(32))
        most = settings.CHAT_MAX_API_KEYS
        with transaction.atomic():
            if most:
                # The user's row locked, so that two requests at once cannot both take the last place.
                list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))
                if cls.objects.filter(owner=user, revoked_at__isnull=True).count() >= most:
                    raise cls.LimitReached(
                        ngettext(
                            "You already have %(limit)d API key, the most allowed. Revoke it to create another.",
                            "You already have %(limit)d API keys, the most allowed. Revoke one to create another.",
                            most,
                        )
                        % {"limit": most}
                    )
            key = cls.objects.create(
                owner=user, name=name, prefix=raw[:API_KEY_SHOWN_CHARS], digest=api_key_digest(raw)
            )
        return key, raw

    @classmethod
    @sensitive_variables("raw")
    def authenticate(cls, raw: str) -> ApiKey | None:
        """The active key ``raw`` is, with its ``owner`` loaded; None for a
        wrong, revoked or malformed key, or one whose owner is inactive.

        It looks the key up by its digest, never by comparing keys, so the time
        it takes tells nothing about the key.  One query; and every minute or
        so of use, one UPDATE more for ``last_used_at``, conditional, so that
        workers answering calls at once write it once."""
        if not isinstance(raw, str) or not raw.startswith(API_KEY_PREFIX) or len(raw) > API_KEY_MAX_CHARS:
            return None
        key = cls.objects.active().select_related("owner").filter(digest=api_key_digest(raw)).first()
        if key is None:
            return None
        now = timezone.now()
        stale = now - API_KEY_TOUCH_EVERY
        if key.last_used_at is None or key.last_used_at < stale:
            ApiKey.objects.filter(pk=key.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)).update(
                last_used_at=now
            )
            key.last_used_at = now
        return key

    def revoke(self) -> None:
        """The key stops working at once; its row stays, revoked, for the admin's record."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


def attachment_storage():
    """The storage attachments are kept in (settings.STORAGES["attachments"]:
    a private directory by default, never a public URL)."""
    return storages["attachments"]


def attachment_path(instance, filename: str) -> str:
    """A random name: never the user's, which is kept in ``name`` alone."""
    return f"attachments/{uuid.uuid4().hex}"


class AttachmentQuerySet(models.QuerySet):
    def for_user(self, user) -> AttachmentQuerySet:
        """The attachments ``user`` may open: their own and nobody else's."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(owner=user)

    def pending_for(self, user) -> AttachmentQuerySet:
        """``user``'s uploads not sent with a message yet: what the next message will carry."""
        return self.for_user(user).filter(message__isnull=True)

    def stale(self, age: timedelta = timedelta(days=1)) -> AttachmentQuerySet:
        """Uploads never sent, older than ``age`` (a day): abandoned, to delete
        (``purgeconversations`` does, and deleting the rows deletes their files)."""
        return self.filter(message__isnull=True, created_at__lt=timezone.now() - age)


class Attachment(models.Model):
    """A file a user attached: an image (re-encoded by us), a PDF or a text
    document with its extracted ``text``.  Uploaded first (``message`` null,
    pending), then carried by the message it is sent with.  Private to its
    owner: served by a view that checks ownership, and to reviewers through
    the admin, audited.  Deleting the row, however it is deleted (a
    conversation's or an account's cascade included), deletes the file once
    the transaction commits (``_delete_attachment_file``)."""

    class Kind(models.TextChoices):
        IMAGE = "image", _("Image")
        PDF = "pdf", _("PDF")
        TEXT = "text", _("Text document")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="attachments", verbose_name=_("owner")
    )
    message = models.ForeignKey(
        Message, models.CASCADE, null=True, blank=True, related_name="attachments", verbose_name=_("message")
    )
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    content_type = models.CharField(_("content type"), max_length=100)
    name = models.CharField(_("name"), max_length=255)
    size = models.PositiveBigIntegerField(_("size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    width = models.PositiveIntegerField(_("width"), null=True, blank=True)
    height = models.PositiveIntegerField(_("height"), null=True, blank=True)
    file = models.FileField(_("file"), storage=attachment_storage, upload_to=attachment_path, max_length=200)
    # A document's text, the context a model reads (blank for images).
    text = models.TextField(_("extracted text"), blank=True)
    no_text = models.BooleanField(_("no text found"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    objects = AttachmentQuerySet.as_manager()

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=["owner", "message"], name="attachment_owner_message")]

    def __str__(self) -> str:
        # Its id, never its name: the name is the user's.
        return str(self.pk)

    def get_absolute_url(self) -> str:
        return reverse("attachment_file", args=[self.pk])

    @property
    def is_pending(self) -> bool:
        return self.message_id is None

    @classmethod
    def store(cls, user, prepared) -> Attachment:
        """Keep ``prepared`` (``conversations.attachments.accept``'s) as a pending
        upload of ``user``; raises ``AttachmentRefused`` (nothing stored) past
        CHAT_MAX_UPLOADS_PER_MESSAGE pending files, CHAT_MAX_MESSAGE_UPLOAD_MB
        pending together, CHAT_MAX_USER_UPLOAD_MB kept in all, or a file over
        CHAT_MAX_UPLOAD_MB.  The user's row is locked while counting, so two
        uploads at once cannot both take the last place."""
        from django.core.files.base import ContentFile

        from conversations.attachments import MB, AttachmentRefused

        def refuse(message: str, mb: float) -> AttachmentRefused:
            return AttachmentRefused(message % {"name": prepared.name, "mb": f"{mb:g}"})

        with transaction.atomic():
            list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))
            if prepared.size > settings.CHAT_MAX_UPLOAD_MB * MB:
                raise refuse(
                    _("“%(name)s” is larger than %(mb)s MB, the most a file may be."), settings.CHAT_MAX_UPLOAD_MB
                )
            pending = cls.objects.filter(owner=user, message__isnull=True).aggregate(n=Count("id"), bytes=Sum("size"))
            most = settings.CHAT_MAX_UPLOADS_PER_MESSAGE
            if pending["n"] >= most:
                raise AttachmentRefused(
                    ngettext(
                        "A message can carry %(most)d file; “%(name)s” was not attached.",
                        "A message can carry %(most)d files; “%(name)s” was not attached.",
                        most,
                    )
                    % {"most": most, "name": prepared.name}
                )
            if (pending["bytes"] or 0) + prepared.size > settings.CHAT_MAX_MESSAGE_UPLOAD_MB * MB:
                raise refuse(
                    _("The files of one message may be %(mb)s MB together; “%(name)s” was not attached."),
                    settings.CHAT_MAX_MESSAGE_UPLOAD_MB,
                )
            kept = cls.objects.filter(owner=user).aggregate(bytes=Sum("size"))["bytes"] or 0
            if kept + prepared.size > settings.CHAT_MAX_USER_UPLOAD_MB * MB:
                raise refuse(
                    _("Your files here may be %(mb)s MB in all; delete some to attach “%(name)s”."),
                    settings.CHAT_MAX_USER_UPLOAD_MB,
                )
            attachment = cls(
                owner=user,
                kind=prepared.kind,
                content_type=prepared.content_type,
                name=prepared.name,
                size=prepared.size,
                sha256=prepared.sha256,
                width=prepared.width,
                height=prepared.height,
                text=prepared.text,
                no_text=prepared.no_text,
            )
            attachment.file.save("upload", ContentFile(prepared.content), save=False)
            try:
                attachment.save(force_insert=True)
            except BaseException:
                attachment.file.storage.delete(attachment.file.name)
                raise
        return attachment


@receiver(post_delete, sender=Attachment)
def _delete_attachment_file(sender, instance: Attachment, **kwargs) -> None:
    """A deleted row's file goes once the deletion commits (not before: a
    deletion rolled back keeps its file)."""
    if instance.file.name:
        storage, name = instance.file.storage, instance.file.name
        transaction.on_commit(lambda: storage.delete(name))
