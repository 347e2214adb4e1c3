"""Server-owned generations: one asyncio task per reply being written.

This module keeps, in one place, every write that must also reach the open
tabs of a conversation (as Zulip keeps its ``actions``):

* ``start_reply`` / ``retry_reply`` / ``continue_reply`` save what the user
  asked for *before* the model is called, broadcast the new bubbles, and start
  a ``Generation`` task;
* the task reads typed events from the provider, coalesces deltas into frames
  (at most one per ``CHAT_FRAME_INTERVAL_MS``, a lone token at once) and
  broadcasts them to the group ``conversation_<id>``;
* when the reply ends (complete, stopped, error) it is written once, and a last
  frame replaces the whole bubble with the rendered reply and its footer.

A generation is not tied to a socket: closing a tab does not stop it.  The
registry ``_active`` maps a conversation to its running generation in this
process; a socket that (re)connects asks it for a snapshot so that it can join
with no gap and no duplicated text.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import logging
from dataclasses import dataclass
from uuid import UUID

from channels.db import aclose_old_connections, database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _

from conversations import durability, providers
from conversations.markdown import render_markdown
from conversations.models import Conversation, Message
from conversations.providers.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    ModelSpec,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    Usage,
)

logger = logging.getLogger(__name__)

_active: dict[UUID, Generation] = {}


def group_name(conversation_id: UUID | str) -> str:
    return f"conversation_{conversation_id}"


def control_group(conversation_id: UUID | str) -> str:
    """Where any worker asks the process that runs a conversation's reply to
    stop it or to send a snapshot (kept apart from the frames' group so the
    generation does not receive its own broadcasts)."""
    return f"conversation_{conversation_id}_control"


class ReplyRefused(Exception):
    """A request the user must change before it can go ahead; ``message`` says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def get_active(conversation_id: UUID) -> Generation | None:
    return _active.get(conversation_id)


def stop(conversation_id: UUID) -> bool:
    """Cancel the conversation's generation in this process; True if one was running."""
    generation = _active.get(conversation_id)
    return generation.stop() if generation else False


async def stop_anywhere(conversation_id: UUID) -> None:
    """Stop the conversation's reply in whichever worker process runs it."""
    if not stop(conversation_id):
        await get_channel_layer().group_send(control_group(conversation_id), {"type": "conversation.stop"})


async def request_snapshot(conversation_id: UUID, reply_to: str) -> None:
    """Ask the worker running the conversation's reply to send its snapshot
    (a ``conversation.snapshot`` event) to the channel ``reply_to``."""
    await get_channel_layer().group_send(
        control_group(conversation_id), {"type": "conversation.snapshot_request", "reply_to": reply_to}
    )


async def broadcast(conversation_id: UUID, html: str, **extra) -> None:
    """Send an HTML fragment to every socket of the conversation."""
    await get_channel_layer().group_send(
        group_name(conversation_id), {"type": "conversation.html", "html": html, **extra}
    )


@dataclass
class _Turn:
    """What the database gave back when a reply was set up."""

    conversation: Conversation
    assistant: Message
    history: list[Message]  # what the model is shown, oldest first
    new_html: str  # bubbles to append to the transcript (empty for Continue)
    settled: list[Message]  # replies a dead worker left streaming, now interrupted


def _check_idle(conversation: Conversation) -> list[Message]:
    """Refuse a second reply while one is being written, in any worker.

    Runs inside the transaction that holds the conversation row lock, so two
    sends cannot both pass.  A ``streaming`` row whose worker died is marked
    interrupted first (``durability.settle``) and returned; a live one refuses.
    """
    busy = _("A reply is still being written. Wait for it to finish, or stop it.")
    if conversation.id in _active:
        raise ReplyRefused(busy)
    settled = durability.settle(conversation.id)
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        raise ReplyRefused(busy)
    return settled


def _lock_idle(conversation_id: UUID, user) -> tuple[Conversation, ModelSpec, list[Message]]:
    """Inside a transaction: the conversation, row-locked, with no reply being
    written, the model it uses, and the dead replies just settled.  Raises
    ReplyRefused or DoesNotExist."""
    conversation = Conversation.objects.for_user(user).select_for_update().get(pk=conversation_id)
    settled = _check_idle(conversation)
    return conversation, _model_for(conversation), settled


