"""Every write that must also reach a conversation's open tabs (as Zulip keeps
its ``actions``): start, retry, continue, compare, stop, and join.

Each saves what the user asked for *before* the model is called, broadcasts
the new bubbles through ``frames`` and hands the reply to a ``Generation``.
The views (no JavaScript) and the consumer (websocket) both call these, so the
two paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from asgiref.sync import async_to_sync
from channels.db import aclose_old_connections, database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations import db, durability, frames, generation, providers, temporary, usage
from conversations.generation import Generation
from conversations.models import CHARS_PER_TOKEN, TITLE_CHARS, Conversation, Feedback, Message, RunUsage, UsageDay
from conversations.providers.base import ChatMessage, ChatRequest, ModelSpec, ProviderError, TextDelta, Usage

logger = logging.getLogger(__name__)


class ReplyRefused(Exception):
    """A request the user must change before it can go ahead; ``message`` says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Turn:
    """What the database gave back when a reply was set up."""

    conversation: Conversation
    reply: Message
    history: list[Message]  # what the model is shown, oldest first
    new_html: str = ""  # bubbles to append to the transcript (a new message only)
    moves_nav: bool = False  # a new message: the sidebar entry moves to the top in every tab of the owner's
    settled: list[Message] = field(default_factory=list)  # a dead worker's replies, now interrupted
    compared: list[Message] = field(default_factory=list)  # a comparison's replies, ``reply`` the first


def _lock_idle(
    conversation_id: UUID, user, *, need_model: bool = True
) -> tuple[Conversation, ModelSpec, list[Message]]:
    """Inside a transaction: the conversation, row-locked, with no reply being
    written in any worker, the model it uses, and the dead replies just
    settled.  Holding the row lock, two sends cannot both pass.  Raises
    ReplyRefused or Conversation.DoesNotExist."""
    conversation = Conversation.objects.for_user(user).select_for_update().get(pk=conversation_id)
    busy = _("A reply is still being written. Wait for it to finish, or stop it.")
    running = generation.get_active(conversation.id)
    if running is not None:
        _refuse_if_unsaved(conversation.id)
        raise ReplyRefused(busy)
    settled = durability.settle(conversation.id)
    if conversation.messages.streaming().exists():
        raise ReplyRefused(busy)
    spec = providers.get_model(conversation.model_key)
    if spec is None and need_model:
        if conversation.model_key:
            # Its endpoint was removed or renamed, or lost its key: the conversation stays readable.
            raise ReplyRefused(
                _("This model (%(model)s) is no longer offered here. Choose another model for this conversation.")
                % {"model": conversation.model_key}
            )
        raise ReplyRefused(_("Choose a model for this conversation first."))
    if need_model:
        _check_limits(user)
    return conversation, spec, settled


