"""Bringing conversations in: this app's own JSON, ChatGPT's data export and
Claude's data export, each read into the same plain shape and written in one
transaction (all or nothing).  Nothing here calls a model.

A file is never trusted: its size, shape and every field are checked, text is
stored as text (rendered through the one sanitising markdown path like any
reply), and an error names what was wrong without echoing the file.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from conversations.export import ACCOUNT_FORMAT, CONVERSATION_FORMAT, FORMAT_VERSION
from conversations.models import TITLE_CHARS, Conversation, Message

SOURCE_ROLES = {"user": Message.Role.USER, "human": Message.Role.USER, "assistant": Message.Role.ASSISTANT}
# Claude's export marks the root of a conversation's message tree with this parent.
CLAUDE_ROOT = "00000000-0000-4000-8000-000000000000"


class ImportFailed(Exception):
    """The file cannot be imported; ``message`` says why, for the user.  Nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Node:
    key: str
    parent: str | None
    role: str
    content: str
    created_at: datetime | None = None
    reasoning: str = ""
    provider: str = ""
    model: str = ""
    status: str = Message.Status.COMPLETE
    extra: dict = field(default_factory=dict)  # fields of our own format, kept as they were


@dataclass
class Imported:
    source: str
    source_id: str
    title: str
    created_at: datetime | None
    updated_at: datetime | None
    nodes: list[Node]
    current: set[str]  # keys of the branch that was shown
    system_prompt: str = ""
    settings: dict = field(default_factory=dict)


@dataclass
class Outcome:
    imported: int = 0
    skipped: int = 0


# --- reading the file ----------------------------------------------------------
def read_upload(upload) -> object:
    """The JSON (or JSON Lines) document in an uploaded file, or in the
    ``conversations.json`` of an uploaded ZIP (as ChatGPT and Claude send it)."""
    limit = settings.CHAT_IMPORT_MAX_MB * 1024 * 1024
    if upload.size > limit:
        raise ImportFailed(
            _("That file is larger than %(mb)d MB, the most allowed.") % {"mb": settings.CHAT_IMPORT_MAX_MB}
        )
    data = upload.read(limit + 1)
    if data[:4] == b"PK\x03\x04":
        data = _from_zip(data, limit)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed(_("That file is not UTF-8 text.")) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ImportFailed(_("That file is nested too deeply to be a conversation export.")) from None
    except ValueError:
        pass
    try:  # JSON Lines: one conversation per line (the admin's export)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, RecursionError):
        raise ImportFailed(_("That file is not JSON.")) from None


def _too_large() -> ImportFailed:
    return ImportFailed(
        _("That file is larger than %(mb)d MB, the most allowed.") % {"mb": settings.CHAT_IMPORT_MAX_MB}
    )


def _from_zip(data: bytes, limit: int) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        member = next((i for i in archive.infolist() if i.filename.rsplit("/", 1)[-1] == "conversations.json"), None)
    except zipfile.BadZipFile:
        raise ImportFailed(_("That ZIP file is damaged.")) from None
    if member is None:
        raise ImportFailed(_("That ZIP file has no conversations.json."))
    if member.file_size > limit:  # checked before inflating: no ZIP bomb
        raise ImportFailed(
            _("That file is larger than %(mb)d MB, the most allowed.") % {"mb": settings.CHAT_IMPORT_MAX_MB}
        )
    with archive.open(member) as stream:
        return stream.read(limit + 1)


def parse(document) -> list[Imported]:
    """The conversations in ``document``, whichever of the three formats it is."""
    if isinstance(document, dict) and document.get("format") in (CONVERSATION_FORMAT, ACCOUNT_FORMAT):
        if not isinstance(document.get("version"), int) or document["version"] > FORMAT_VERSION:
            raise ImportFailed(_("That export is from a newer version of this app."))
        records = document.get("conversations") if document["format"] == ACCOUNT_FORMAT else [document]
        return [_ours(record) for record in _listed(records)]
    records = _listed(document)
    if not records:
        raise ImportFailed(_("That file holds no conversations."))
    if all(isinstance(r, dict) and "mapping" in r for r in records):
        return [_chatgpt(record) for record in records]
    if all(isinstance(r, dict) and "chat_messages" in r for r in records):
        return [_claude(record) for record in records]
    if all(isinstance(r, dict) and isinstance(r.get("messages"), list) and "id" in r for r in records):
        return [_ours(record) for record in records]  # JSON Lines from the admin's export
    raise ImportFailed(_("That file is not an export this app knows (this app's, ChatGPT's or Claude's)."))