def _model_for(conversation: Conversation) -> ModelSpec:
    spec = providers.get_model(conversation.model_key)
    if spec is None:
        raise ReplyRefused(_("Choose a model for this conversation first."))
    return spec


def _new_assistant(conversation: Conversation, parent: Message, spec: ModelSpec) -> Message:
    return Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        heartbeat_at=timezone.now(),
        provider=spec.provider,
        model=spec.name,
        parameters={
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens or spec.max_tokens,
            "system_prompt": bool(conversation.system_prompt),
        },
    )


def _bubbles(conversation: Conversation, *messages: Message) -> str:
    return render_to_string("conversations/_append.html", {"conversation": conversation, "new_messages": messages})


@database_sync_to_async
def _create_turn(conversation_id: UUID, user, text: str) -> _Turn:
    with transaction.atomic():
        conversation, spec, settled = _lock_idle(conversation_id, user)
        history = conversation.transcript()
        user_message = Message.objects.create(
            conversation=conversation,
            parent=history[-1] if history else None,
            role=Message.Role.USER,
            content=text,
        )
        assistant = _new_assistant(conversation, user_message, spec)
        conversation.updated_at = timezone.now()
        fields = ["updated_at"]
        if not conversation.title:
            conversation.title = _title_from(text)
            fields.append("title")
        conversation.save(update_fields=fields)
    new_html = _bubbles(conversation, user_message, assistant)
    return _Turn(conversation, assistant, [*history, user_message], new_html, settled)


@database_sync_to_async
def _create_retry(conversation_id: UUID, user, message_id: UUID) -> _Turn:
    with transaction.atomic():
        conversation, spec, settled = _lock_idle(conversation_id, user)
        branch = conversation.transcript()
        index = _index_of(branch, message_id)
        if index is None or not branch[index].is_assistant:
            raise ReplyRefused(_("That reply can no longer be retried."))
        history = branch[:index]
        # A sibling of the failed reply: the branch now follows the new one,
        # and the old one stays stored for review.
        assistant = _new_assistant(conversation, branch[index].parent, spec)
        conversation.touch()
    return _Turn(conversation, assistant, history, "", settled)


@database_sync_to_async
def _create_continue(conversation_id: UUID, user, message_id: UUID) -> _Turn:
    with transaction.atomic():
        conversation, spec, settled = _lock_idle(conversation_id, user)
        branch = conversation.transcript()
        index = _index_of(branch, message_id)
        if index is None or index != len(branch) - 1 or not branch[index].is_assistant:
            raise ReplyRefused(_("Only the last reply can be continued."))
        message = branch[index]
        # Continue extends the same row: the text grows, usage adds up, and
        # parameters["continuations"] counts how often it was extended.
        message.status = Message.Status.STREAMING
        message.heartbeat_at = timezone.now()
        message.provider, message.model = spec.provider, spec.name
        message.parameters = {**message.parameters, "continuations": message.parameters.get("continuations", 0) + 1}
        message.error = message.error_kind = ""
        message.html = ""  # the text will grow: the stored rendering no longer matches it
        fields = ["status", "heartbeat_at", "provider", "model", "parameters", "error", "error_kind", "html"]
        message.save(update_fields=fields)
        conversation.touch()
    return _Turn(conversation, message, branch, "", settled)


def _index_of(branch: list[Message], message_id: UUID) -> int | None:
    for index, message in enumerate(branch):
        if message.id == message_id:
            return index
    return None


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"


def _request_for(turn: _Turn, spec: ModelSpec, *, continuation: bool = False) -> ChatRequest:
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
        max_tokens=conversation.max_tokens,
        extra={"continuation": True} if continuation else {},
    )


async def start_reply(conversation_id: UUID, user, text: str) -> Generation:
    """Save ``text`` as the user's message and start the reply to it.

    Raises ReplyRefused (nothing saved) when a reply is already being written
    or the conversation has no model; Conversation.DoesNotExist for a
    conversation ``user`` does not own.
    """
    await aclose_old_connections()
    turn = await _create_turn(conversation_id, user, text)
    return await _launch(turn)