def _check_limits(user, count: int = 1) -> None:
    """Inside the turn's transaction: ReplyRefused, saying when to try again,
    if ``user`` already has the most replies allowed in flight or in the last
    minute, or would have more with the ``count`` replies this turn starts (a
    comparison's or a batch's, one per model: one too many for a limit is
    refused up front, whole).  The user's row is locked, so two sends of one
    user in two conversations (or two workers) are counted one after the other."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    most = settings.CHAT_MAX_CONCURRENT_REPLIES
    if most:
        if count > most:
            raise ReplyRefused(
                ngettext(
                    "That is %(replies)d replies at once (one per model), but you may have only "
                    "%(count)d reply being written. Choose fewer models.",
                    "That is %(replies)d replies at once (one per model), but you may have only "
                    "%(count)d replies being written. Choose fewer models.",
                    most,
                )
                % {"replies": count, "count": most}
            )
        durability.settle_owner(user)
        in_flight = Message.objects.of_owner(user).streaming().count() + temporary.in_flight(user.pk)
        if count > 1 and in_flight and in_flight + count > most:
            raise ReplyRefused(
                ngettext(
                    "You already have %(count)d reply being written: %(replies)d more at once would go past "
                    "the %(most)d allowed. Send again when it has finished.",
                    "You already have %(count)d replies being written: %(replies)d more at once would go past "
                    "the %(most)d allowed. Send again when they have finished.",
                    in_flight,
                )
                % {"count": in_flight, "replies": count, "most": most}
            )
        if in_flight + count > most:
            raise ReplyRefused(
                ngettext(
                    "You already have %(count)d reply being written, the most allowed. "
                    "Send again when it has finished.",
                    "You already have %(count)d replies being written, the most allowed. "
                    "Send again when one has finished.",
                    most,
                )
                % {"count": most}
            )
    per_minute = settings.CHAT_REPLIES_PER_MINUTE
    if per_minute:
        now = timezone.now()
        recent = Message.objects.of_owner(user).started_since(now - timedelta(minutes=1))
        # Temporary chats' replies have no rows: this process remembers when they started.
        starts = [
            *recent.values_list("created_at", flat=True),
            *(datetime.fromtimestamp(t, tz=UTC) for t in temporary.started_since(user.pk, time.time() - 60)),
        ]
        if count > per_minute:
            raise ReplyRefused(
                ngettext(
                    "That is %(replies)d replies at once (one per model), more than the %(count)d reply "
                    "allowed in a minute. Choose fewer models.",
                    "That is %(replies)d replies at once (one per model), more than the %(count)d replies "
                    "allowed in a minute. Choose fewer models.",
                    per_minute,
                )
                % {"replies": count, "count": per_minute}
            )
        if len(starts) + count > per_minute:
            # The oldest start that must drop out of the minute for these replies to fit.
            oldest = sorted(starts)[len(starts) + count - per_minute - 1]
            wait = max(1, math.ceil((oldest + timedelta(minutes=1) - now).total_seconds()))
            raise ReplyRefused(
                ngettext(
                    "That is %(count)d replies in the last minute, the most allowed. Try again in %(seconds)d second.",
                    "That is %(count)d replies in the last minute, the most allowed. Try again in %(seconds)d seconds.",
                    wait,
                )
                % {"count": per_minute, "seconds": wait}
            )
    refusal = usage.budget_refusal(user)
    if refusal:
        raise ReplyRefused(refusal)


def _refuse_if_unsaved(conversation_id: UUID) -> None:
    if any(running.unsaved for running in generation.get_all(conversation_id)):
        raise ReplyRefused(_("The last reply is not saved yet. Try again in a moment."))


@contextlib.contextmanager
def _turn_transaction(conversation_id: UUID, refusal: str = ""):
    """The transaction a turn of ``conversation_id`` is set up in.  It waits
    at most CHAT_SEND_LOCK_SECONDS for the database's write lock; a lock not
    had in time (another writer held it) rolls everything back and is a
    ReplyRefused saying ``refusal``, so the user tries again instead of losing
    the message.  A reply whose final write is being retried (the lock is
    likely held) is refused at once, without waiting for the lock."""
    _refuse_if_unsaved(conversation_id)
    try:
        with db.bounded_atomic(settings.CHAT_SEND_LOCK_SECONDS):
            yield
    except OperationalError as exc:
        if not db.is_busy(exc):
            raise
        logger.warning("a turn was refused: the database stayed locked for %s s", settings.CHAT_SEND_LOCK_SECONDS)
        raise ReplyRefused(refusal or _("The server is busy. Try again.")) from exc


def _busy_not_sent() -> str:
    return _("The server is busy and your message was not sent. Try again.")


def _ask(conversation: Conversation, text: str) -> tuple[list[Message], Message]:
    """Inside a turn: the shown branch so far, and the user's message ``text`` added after it."""
    history = list(conversation.transcript())
    parent = history[-1] if history else None
    return history, Message.objects.create(
        conversation=conversation, parent=parent, role=Message.Role.USER, content=text
    )


@db.turn
def _new_turn(conversation_id: UUID, user, text: str, new_model: str | None = None) -> _Turn:
    """``new_model``: create the conversation first, with that model."""
    with _turn_transaction(conversation_id, _busy_not_sent()):
        if new_model is not None:
            Conversation.objects.create(pk=conversation_id, owner=user, model_key=new_model)
        conversation, spec, settled = _lock_idle(conversation_id, user)
        history, question = _ask(conversation, text)
        reply = Message.start_reply(conversation, question, spec)
        titled = conversation.first_message_sets_title(text)
        conversation.touch(*(["title", "title_source"] if titled else []))
    if history and history[-1].compared:
        # Sent without choosing from a comparison: its columns give way to the first model's reply.
        shown = frames.transcript(conversation, conversation.transcript())
    else:
        shown = frames.new_bubbles(conversation, question, reply)
    return _Turn(conversation, reply, [*history, question], shown, moves_nav=True, settled=settled)


@db.turn
def _comparison_turn(conversation_id: UUID, user, text: str, model_keys: list[str]) -> _Turn:
    """One turn, however many models: the user's message and one streaming
    reply per model, siblings marked as one comparison, the first model's first."""
    with _turn_transaction(conversation_id, _busy_not_sent()):
        conversation, _spec, settled = _lock_idle(conversation_id, user, need_model=False)
        specs = [_offered(key) for key in model_keys]
        _check_limits(user, len(specs))
        history, question = _ask(conversation, text)
        comparison = str(uuid4())
        replies = [Message.start_reply(conversation, question, spec, comparison=comparison) for spec in specs]
        titled = conversation.first_message_sets_title(text)
        conversation.touch(*(["title", "title_source"] if titled else []))
    for reply in replies:
        reply.column = True  # its bubbles, final one included, are drawn as a column
    if history and history[-1].compared:
        shown = frames.transcript(conversation, conversation.transcript())
    else:
        shown = frames.new_comparison(conversation, question, replies)
    return _Turn(
        conversation, replies[0], [*history, question], shown, moves_nav=True, settled=settled, compared=replies
    )


