"""Temporary chats: conversations that live in one worker's memory and are
never written to the database (no messages, no title, no usage rows), so they
never appear in the sidebar, search, exports or the admin.

This module is to a temporary chat what ``models`` is to a conversation: its
state and rules.  A chat ends ``CHAT_TEMPORARY_GRACE_SECONDS`` after its last
tab closed (long enough for a reload to rejoin it), or when nothing happened
in it for ``CHAT_TEMPORARY_IDLE_MINUTES``; its reply, if one is being written,
is stopped.  With several workers a chat is tied to the worker that made it.

What its replies used is kept here, in memory, so that the per-user limits and
budgets still count it in this process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings
from django.utils import timezone

from conversations import frames, generation
from conversations.models import Message, RunUsage, Transcript


@dataclass
class TemporaryChat:
    owner_id: int
    model_key: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    messages: list[Message] = field(default_factory=list)
    created_at: object = field(default_factory=timezone.now)
    sockets: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once it is forgotten
    _expiry: asyncio.TimerHandle | None = None

    # Conversation-like names, for the templates that draw a transcript.
    title = ""
    system_prompt = ""
    temperature = None
    max_tokens = None

    @property
    def display_title(self) -> str:
        from django.utils.translation import gettext

        return gettext("Temporary chat")

    def transcript(self) -> Transcript:
        return Transcript(self.messages)

    def add(self, message: Message) -> Message:
        """Keep ``message`` (unsaved: it never will be) in this chat."""
        message.conversation_id = self.id
        message.temporary = True
        self.messages.append(message)
        self.touch()
        return message

    def touch(self) -> None:
        """Something happened: the idle countdown starts again."""
        self._schedule(settings.CHAT_TEMPORARY_IDLE_MINUTES * 60)

    def _schedule(self, seconds: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # made outside a loop (a sync view): the first socket schedules it
        self._expiry = loop.call_later(seconds, end, self.id)


@dataclass
class _Spent:
    owner_id: int
    day: date
    model_key: str
    used: RunUsage


_chats: dict[uuid.UUID, TemporaryChat] = {}
_told: set[asyncio.Task] = set()  # strong references until sent
_spent: list[_Spent] = []  # this process's temporary replies' usage, for limits and budgets
_started: list[tuple[int, float]] = []  # (owner, time.time()) of each temporary reply


def create(user, model_key: str) -> TemporaryChat:
    chat = TemporaryChat(owner_id=user.pk, model_key=model_key)
    _chats[chat.id] = chat
    chat.touch()
    return chat


def get(chat_id, user) -> TemporaryChat | None:
    """The chat if it is ``user``'s and lives in this process; None otherwise
    (another user's chat is indistinguishable from one that ended)."""
    chat = _chats.get(chat_id)
    if chat is None or not user.is_authenticated or chat.owner_id != user.pk:
        return None
    return chat


def opened(chat: TemporaryChat) -> None:
    chat.sockets += 1
    chat.touch()


def closed(chat: TemporaryChat) -> None:
    chat.sockets = max(0, chat.sockets - 1)
    if not chat.sockets and chat.id in _chats:
        chat._schedule(settings.CHAT_TEMPORARY_GRACE_SECONDS)


def end(chat_id) -> None:
    """Forget the chat, stopping its reply if one is being written."""
    chat = _chats.pop(chat_id, None)
    if chat is None:
        return
    if chat._expiry is not None:
        chat._expiry.cancel()
    chat.ended.set()
    generation.stop(chat.id)
    try:
        task = asyncio.get_running_loop().create_task(frames.announce_temporary_ended(chat.id))
    except RuntimeError:
        return  # no loop, so no socket to tell
    _told.add(task)
    task.add_done_callback(_told.discard)


def reply_started(owner_id: int) -> None:
    now = time.time()
    _started[:] = [(o, t) for o, t in _started if now - t < 60]
    _started.append((owner_id, now))


def reply_used(chat: TemporaryChat, message: Message) -> None:
    """Keep what a temporary reply used (its ``run_usage``) for the budgets."""
    run_used(chat.owner_id, message)


def run_used(owner_id: int, message: Message) -> None:
    """Keep what a reply with no row (a temporary chat's, a stateless run's) used, for the budgets."""
    if message.run_usage is not None:
        _spent.append(_Spent(owner_id, timezone.localdate(), message.model_key, message.run_usage))
        today = timezone.localdate()
        # Nothing older than a month counts towards any budget.
        _spent[:] = [s for s in _spent if (today - s.day).days <= 31]


def in_flight(owner_id: int) -> int:
    """Replies of ``owner_id`` with no row (temporary chats', stateless runs')
    being written in this process."""
    chats = sum(
        1 for chat in list(_chats.values()) if chat.owner_id == owner_id and generation.get_active(chat.id) is not None
    )
    stateless = sum(
        1
        for running in generation.running()
        if running.owner_id == owner_id and running.conversation_id == running.message.id
    )
    return chats + stateless


def started_since(owner_id: int, moment: float) -> list[float]:
    """When this process started ``owner_id``'s temporary replies since ``moment`` (time.time())."""
    return [t for o, t in list(_started) if o == owner_id and t >= moment]


def spent(owner_ids: set[int], since: date) -> list[tuple[str, RunUsage]]:
    """(model key, usage) of the temporary replies of ``owner_ids`` since ``since``."""
    return [(s.model_key, s.used) for s in list(_spent) if s.owner_id in owner_ids and s.day >= since]


def has_spent() -> bool:
    return bool(_spent)


def chats() -> list[TemporaryChat]:
    return list(_chats.values())