async def retry_reply(conversation_id: UUID, user, message_id: UUID) -> Generation:
    """Write a new attempt at the reply ``message_id`` (a sibling of it)."""
    await aclose_old_connections()
    turn = await _create_retry(conversation_id, user, message_id)
    return await _launch(turn, replaces=message_id)


async def continue_reply(conversation_id: UUID, user, message_id: UUID) -> Generation:
    """Ask the model to go on with the reply ``message_id``, appending to it."""
    await aclose_old_connections()
    turn = await _create_continue(conversation_id, user, message_id)
    return await _launch(turn, continuation=True)


async def _launch(turn: _Turn, *, replaces: UUID | None = None, continuation: bool = False) -> Generation:
    spec = providers.get_model(turn.assistant.model_key)
    generation = Generation(turn.assistant, _request_for(turn, spec, continuation=continuation))
    # Registered before the first await below, so that a socket joining now
    # finds it and a second send is refused.
    _active[turn.conversation.id] = generation
    durability.ensure_running()
    try:
        for message in turn.settled:
            await durability.announce(message)
        if replaces is not None:
            await broadcast(turn.conversation.id, generation.snapshot_html(replaces=replaces))
        elif continuation:
            await broadcast(turn.conversation.id, generation.snapshot_html())
        else:
            await broadcast(turn.conversation.id, turn.new_html)
    finally:
        generation.start()
    return generation