@db.turn
def _recorded_turn(user, model_key: str, history: list[ChatMessage], system: str) -> _Turn:
    """A new conversation holding ``history`` (its last message the user's
    question) and the streaming reply to it, in one transaction."""
    with _turn_transaction(uuid4(), _busy_not_sent()):
        conversation = Conversation.objects.create(owner=user, model_key=model_key, system_prompt=system)
        conversation, spec, settled = _lock_idle(conversation.id, user)
        parent = None
        for said in history:
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=said.role,
                content=said.content,
                status=Message.Status.COMPLETE,
            )
        reply = Message.start_reply(conversation, parent, spec)
        titled = conversation.first_message_sets_title(next(m.content for m in history if m.role == "user"))
        conversation.touch(*(["title", "title_source"] if titled else []))
        shown = list(conversation.transcript())[:-1]
    return _Turn(conversation, reply, shown, moves_nav=True, settled=settled)


async def start_recorded(user, model_key: str, history: list[ChatMessage], system: str = "", **run) -> Generation:
    """A new conversation of ``user``'s, recorded from a script's call (the
    OpenAI-compatible API with ``store``): ``history`` (user and assistant
    messages, the last one the user's) is saved as its transcript and the
    reply to it is started.  ReplyRefused (nothing saved) as for ``start_reply``."""
    await aclose_old_connections()
    return await _launch(await _recorded_turn(user, model_key, history, system), **run)


def _offered(model_key: str) -> ModelSpec:
    spec = providers.get_model(model_key)
    if spec is None:
        raise ReplyRefused(_("That model is not offered here."))
    return spec


@db.turn
def _regenerate_turn(conversation_id: UUID, user, message_id: UUID, model_key: str) -> _Turn:
    with _turn_transaction(conversation_id):
        conversation, spec, settled = _lock_idle(conversation_id, user)
        if model_key:
            spec = _offered(model_key)
        branch = conversation.transcript()
        index = branch.index_of(message_id)
        if index is None or not branch[index].is_assistant:
            raise ReplyRefused(_("That reply can no longer be regenerated."))
        # A sibling of the old reply: the branch now follows the new one, and
        # the old one (with anything after it) stays stored on its branch.
        Message.start_reply(conversation, branch[index].parent, spec)
        conversation.touch()
    now = conversation.transcript()
    reply = now[-1]  # the new reply, knowing its place among its siblings
    # The last reply's bubble is replaced in place; from further up, the rest
    # of the transcript changes too.
    shown = "" if index == len(branch) - 1 else frames.transcript(conversation, now)
    return _Turn(conversation, reply, branch[:index], shown, settled=settled)


@db.turn
def _edit_turn(conversation_id: UUID, user, message_id: UUID, text: str) -> _Turn:
    with _turn_transaction(conversation_id, _busy_not_sent()):
        conversation, spec, settled = _lock_idle(conversation_id, user)
        branch = conversation.transcript()
        index = branch.index_of(message_id)
        if index is None or branch[index].role != Message.Role.USER:
            raise ReplyRefused(_("That message can no longer be edited."))
        old = branch[index]
        question = Message.objects.create(conversation=conversation, parent=old.parent, role=old.role, content=text)
        reply = Message.start_reply(conversation, question, spec)
        conversation.touch()
    shown = frames.transcript(conversation, conversation.transcript())
    return _Turn(conversation, reply, [*branch[:index], question], shown, settled=settled)


@db.turn
def _switch(conversation_id: UUID, user, message_id: UUID) -> str:
    with _turn_transaction(conversation_id):
        conversation, _spec, _settled = _lock_idle(conversation_id, user, need_model=False)
        message = conversation.messages.filter(pk=message_id).first()
        if message is None:
            raise ReplyRefused(_("That message was not found."))
        message.show()
        conversation.touch()
    return frames.transcript(conversation, conversation.transcript())


@db.turn
def _continue_turn(conversation_id: UUID, user, message_id: UUID) -> _Turn:
    with _turn_transaction(conversation_id):
        conversation, spec, settled = _lock_idle(conversation_id, user)
        branch = conversation.transcript()
        reply = branch.last_reply
        if reply is None or reply.id != message_id:
            raise ReplyRefused(_("Only the last reply can be continued."))
        reply.reopen(spec)
        conversation.touch()
    return _Turn(conversation, reply, list(branch), settled=settled)