def _listed(value) -> list:
    if not isinstance(value, list):
        raise ImportFailed(_("That file is not an export this app knows (this app's, ChatGPT's or Claude's)."))
    if len(value) > settings.CHAT_IMPORT_MAX_CONVERSATIONS:
        raise ImportFailed(
            _("That file holds more than %(n)d conversations, the most one import takes.")
            % {"n": settings.CHAT_IMPORT_MAX_CONVERSATIONS}
        )
    return value


def _text(value, limit: int | None = None) -> str:
    text = value if isinstance(value, str) else ""
    text = text.replace("\x00", "")  # PostgreSQL refuses NUL in text
    return text[:limit] if limit else text


def _when(value) -> datetime | None:
    """An ISO 8601 string or a Unix time, as an aware datetime; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = parse_datetime(value)
        except ValueError:
            return None
        if moment is not None and timezone.is_naive(moment):
            moment = timezone.make_aware(moment, UTC)
        return moment
    return None


def _count(value) -> int | None:
    """A non-negative integer from the file, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _unsupported(kind: str) -> str:
    return _("[Content of type “%(type)s” was not imported.]") % {"type": kind[:40]}


def _ours(record) -> Imported:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ImportFailed(_("A conversation in that file has no messages list."))
    nodes, current = [], set()
    for m in record["messages"]:
        if not isinstance(m, dict) or m.get("role") not in Message.Role.values:
            raise ImportFailed(_("A message in that file has no valid role."))
        key = _text(m.get("id")) or str(uuid.uuid4())
        status = m.get("status") if m.get("status") in Message.Status.values else Message.Status.COMPLETE
        if status == Message.Status.STREAMING:
            status = Message.Status.INTERRUPTED  # nothing is writing it here
        extra = {
            name: m[name]
            for name in ("finish_reason", "finish_reason_raw", "error", "error_kind", "error_detail")
            if isinstance(m.get(name), str)
        }
        extra.update(
            {
                name: m[name]
                for name in ("input_tokens", "output_tokens", "first_token_ms", "duration_ms")
                if _count(m.get(name)) is not None
            }
        )
        if isinstance(m.get("parameters"), dict):
            extra["parameters"] = m["parameters"]
        nodes.append(
            Node(
                key=key,
                parent=_text(m.get("parent")) or None,
                role=m["role"],
                content=_text(m.get("content")),
                reasoning=_text(m.get("reasoning")),
                created_at=_when(m.get("created_at")),
                provider=_text(m.get("provider"), 50),
                model=_text(m.get("model"), 200),
                status=status,
                extra=extra,
            )
        )
        if m.get("current_branch"):
            current.add(key)
    conversation_settings = {
        "model_key": _text(record.get("model_key"), 200),
        "temperature": record["temperature"] if isinstance(record.get("temperature"), int | float) else None,
        "max_tokens": record["max_tokens"]
        if isinstance(record.get("max_tokens"), int) and record["max_tokens"] > 0
        else None,
        "archived": record.get("archived") is True,
    }
    return Imported(
        source=Conversation.Source.CHATSITE,
        source_id=_text(record.get("id"), 200),
        title=_text(record.get("title"), 200),
        created_at=_when(record.get("created_at")),
        updated_at=_when(record.get("updated_at")),
        nodes=nodes,
        current=current,
        system_prompt=_text(record.get("system_prompt")),
        settings=conversation_settings,
    )


def _chatgpt_content(message: dict) -> tuple[str, str]:
    """(text, reasoning) of one ChatGPT message; parts that are not text are named, not dropped silently."""
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    kind = _text(content.get("content_type")) or "text"
    if kind in ("text", "multimodal_text"):
        parts = []
        for part in content.get("parts") or []:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                parts.append(_unsupported(_text(part.get("content_type")) or "attachment"))
        return "\n\n".join(p for p in parts if p), ""
    if kind == "code":
        language = _text(content.get("language")).replace("unknown", "")
        return f"```{language}\n{_text(content.get('text'))}\n```", ""
    if kind == "thoughts":
        thoughts = [_text(t.get("content")) for t in content.get("thoughts") or [] if isinstance(t, dict)]
        return "", "\n\n".join(t for t in thoughts if t)
    if kind == "reasoning_recap":
        return "", ""
    return _unsupported(kind), ""