class Generation:
    """One reply being written, owned by this process.

    The provider loop only appends to lists and sets an event (cheap per
    token); the pump coroutine turns what accumulated into frames; frames are
    numbered (``seq``) so that a joiner can drop what its snapshot holds.
    """

    def __init__(self, message: Message, request: ChatRequest) -> None:
        self.message = message
        self.conversation_id = message.conversation_id
        self.request = request
        self.provider = providers.get_provider(request.model.provider)
        self.prefix = message.content  # non-empty only for Continue
        self.text: list[str] = []
        self.reasoning: list[str] = [message.reasoning] if message.reasoning else []
        self.sent_text = 0  # how many parts of self.text frames have carried
        self.sent_reasoning = len(self.reasoning)
        self.rendered_text = 0  # parts covered by the last markdown render
        self.seq = 0
        self.final_html = ""
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.first_token_ms: int | None = None
        self.frames_sent = 0
        self._dirty = asyncio.Event()
        self._closing = asyncio.Event()
        self._last_frame = 0.0
        self._last_render = 0.0
        self._started = 0.0
        # What the last checkpoint held (parts of text, reasoning) and when the
        # database last heard of this reply (loop time): see conversations.durability.
        self.checkpointed = (0, len(self.reasoning))
        self.beat_at = 0.0
        self._stop_requested = False
        self._finishing = False
        self.task: asyncio.Task | None = None
        self._control_task: asyncio.Task | None = None
        self._control_channel = ""
        self._control_ready = asyncio.Event()
        self.done = asyncio.Event()

    # --- control ---------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = self._last_render = self.beat_at = loop.time()
        # A fresh context: the task must not inherit the request's or the
        # socket's asgiref state (Django's per-request ThreadSensitiveContext
        # executor is shut down when the request ends, and the reply outlives it).
        self.task = loop.create_task(self._run(), name=f"generation-{self.message.id}", context=contextvars.Context())
        self._control_task = loop.create_task(self._control(), context=contextvars.Context())

    def stop(self) -> bool:
        if self.task is None or self.task.done() or self._finishing:
            return False
        self._stop_requested = True
        self.task.cancel()
        return True

    def interrupt(self) -> None:
        """End the reply as ``interrupted`` (the worker is shutting down): its
        text so far is saved and the open tabs get the final bubble."""
        if self.task is not None and not self.task.done() and not self._finishing:
            self.task.cancel()

    # --- state for joiners -------------------------------------------------
    def snapshot(self) -> tuple[int, str]:
        """``(seq, html)``: the whole bubble as of frame ``seq``.

        Taken synchronously on the event loop, so it is consistent with the
        frames: a joiner shows this and then applies frames after ``seq``.
        """
        return self.seq, self.final_html or self.snapshot_html()

    def snapshot_html(self, *, replaces: UUID | None = None) -> str:
        shown = copy.copy(self.message)
        shown.content = self.prefix + "".join(self.text[: self.sent_text])
        shown.reasoning = "".join(self.reasoning[: self.sent_reasoning])
        shown.status = Message.Status.STREAMING
        return render_to_string("conversations/_message.html", {"msg": shown, "oob": True, "replaces": replaces})

    async def _control(self) -> None:
        """Answer other workers: Stop, and snapshots for sockets joining there."""
        layer = get_channel_layer()
        channel = self._control_channel = await layer.new_channel()
        group = control_group(self.conversation_id)
        await layer.group_add(group, channel)
        self._control_ready.set()
        try:
            while True:
                request = await layer.receive(channel)
                if request["type"] == "generation.end":
                    return
                if request["type"] == "conversation.stop":
                    self.stop()
                elif request["type"] == "conversation.snapshot_request":
                    seq, html = self.snapshot()
                    await layer.send(
                        request["reply_to"],
                        {"type": "conversation.snapshot", "message": str(self.message.id), "seq": seq, "html": html},
                    )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(layer.group_discard(group, channel))

    # --- the task --------------------------------------------------------
    async def _run(self) -> None:
        pump = asyncio.create_task(self._pump())
        status, error, error_kind = Message.Status.COMPLETE, "", ""
        try:
            async with contextlib.aclosing(self.provider.events(self.request)) as events:
                async for event in events:
                    self._take(event)
        except asyncio.CancelledError:
            status = Message.Status.STOPPED if self._stop_requested else Message.Status.INTERRUPTED
            if not self._stop_requested:
                # Shutdown, not Stop: save what we have, then let it propagate.
                await self._end(pump, status, "", "")
                raise
            asyncio.current_task().uncancel()
        except ProviderError as exc:
            status, error, error_kind = Message.Status.ERROR, exc.message, str(exc.kind)
            logger.warning("provider error %s for message %s: %s", exc.kind, self.message.id, exc.detail)
        except Exception:
            logger.exception("generation %s failed", self.message.id)
            status, error, error_kind = Message.Status.ERROR, _("Something went wrong while writing this reply."), ""
        await self._end(pump, status, error, error_kind)

    def _take(self, event) -> None:
        if isinstance(event, TextDelta):
            if not event.text:
                return
            if self.first_token_ms is None:
                self.first_token_ms = self._elapsed_ms()
            self.text.append(event.text)
            self._dirty.set()
        elif isinstance(event, ReasoningDelta):
            if not event.text:
                return
            if self.first_token_ms is None:
                self.first_token_ms = self._elapsed_ms()
            self.reasoning.append(event.text)
            self._dirty.set()
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish = event

    def _elapsed_ms(self) -> int:
        return int((asyncio.get_running_loop().time() - self._started) * 1000)

    async def _pump(self) -> None:
        """Send what accumulated: at once if the last frame is older than the
        window (a lone token is not delayed), else when the window ends.

        It returns when ``_closing`` is set, never in the middle of a send:
        cancelling a channel-layer send halfway (redis-py in particular) can
        leave its connection waiting for a reply that never comes.
        """
        loop = asyncio.get_running_loop()
        interval = settings.CHAT_FRAME_INTERVAL_MS / 1000
        while True:
            await self._dirty.wait()
            if self._closing.is_set():
                return
            wait = self._last_frame + interval - loop.time()
            if wait > 0:
                # asyncio.timeout rather than wait_for: no task per coalescing window.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._closing.wait()
                if self._closing.is_set():
                    return
            self._dirty.clear()
            await self._send_frame()
            self._last_frame = loop.time()

    async def _send_frame(self) -> None:
        text = "".join(self.text[self.sent_text :])
        reasoning = "".join(self.reasoning[self.sent_reasoning :])
        self.sent_text, self.sent_reasoning = len(self.text), len(self.reasoning)
        now = asyncio.get_running_loop().time()
        rendered = ""
        if now - self._last_render >= settings.CHAT_RENDER_INTERVAL_MS / 1000 and self.sent_text > self.rendered_text:
            # Re-render the markdown now and then so formatting appears while
            # streaming; deltas in between append raw (escaped) text.
            self._last_render, self.rendered_text = now, self.sent_text
            rendered = render_markdown(self.prefix + "".join(self.text[: self.sent_text]))
        if rendered:
            html = render_to_string(
                "conversations/_frame.html",
                {"id": self.message.id, "text": text, "reasoning": reasoning, "rendered": rendered, "render": True},
            )
        else:
            html = self._delta_html(self.message.id, text, reasoning)
        self.seq += 1
        self.frames_sent += 1
        await get_channel_layer().group_send(
            group_name(self.conversation_id),
            {"type": "conversation.delta", "message": str(self.message.id), "seq": self.seq, "html": html},
        )

    @staticmethod
    def _delta_html(message_id: UUID, text: str, reasoning: str) -> str:
        """A frame that only appends text: what ``_frame.html`` renders when
        there is no markdown render, built directly (most frames are these; a
        template render per frame was a visible share of the server's CPU)."""
        html = format_html('<span hx-swap-oob="beforeend:#msg-{}-tail">{}</span>', message_id, text) if text else ""
        if reasoning:
            html += format_html('<span hx-swap-oob="beforeend:#msg-{}-reasoning">{}</span>', message_id, reasoning)
        return html

    async def _end(self, pump: asyncio.Task, status: str, error: str, error_kind: str) -> None:
        self._finishing = True
        self._closing.set()
        self._dirty.set()
        with contextlib.suppress(Exception):
            await pump  # finishes a send in progress, then returns
        if self.sent_text < len(self.text) or self.sent_reasoning < len(self.reasoning):
            # What the window still held goes out as one last delta, so that
            # the frames alone add up to the reply.
            with contextlib.suppress(Exception):
                await self._send_frame()
        message = self.message
        message.content = self.prefix + "".join(self.text)
        message.reasoning = "".join(self.reasoning)
        message.status = status
        message.error, message.error_kind = error, error_kind
        if self.finish is not None:
            message.finish_reason, message.finish_reason_raw = str(self.finish.reason), self.finish.raw or ""
        elif status != Message.Status.COMPLETE:
            message.finish_reason = message.finish_reason_raw = ""
        if self.usage is not None:
            message.input_tokens = self.usage.input_tokens
            if self.prefix and message.output_tokens and self.usage.output_tokens is not None:
                message.output_tokens += self.usage.output_tokens
            else:
                message.output_tokens = self.usage.output_tokens
        message.store_html()
        message.first_token_ms = self.first_token_ms
        message.duration_ms = self._elapsed_ms()
        message.completed_at = timezone.now()
        try:
            await aclose_old_connections()
            await _save_reply(message)
        except Exception:
            logger.exception("could not save reply %s", message.id)
        if not message.parameters.get("continuations"):
            # A new row: nobody has rated it yet, so its footer need not ask.
            message.user_feedback, message.feedback_known = None, True
        self.final_html = render_to_string("conversations/_message.html", {"msg": message, "oob": True})
        try:
            await broadcast(self.conversation_id, self.final_html, final=str(message.id))
        finally:
            if _active.get(self.conversation_id) is self:
                del _active[self.conversation_id]
            await self._end_control()
            self.done.set()

    async def _end_control(self) -> None:
        """Let the control loop return by itself.  It shares channels-redis'
        process-wide receive loop with this process's sockets; cancelling it
        while it holds that loop can lose a frame meant for them."""
        task = self._control_task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(self._control_ready.wait(), 5)
            await get_channel_layer().send(self._control_channel, {"type": "generation.end"})
            await asyncio.wait_for(asyncio.shield(task), 5)
        except Exception:
            task.cancel()  # last resort: the layer did not deliver


_REPLY_FIELDS = [
    "content",
    "reasoning",
    "status",
    "error",
    "error_kind",
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


@database_sync_to_async
def _save_reply(message: Message) -> None:
    """The one write at the end of a reply."""
    message.save(update_fields=_REPLY_FIELDS)