def _request_for(turn: _Turn, spec: ModelSpec, *, continuation: bool) -> ChatRequest:
    # Every earlier reply, whichever model wrote it, goes to the next model as
    # plain text; reasoning is never replayed.
    messages = [
        ChatMessage(role=m.role, content=m.content)
        for m in turn.history
        if m.role in (Message.Role.USER, Message.Role.ASSISTANT) and m.content
    ]
    conversation = turn.conversation
    return ChatRequest(
        model=spec,
        messages=messages,
        system=conversation.system_prompt,
        temperature=conversation.temperature,
        # A limit lowered (or a model changed) since the conversation set it still holds.
        max_tokens=min(conversation.max_tokens, spec.max_tokens_allowed()) if conversation.max_tokens else None,
        extra={"continuation": True} if continuation else {},
    )


async def _launch(
    turn: _Turn, *, replaces: UUID | None = None, continuation: bool = False, then=None, tags=(), metadata=None
) -> Generation:
    spec = providers.get_model(turn.reply.model_key)
    running = Generation(
        turn.reply,
        _request_for(turn, spec, continuation=continuation),
        then=then,
        tags=tags,
        metadata=metadata,
        owner_id=turn.conversation.owner_id,
    )
    generation.register(running)
    durability.ensure_running()
    try:
        for message in turn.settled:
            await frames.announce(message)
        await frames.broadcast(turn.conversation.id, turn.new_html or running.snapshot_html(replaces=replaces))
        if turn.moves_nav:
            conversation_id = turn.conversation.id
            frames.broadcast_to_user_soon(
                turn.conversation.owner_id, str(conversation_id), lambda: _nav_now(conversation_id)
            )
    finally:
        running.start()
    return running


