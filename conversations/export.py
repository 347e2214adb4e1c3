"""Conversations as JSON Lines (every branch, with provenance, ratings and flags), streamed in
batches, for the admin; and a user's own download of everything they keep here, as one JSON document."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.db.models import Prefetch
from django.utils import timezone

from conversations.models import Attachment, Conversation, Feedback, Transcript

MESSAGE_FIELDS = (
    "role",
    "content",
    "reasoning",
    "status",
    "provider",
    "model",
    "parameters",
    "finish_reason",
    "finish_reason_raw",
    "input_tokens",
    "output_tokens",
    "first_token_ms",
    "duration_ms",
    "error",
    "error_kind",
    "error_detail",
)
ATTACHMENT_FIELDS = ("name", "kind", "content_type", "size", "sha256")
EXPORT_BATCH = 100
# The documented formats (docs/export-format.md); an importer reads any version up to its own.
CONVERSATION_FORMAT = "chatsite.conversation"
ACCOUNT_FORMAT = "chatsite.account"
FORMAT_VERSION = 1


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def conversation_record(conversation: Conversation) -> dict:
    """One conversation with every message (all branches) and its metadata.
    Expects messages, their feedback and the flags prefetched."""
    nodes = Transcript(conversation.messages.all()).tree()
    return {
        "id": str(conversation.id),
        "owner": conversation.owner.get_username(),
        "title": conversation.title,
        "model_key": conversation.model_key,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "archived": conversation.archived,
        "imported_from": conversation.imported_from,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "flags": [
            {
                "message": str(f.message_id) if f.message_id else None,
                "reason": f.reason,
                "note": f.note,
                "resolved": f.resolved,
                "created_at": _iso(f.created_at),
            }
            for f in conversation.flags.all()
        ],
        "messages": [
            {
                "id": str(n.message.id),
                "parent": str(n.message.parent_id) if n.message.parent_id else None,
                "current_branch": n.current,
                "superseded": n.superseded,
                **{name: getattr(n.message, name) for name in MESSAGE_FIELDS},
                "created_at": _iso(n.message.created_at),
                "completed_at": _iso(n.message.completed_at),
                "feedback": [
                    {"rating": f.rating, "comment": f.comment, "updated_at": _iso(f.updated_at)}
                    for f in n.message.feedback.all()
                ],
                # Named, not embedded: the files themselves are not in a JSON export.
                "attachments": [
                    {name: getattr(a, name) for name in ATTACHMENT_FIELDS} for a in n.message.attachments.all()
                ],
            }
            for n in nodes
        ],
    }


def _records(ids) -> list[dict]:
    conversations = for_owner(Conversation.objects.filter(pk__in=ids)).order_by("created_at", "id")
    return [conversation_record(c) for c in conversations]


def _export_batch(ids) -> list[str]:
    return [json.dumps(record, ensure_ascii=False) + "\n" for record in _records(ids)]


def export_lines(conversation_ids):
    """JSON Lines, one conversation per line, fetched in batches so that a
    large export neither holds everything in memory nor runs a query per row."""
    ids = list(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        yield from _export_batch(ids[start : start + EXPORT_BATCH])


async def aexport_lines(conversation_ids):
    """The same lines for an ASGI server, which streams async iterators only
    (it would read a sync one whole, with a warning)."""
    ids = list(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        for line in await sync_to_async(_export_batch)(ids[start : start + EXPORT_BATCH]):
            yield line


# --- a user's own download -----------------------------------------------------


def _account_head(user) -> tuple[str, list]:
    """The document's opening, with the account (never its password hash),
    and the ids of the user's conversations, oldest first."""
    account = {
        "username": user.get_username(),
        "email": user.email,
        "date_joined": _iso(user.date_joined),
        "last_login": _iso(user.last_login),
    }
    head = {
        "format": ACCOUNT_FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": _iso(timezone.now()),
        "account": account,
    }
    ids = list(Conversation.objects.filter(owner=user).order_by("created_at", "id").values_list("pk", flat=True))
    return json.dumps(head, ensure_ascii=False)[:-1] + ', "conversations": [\n', ids


def own_record(conversation: Conversation) -> dict:
    """One conversation as its owner may take it out: every branch with
    provenance, without the reviewers' flags and notes (the staff's, not
    theirs).  Expects what ``conversation_record`` expects prefetched."""
    record = conversation_record(conversation)
    del record["flags"], record["owner"]
    return record


def conversation_document(conversation: Conversation) -> dict:
    """``own_record`` as a file of its own, with the format and its version."""
    return {
        "format": CONVERSATION_FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": _iso(timezone.now()),
        **own_record(conversation),
    }


def for_owner(queryset):
    """What ``own_record`` and ``conversation_record`` need, prefetched."""
    return queryset.select_related("owner").prefetch_related(
        "messages__feedback",
        # Their names and digests only, not their (long) extracted text.
        Prefetch("messages__attachments", Attachment.objects.only("id", "message_id", *ATTACHMENT_FIELDS)),
        "flags",
    )


def _account_batch(ids, first: bool) -> str:
    return ("" if first else ",\n") + ",\n".join(line.rstrip("\n") for line in _own_batch(ids))


def _account_tail(user) -> str:
    """The user's ratings, wherever they gave them, and the document's end."""
    feedback = [
        {
            "conversation": str(f.message.conversation_id),
            "message": str(f.message_id),
            "rating": f.rating,
            "comment": f.comment,
            "created_at": _iso(f.created_at),
            "updated_at": _iso(f.updated_at),
        }
        for f in Feedback.objects.filter(user=user).select_related("message").order_by("created_at", "id")
    ]
    return '\n], "feedback": ' + json.dumps(feedback, ensure_ascii=False) + "}\n"


def account_export(user):
    """Everything ``user`` keeps here as one JSON document, in pieces: the
    account, every conversation with every message of every branch (fetched
    EXPORT_BATCH conversations at a time, as the admin's export), and their
    feedback."""
    head, ids = _account_head(user)
    yield head
    for start in range(0, len(ids), EXPORT_BATCH):
        yield _account_batch(ids[start : start + EXPORT_BATCH], start == 0)
    yield _account_tail(user)


async def aaccount_export(user):
    """The same pieces for an ASGI server."""
    head, ids = await sync_to_async(_account_head)(user)
    yield head
    for start in range(0, len(ids), EXPORT_BATCH):
        yield await sync_to_async(_account_batch)(ids[start : start + EXPORT_BATCH], start == 0)
    yield await sync_to_async(_account_tail)(user)


def _own_batch(ids) -> list[str]:
    conversations = for_owner(Conversation.objects.filter(pk__in=ids)).order_by("created_at", "id")
    return [json.dumps(own_record(c), ensure_ascii=False) + "\n" for c in conversations]


def own_lines(conversation_ids):
    """A user's own conversations as JSON Lines (``own_record`` per line), in batches."""
    ids = list(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        yield from _own_batch(ids[start : start + EXPORT_BATCH])


async def aown_lines(conversation_ids):
    """The same lines for an ASGI server."""
    ids = await sync_to_async(list)(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        for line in await sync_to_async(_own_batch)(ids[start : start + EXPORT_BATCH]):
            yield line