def _path_to(leaf: str | None, parent_of: dict[str, str | None]) -> set[str]:
    """The keys from ``leaf`` up to its root: the branch that was shown."""
    path, step = set(), leaf
    while step and step in parent_of and step not in path:
        path.add(step)
        step = parent_of[step]
    return path


def _chatgpt(record: dict) -> Imported:
    mapping = record.get("mapping")
    if not isinstance(mapping, dict):
        raise ImportFailed(_("A ChatGPT conversation in that file has no message tree."))
    nodes, system_prompt = [], ""
    for key, entry in mapping.items():
        if not isinstance(entry, dict):
            raise ImportFailed(_("A ChatGPT conversation in that file has a damaged message tree."))
        message = entry.get("message") if isinstance(entry.get("message"), dict) else None
        parent = _text(entry.get("parent")) or None
        role = ((message or {}).get("author") or {}).get("role") if message else None
        metadata = (message or {}).get("metadata") if isinstance((message or {}).get("metadata"), dict) else {}
        text, reasoning = _chatgpt_content(message) if message else ("", "")
        hidden = metadata.get("is_visually_hidden_from_conversation") or (
            isinstance(message, dict)
            and isinstance(message.get("content"), dict)
            and message["content"].get("content_type") == "user_editable_context"
        )
        if role == "system" and text.strip() and not hidden and not system_prompt:
            system_prompt = text
        if role not in SOURCE_ROLES or hidden or not (text.strip() or reasoning.strip()):
            # The root, system and tool messages, hidden context, empty ones:
            # not shown, but their children hang on their parent.
            nodes.append(Node(key=key, parent=parent, role="", content=""))
            continue
        nodes.append(
            Node(
                key=key,
                parent=parent,
                role=SOURCE_ROLES[role],
                content=text,
                reasoning=reasoning,
                created_at=_when(message.get("create_time")),
                provider="chatgpt" if SOURCE_ROLES[role] == Message.Role.ASSISTANT else "",
                model=_text(metadata.get("model_slug"), 200) if SOURCE_ROLES[role] == Message.Role.ASSISTANT else "",
            )
        )
    current = _path_to(_text(record.get("current_node")), {n.key: n.parent for n in nodes})
    return Imported(
        source=Conversation.Source.CHATGPT,
        source_id=_text(record.get("conversation_id") or record.get("id"), 200),
        title=_text(record.get("title"), 200),
        created_at=_when(record.get("create_time")),
        updated_at=_when(record.get("update_time")),
        nodes=nodes,
        current=current,
        system_prompt=system_prompt,
    )


def _claude(record: dict) -> Imported:
    messages = record.get("chat_messages")
    if not isinstance(messages, list):
        raise ImportFailed(_("A Claude conversation in that file has no messages list."))
    nodes, previous = [], None
    for m in messages:
        if not isinstance(m, dict) or m.get("sender") not in SOURCE_ROLES:
            raise ImportFailed(_("A message in that file has no valid sender."))
        key = _text(m.get("uuid")) or str(uuid.uuid4())
        texts, thinking = [], []
        for block in m.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                texts.append(_text(block.get("text")))
            elif block.get("type") == "thinking":
                thinking.append(_text(block.get("thinking")))
            else:
                texts.append(_unsupported(_text(block.get("type")) or "block"))
        text = "\n\n".join(t for t in texts if t) or _text(m.get("text"))
        for attachment in m.get("attachments") or []:
            if isinstance(attachment, dict) and _text(attachment.get("extracted_content")):
                name = _text(attachment.get("file_name"), 200) or _("attachment")
                text = f"{text}\n\n" if text else ""
                text += f"**{name}**\n\n```\n{_text(attachment['extracted_content'])}\n```"
        parent = _text(m.get("parent_message_uuid")) if "parent_message_uuid" in m else previous
        role = SOURCE_ROLES[m["sender"]]
        nodes.append(
            Node(
                key=key,
                parent=None if parent in (None, "", CLAUDE_ROOT) else parent,
                role=role if (text.strip() or thinking) else "",
                content=text,
                reasoning="\n\n".join(thinking),
                created_at=_when(m.get("created_at")),
                provider="claude" if role == Message.Role.ASSISTANT else "",
                model=_text(record.get("model"), 200) or "claude" if role == Message.Role.ASSISTANT else "",
            )
        )
        previous = key
    leaf = _text(record.get("current_leaf_message_uuid")) or previous
    current = _path_to(leaf, {n.key: n.parent for n in nodes})
    return Imported(
        source=Conversation.Source.CLAUDE,
        source_id=_text(record.get("uuid"), 200),
        title=_text(record.get("name"), 200),
        created_at=_when(record.get("created_at")),
        updated_at=_when(record.get("updated_at")),
        nodes=nodes,
        current=current,
    )