@database_sync_to_async
def _nav_now(conversation_id: UUID) -> str:
    """The conversation's sidebar entry moving to the top, as it is now ("" if it is gone)."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    return frames.nav_moved(conversation) if conversation is not None else ""


async def start_reply(conversation_id: UUID, user, text: str, *, tags=(), metadata=None) -> Generation:
    """Save ``text`` as the user's message and start the reply to it
    (``tags`` and ``metadata`` go out with the run's API events).

    Raises ReplyRefused (nothing saved) when a reply is already being written
    (or the last one is not saved yet), the conversation has no model, a limit
    is reached or the database stayed locked for CHAT_SEND_LOCK_SECONDS; Conversation.DoesNotExist for a
    conversation ``user`` does not own.  ``text`` is valid (MessageForm).
    """
    await aclose_old_connections()
    return await _launch_new(await _new_turn(conversation_id, user, text), tags=tags, metadata=metadata)


async def start_conversation(user, model_key: str, text: str) -> Conversation:
    """Create ``user``'s conversation with model ``model_key``, ``text`` its
    first message, and start the reply, all in the turn's one transaction: a
    refusal (ReplyRefused, as for ``start_reply``) leaves no conversation."""
    await aclose_old_connections()
    turn = await _new_turn(uuid4(), user, text, new_model=model_key)
    await _launch_new(turn)
    return turn.conversation


async def start_comparison(
    conversation_id: UUID, user, text: str, model_keys: list[str], *, tags=(), metadata=None
) -> list[Generation]:
    """Save ``text`` as the user's message and start one reply to it by each
    model of ``model_keys`` (two to four distinct offered ones: SendForm),
    all at once (each run's API events carry ``tags`` and its model's key).
    It is one turn: refused (nothing saved, ReplyRefused) as ``start_reply``
    is, and when the limits cannot take every one of its replies.  Each
    reply streams, fails or is stopped on its own; Stop stops them all."""
    await aclose_old_connections()
    turn = await _comparison_turn(conversation_id, user, text, model_keys)
    first = turn.conversation.title_source == Conversation.TitleSource.FIRST_LINE and len(turn.history) == 1
    then = write_title if first and settings.CHAT_TITLE_MODEL != "off" else None
    runs = []
    for index, reply in enumerate(turn.compared):
        spec = providers.get_model(reply.model_key)
        request = _request_for(turn, spec, continuation=False)
        runs.append(
            Generation(
                reply,
                request,
                then=None if index else then,
                owner_id=turn.conversation.owner_id,
                tags=(*tags, reply.model_key),
                metadata=metadata,
            )
        )
    for running in runs:  # every one registered before anything awaits
        generation.register(running)
    durability.ensure_running()
    try:
        for message in turn.settled:
            await frames.announce(message)
        await frames.broadcast(turn.conversation.id, turn.new_html)
        conversation_id = turn.conversation.id
        frames.broadcast_to_user_soon(
            turn.conversation.owner_id, str(conversation_id), lambda: _nav_now(conversation_id)
        )
    finally:
        for running in runs:
            running.start()
    return runs


async def _launch_new(turn: _Turn, **run) -> Generation:
    first = turn.conversation.title_source == Conversation.TitleSource.FIRST_LINE and len(turn.history) == 1
    return await _launch(turn, then=write_title if first and settings.CHAT_TITLE_MODEL != "off" else None, **run)


async def regenerate_reply(conversation_id: UUID, user, message_id: UUID, model_key: str = "") -> Generation:
    """Write a new attempt at the reply ``message_id``, a sibling of it, by
    the conversation's model or by ``model_key`` (the new reply records its own)."""
    await aclose_old_connections()
    turn = await _regenerate_turn(conversation_id, user, message_id, model_key)
    return await _launch(turn, replaces=message_id)


async def retry_reply(conversation_id: UUID, user, message_id: UUID) -> Generation:
    """Regenerate a reply that failed, stopped or was interrupted."""
    return await regenerate_reply(conversation_id, user, message_id)


async def edit_message(conversation_id: UUID, user, message_id: UUID, text: str) -> Generation:
    """Send ``text`` in place of the user's message ``message_id``: a new
    sibling of it with a new reply; the old one and all after it stay stored."""
    await aclose_old_connections()
    turn = await _edit_turn(conversation_id, user, message_id, text)
    return await _launch(turn)


async def switch_branch(conversation_id: UUID, user, message_id: UUID) -> None:
    """Show the branch through ``message_id`` (a sibling of one shown), down
    to the leaf last seen in it, in every open tab, and remember it."""
    await aclose_old_connections()
    html = await _switch(conversation_id, user, message_id)
    await frames.broadcast(conversation_id, html)


async def continue_reply(conversation_id: UUID, user, message_id: UUID) -> Generation:
    """Ask the model to go on with the reply ``message_id``, appending to it."""
    await aclose_old_connections()
    turn = await _continue_turn(conversation_id, user, message_id)
    return await _launch(turn, continuation=True)


TITLE_PROMPT = (
    "Write a title of at most six words for the conversation below, in the language the user wrote in. "
    "Answer with the title only: no quotes, no punctuation at the end, no markdown."
)
TITLE_INPUT_CHARS = 2000  # of the question and of the reply: enough to tell what it is about
TITLE_MAX_TOKENS = 30


async def rename(conversation: Conversation, title: str) -> None:
    """The user's own title, in every open tab's header, sidebar and tab."""
    await database_sync_to_async(conversation.rename)(title)
    await _retitled(conversation)


async def _retitled(conversation: Conversation) -> None:
    """The new title to the conversation's tabs (header, sidebar entry, tab)
    and to the sidebar entry in the owner's other tabs."""
    await frames.broadcast(conversation.id, await database_sync_to_async(frames.title)(conversation))
    await frames.broadcast_to_user(conversation.owner_id, await database_sync_to_async(frames.nav_title)(conversation))


async def set_pinned(conversation: Conversation, pinned: bool) -> None:
    """Pin or unpin: the header's controls and the sidebar in every open tab of the owner's."""
    await database_sync_to_async(conversation.pin)(pinned)
    await _library_changed(conversation)


async def set_archived(conversation: Conversation, archived: bool) -> None:
    """Archive (out of the sidebar, still open by URL) or bring back, in every open tab of the owner's."""
    await database_sync_to_async(conversation.archive)(archived)
    await _library_changed(conversation)


async def _library_changed(conversation: Conversation) -> None:
    controls, sidebar = await database_sync_to_async(frames.library)(conversation)
    await frames.broadcast(conversation.id, controls)
    await frames.broadcast_to_user(conversation.owner_id, sidebar)


async def write_title(reply: Message) -> None:
    """After a conversation's first reply completed: a separate model call
    (tagged ``title``, never part of the chat's stream or transcript) writes a
    short title, which every open tab gets in its header, sidebar and tab.
    A failed or slow call, or a rename meanwhile, leaves the title as it is."""
    try:
        conversation, question = await _title_inputs(reply)
        key = settings.CHAT_TITLE_MODEL or conversation.model_key
        spec = providers.get_model(key)
        if spec is None:
            logger.warning("no title for conversation %s: model %r is not offered", conversation.id, key)
            return
        request = ChatRequest(
            model=spec,
            messages=[
                ChatMessage(role="user", content=question[:TITLE_INPUT_CHARS]),
                ChatMessage(role="assistant", content=reply.content[:TITLE_INPUT_CHARS]),
                ChatMessage(role="user", content=TITLE_PROMPT),
            ],
            max_tokens=TITLE_MAX_TOKENS,
            tags=("title",),
        )
        text, used = [], None
        async with asyncio.timeout(settings.CHAT_TITLE_TIMEOUT_SECONDS):
            async for event in providers.get_provider(spec.provider).events(request):
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, Usage):
                    used = event
        # On the writer thread: a ledger write waiting for the lock must not hold up the sockets.
        await db.background(UsageDay.add)(spec.key, _title_usage(used, text), user_id=conversation.owner_id)
        title = clean_title("".join(text))
        if not title:
            logger.warning("no title for conversation %s: the model answered nothing usable", conversation.id)
            return
        tokens = (used.input_tokens, used.output_tokens) if used else (None, None)
        if await _take_title(conversation, title, spec.key, *tokens):
            await _retitled(conversation)
    except (ProviderError, TimeoutError) as exc:
        logger.warning("no title for conversation of reply %s: %s", reply.id, exc)
    except Exception as exc:
        if db.is_busy(exc):
            logger.warning("no title for conversation of reply %s: the database stayed locked", reply.id)
        else:
            logger.exception("no title for conversation of reply %s", reply.id)


@db.background
def _take_title(conversation: Conversation, title: str, model_key: str, tokens_in, tokens_out) -> bool:
    with db.bounded_atomic(settings.CHAT_WRITE_LOCK_SECONDS):
        return conversation.take_model_title(title, model_key, tokens_in, tokens_out)


def _title_usage(used: Usage | None, text: list[str]) -> RunUsage:
    if used and used.input_tokens is not None and used.output_tokens is not None:
        return RunUsage(used.input_tokens, used.output_tokens)
    estimate = math.ceil(len("".join(text)) / CHARS_PER_TOKEN)
    return RunUsage((used and used.input_tokens) or 0, (used and used.output_tokens) or estimate, metered=False)


@database_sync_to_async
def _title_inputs(reply: Message) -> tuple[Conversation, str]:
    conversation = Conversation.objects.get(pk=reply.conversation_id)
    return conversation, Message.objects.get(pk=reply.parent_id).content


def clean_title(text: str) -> str:
    """A model's answer as a one-line title: no quotes, markdown or final full stop."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^(title|标题)\s*[:：]\s*", "", line.strip().strip("#*_`").strip(), flags=re.I)
    for _pass in range(2):  # a quoted title may end in a full stop, inside or outside the quotes
        line = line.strip().strip("\"'“”‘’「」《》*_`").rstrip("。.!！?？,，;；:：")
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


@database_sync_to_async
def _check_owner(conversation_id: UUID, user) -> None:
    if not Conversation.objects.for_user(user).filter(pk=conversation_id).exists():
        raise Conversation.DoesNotExist


def sessions_changed(sender, user=None, instance=None, **kwargs) -> None:
    """Receiver of ``user_logged_out`` and the user model's ``post_save``: the
    user's open sockets, on every worker, check their session and close if it
    has ended (logged out, password changed, account deactivated)."""
    account = user if user is not None else instance
    if account is None or account.pk is None:
        return
    request = kwargs.get("request")
    if request is not None and hasattr(request, "session"):
        # user_logged_out fires before logout() flushes the session: flush it
        # now, or a worker that checks at once still finds it standing.
        request.session.flush()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the usual case: a sync view or command, no loop in this thread
        async_to_sync(frames.request_session_check)(account.pk)
    else:  # saved from code running on a loop (DJANGO_ALLOW_ASYNC_UNSAFE): send from it
        task = loop.create_task(frames.request_session_check(account.pk))
        _SESSION_CHECKS.add(task)
        task.add_done_callback(_SESSION_CHECKS.discard)


_SESSION_CHECKS: set[asyncio.Task] = set()  # strong references until they are sent


def account_deleted(sender, instance=None, **kwargs) -> None:
    """Receiver of the user model's ``post_delete``: once the deletion is
    committed (a socket reading the account before then would still find
    it), the user's open sockets, on every worker, check and close."""
    if instance is None or instance.pk is None:
        return
    pk = instance.pk  # Django clears instance.pk once every receiver has run
    transaction.on_commit(lambda: sessions_changed(sender, user=_Deleted(pk)), robust=True)


@dataclass
class _Deleted:
    pk: int


def delete_conversations(user, conversation_ids=None) -> int:
    """Delete ``user``'s conversations (those of ``conversation_ids``, or all
    of them) with their messages, each reply being written in them stopped
    first as Stop does (in whichever worker runs it), and tell their open
    tabs.  Returns how many were deleted.  Called from sync views.

    A stopped reply is not waited for (its final save needs the database
    thread this request holds): that save then finds no row, which the
    generation logs as such; the provider's stream is closed already."""
    owned = Conversation.objects.filter(owner=user)
    if conversation_ids is not None:
        owned = owned.filter(pk__in=list(conversation_ids))
    ids = set(owned.values_list("pk", flat=True))
    if not ids:
        return 0
    streaming = set(
        Message.objects.filter(conversation__in=owned).streaming().values_list("conversation_id", flat=True)
    )
    local = {running.conversation_id for running in generation.running()} & ids
    async_to_sync(stop_replies)(local | streaming)
    deleted = owned.filter(pk__in=ids).delete()[1].get(Conversation._meta.label, 0)
    async_to_sync(frames.announce_deleted)(user.pk, ids)
    return deleted