# --- writing it ------------------------------------------------------------------
def import_file(user, upload) -> Outcome:
    """Read ``upload`` and import its conversations for ``user``, all in one
    transaction: ImportFailed (nothing written) if any of it cannot be read.
    A conversation imported before (same source and id) is skipped."""
    conversations = parse(read_upload(upload))
    outcome = Outcome()
    with transaction.atomic():
        for imported in conversations:
            if _already_here(user, imported):
                outcome.skipped += 1
            else:
                _write(user, imported)
                outcome.imported += 1
    return outcome


def _already_here(user, imported: Imported) -> bool:
    if not imported.source_id:
        return False
    mine = Conversation.objects.filter(owner=user)
    if mine.filter(imported_from=imported.source, source_id=imported.source_id).exists():
        return True
    # This app's own export of a conversation that is still here.
    return imported.source == Conversation.Source.CHATSITE and mine.filter(pk=_uuid(imported.source_id)).exists()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _write(user, imported: Imported) -> Conversation:
    now = timezone.now()
    created = imported.created_at or now
    title = " ".join(imported.title.split()) or next(
        (" ".join(n.content.split())[:TITLE_CHARS] for n in imported.nodes if n.role == Message.Role.USER), ""
    )
    conversation = Conversation.objects.create(
        owner=user,
        title=title[:200],
        title_source=Conversation.TitleSource.USER if title else Conversation.TitleSource.NONE,
        system_prompt=imported.system_prompt,
        created_at=created,
        updated_at=imported.updated_at or created,
        imported_from=imported.source,
        source_id=imported.source_id,
        **imported.settings,
    )
    kept = {n.key: n for n in imported.nodes}
    ids: dict[str, uuid.UUID] = {}
    rows = []
    for node in _parents_first(imported.nodes):
        if not node.role:
            continue
        parent = node.parent
        while parent and parent in kept and not kept[parent].role:  # skipped: hang on its parent
            parent = kept[parent].parent
        ids[node.key] = uuid.uuid4()
        message = Message(
            id=ids[node.key],
            conversation=conversation,
            parent_id=ids.get(parent),
            role=node.role,
            content=node.content,
            reasoning=node.reasoning,
            status=node.status,
            provider=node.provider,
            model=node.model,
            created_at=node.created_at or created,
            completed_at=(node.created_at or created) if node.role == Message.Role.ASSISTANT else None,
            shown_at=now if node.key in imported.current else None,
            **node.extra,
        )
        if message.is_assistant:
            message.parameters = {**message.parameters, "imported": imported.source}
            message.store_html()  # rendered and sanitised like any reply
        rows.append(message)
    Message.objects.bulk_create(rows, batch_size=500)
    return conversation


def _parents_first(nodes: list[Node]) -> list[Node]:
    """The nodes ordered so that every parent comes before its children
    (a cycle or a missing parent makes a node a root rather than lose it)."""
    by_key = {n.key: n for n in nodes}
    ordered, placed = [], set()

    def depth_chain(node: Node) -> list[Node]:
        chain, seen = [], set()
        while node is not None and node.key not in placed and node.key not in seen:
            seen.add(node.key)
            chain.append(node)
            node = by_key.get(node.parent) if node.parent else None
        if node is not None and node.key in seen:  # a cycle: cut it here
            chain[-1].parent = None
        return reversed(chain)

    for node in nodes:
        for item in depth_chain(node):
            if item.key not in placed:
                placed.add(item.key)
                ordered.append(item)
    return ordered