async def stop_replies(conversation_ids) -> None:
    """Stop the reply of each conversation in whichever worker runs it."""
    for conversation_id in conversation_ids:
        if not generation.stop(conversation_id):
            await frames.request_stop(conversation_id)


async def stop(conversation_id: UUID, user) -> None:
    """Stop the conversation's reply in whichever worker process runs it;
    Conversation.DoesNotExist unless ``user`` may open the conversation."""
    await _check_owner(conversation_id, user)
    if not generation.stop(conversation_id):
        await frames.request_stop(conversation_id)


@dataclass
class Joined:
    """What a socket joining a conversation shows first, for one reply.

    ``html`` is the reply's bubble (or nothing); frames of reply ``message``
    up to ``seq`` are already in it.  ``awaiting`` names a reply being
    written by another worker, whose snapshot was requested for this socket:
    its frames are held until the snapshot arrives."""

    html: str = ""
    message: str = ""
    seq: int = 0
    awaiting: str = ""


@database_sync_to_async
def _last_replies(conversation_id: UUID, user) -> tuple[list[tuple[Message, str]], list[Message]]:
    """The replies that end the branch as the database has them (a
    comparison's columns, or the last reply), each with its bubble with
    ``user``'s rating, after marking the replies of dead workers interrupted
    (returned too)."""
    settled = durability.settle(conversation_id)
    replies = Conversation.objects.get(pk=conversation_id).transcript().last_replies
    return [(reply, frames.bubble(reply)) for reply in Feedback.attach(replies, user)], settled


async def join(conversation_id: UUID, user, channel_name: str) -> list[Joined]:
    """Join the conversation's current reply, or each reply of a comparison,
    with no gap and no repeat: its snapshot at frame ``seq``, then only
    frames after ``seq`` (the socket is already in the group).  A dead
    worker's reply is settled and every tab told."""
    running = generation.get_all(conversation_id)
    if len(running) == 1 and not running[0].message.comparison:
        seq, html = running[0].snapshot()
        return [Joined(html, str(running[0].message.id), seq)]
    replies, settled = await _last_replies(conversation_id, user)
    for message in settled:
        await frames.announce(message)
    # Taken after the read, each on the event loop: consistent with the frames
    # that follow it (the ones queued meanwhile are dropped as in it).
    local = {running.message.id: running for running in generation.get_all(conversation_id)}
    joined, elsewhere = [], False
    for reply, html in replies:
        if reply.id in local:
            seq, html = local[reply.id].snapshot()
            joined.append(Joined(html, str(reply.id), seq))
        elif reply.is_streaming and settings.REDIS_URL:
            joined.append(Joined(html, awaiting=str(reply.id)))  # repairs a stale page meanwhile
            elsewhere = True
        else:
            joined.append(Joined(html))  # repairs a stale page
    if elsewhere:
        # Every generation of the conversation answers, each with its own reply's snapshot.
        await frames.request_snapshot(conversation_id, channel_name)
    return joined


# --- temporary chats: nothing written, see conversations.temporary -----------
@db.turn
def _check_temporary(chat_id: UUID, user, model_key: str) -> ModelSpec:
    spec = _offered(model_key)
    with _turn_transaction(chat_id, _busy_not_sent()):  # the user's row locked while counting, as for any reply
        _check_limits(user)
    return spec


async def start_temporary_reply(chat: temporary.TemporaryChat, user, text: str) -> Generation:
    """Add ``text`` to the temporary chat and start the reply to it, in memory
    only.  ReplyRefused (nothing added) as for a conversation: a reply already
    being written, the model not offered, a limit or budget reached."""
    if generation.get_active(chat.id) is not None:
        raise ReplyRefused(_("A reply is still being written. Wait for it or stop it first."))
    spec = await _check_temporary(chat.id, user, chat.model_key)
    now = timezone.now()
    shown = list(chat.transcript())
    question = chat.add(
        Message(role=Message.Role.USER, content=text, parent_id=shown[-1].id if shown else None, created_at=now)
    )
    reply = chat.add(
        Message(
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            parent_id=question.id,
            provider=spec.endpoint_name,
            model=spec.name,
            created_at=now,
            parameters={"max_tokens": spec.max_tokens, "streaming": spec.streaming, "temporary": True},
        )
    )
    question.user_feedback = reply.user_feedback = None
    question.feedback_known = reply.feedback_known = True
    turn = _Turn(chat, reply, [*shown, question], frames.new_bubbles(chat, question, reply, temporary=True))
    running = Generation(
        reply, _request_for(turn, spec, continuation=False), keep=lambda m: temporary.reply_used(chat, m)
    )
    generation.register(running)
    temporary.reply_started(user.pk)
    durability.ensure_running()
    try:
        await frames.broadcast(chat.id, turn.new_html)
    finally:
        running.start()
    return running


# --- stateless runs (the API's): nothing written, see conversations.runs ------
@dataclass
class StatelessRun:
    """One model call of a stateless run: its model and messages, oldest first."""

    model_key: str
    messages: list[ChatMessage]
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    tags: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)


@db.turn
def _check_stateless(user, count: int) -> None:
    with _turn_transaction(uuid4()):  # the user's row locked while counting, as for any reply
        _check_limits(user, count)


async def start_stateless(user, runs: list[StatelessRun]) -> list[Generation]:
    """Start each model call of ``runs`` at once, in memory only: no
    conversation, no message row, nothing written (what they use is counted
    for the limits and budgets in this process, as a temporary chat's is).
    ReplyRefused, nothing started, when a model is not offered or the limits
    or budgets do not allow them all."""
    specs = [_offered(run.model_key) for run in runs]
    await _check_stateless(user, len(runs))
    started = []
    for run, spec in zip(runs, specs, strict=True):
        reply = Message(
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            provider=spec.endpoint_name,
            model=spec.name,
            created_at=timezone.now(),
            parameters={
                "max_tokens": run.max_tokens or spec.max_tokens,
                "streaming": spec.streaming,
                "stateless": True,
            },
        )
        reply.conversation_id = reply.id  # keyed by itself: it belongs to no conversation
        reply.temporary = True
        reply.user_feedback, reply.feedback_known = None, True
        request = ChatRequest(
            model=spec,
            messages=run.messages,
            system=run.system,
            temperature=run.temperature,
            max_tokens=min(run.max_tokens, spec.max_tokens_allowed()) if run.max_tokens else None,
        )
        running = Generation(
            reply,
            request,
            keep=lambda m, owner=user.pk: temporary.run_used(owner, m),
            tags=run.tags,
            metadata=run.metadata,
            owner_id=user.pk,
        )
        generation.register(running)
        temporary.reply_started(user.pk)
        running.start()
        started.append(running)
    durability.ensure_running()
    return started


def stop_temporary(chat: temporary.TemporaryChat) -> None:
    """Stop the temporary chat's reply (it runs in this process, as the chat does)."""
    generation.stop(chat.id)


def open_temporary(chat_id: UUID, user) -> temporary.TemporaryChat | None:
    """A socket opens on the user's temporary chat; None if there is none here."""
    chat = temporary.get(chat_id, user)
    if chat is not None:
        temporary.opened(chat)
    return chat


def close_temporary(chat: temporary.TemporaryChat) -> None:
    temporary.closed(chat)


def join_temporary(chat: temporary.TemporaryChat) -> Joined:
    """What a socket joining the chat shows first: its reply being written, if any."""
    running = generation.get_active(chat.id)
    if running is None:
        return Joined()
    seq, html = running.snapshot()
    return Joined(html, str(running.message.id), seq)


async def resync(conversation_id: UUID, message_id: str, channel_name: str) -> Joined:
    """For a socket that missed frames of reply ``message_id`` (the channel
    layer lost them): the reply's snapshot if this process writes it, else
    one requested from the worker that does (``awaiting``).  No database."""
    running = _running_reply(conversation_id, message_id)
    if running is not None:
        seq, html = running.snapshot()
        return Joined(html, message_id, seq)
    await frames.request_snapshot(conversation_id, channel_name)
    return Joined(awaiting=message_id)


def _running_reply(conversation_id: UUID, message_id: str) -> Generation | None:
    """The generation in this process writing reply ``message_id``, if any."""
    return next((g for g in generation.get_all(conversation_id) if str(g.message.id) == message_id), None)


@database_sync_to_async
def _reply_now(conversation_id: UUID, message_id: str, user) -> tuple[bool, str]:
    """Whether the reply is still streaming in the database, and if not its bubble with ``user``'s rating."""
    reply = Message.objects.filter(pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT).first()
    if reply is None or reply.is_streaming:
        return reply is not None, ""
    return False, frames.bubble(Feedback.attach([reply], user)[0])


async def catch_up(conversation_id: UUID, user, message_id: str, channel_name: str) -> Joined:
    """For a socket that heard nothing of reply ``message_id`` for a while
    (its frames or final bubble may have been lost): the reply's snapshot if
    this process writes it, its bubble if it ended, else a snapshot requested
    from the worker that writes it (``awaiting``)."""
    running = _running_reply(conversation_id, message_id)
    if running is not None:
        seq, html = running.snapshot()
        return Joined(html, message_id, seq)
    streaming, html = await _reply_now(conversation_id, message_id, user)
    if not streaming:
        return Joined(html)
    await frames.request_snapshot(conversation_id, channel_name)
    return Joined(awaiting=message_id)
