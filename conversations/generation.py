"""The reply task: one asyncio task per reply this process is writing.

A ``Generation`` reads typed events from its provider, coalesces deltas into
numbered frames (at most one per ``CHAT_FRAME_INTERVAL_MS``, a lone token at
once) and hands them to ``frames``; when the reply ends (complete, stopped,
error, interrupted) it is written once and a last frame replaces the bubble.
A final write that fails (the database locked or gone) is retried: until it
succeeds the reply stays registered, in memory, and its bubble says it is not
saved yet (``save_final``, ``unsaved()``).
It is not tied to a socket: closing a tab does not stop it.

The per-process registry maps a conversation to its running generations (one,
or one per model of a comparison), so a joining socket can take a snapshot of
each (no gap, no repeat) and a second turn is refused.
``conversations.durability`` asks the running generations for their
checkpoints through ``running()`` and ``Generation.checkpoint()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from uuid import UUID

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.translation import gettext as _

from conversations import db, frames, providers
from conversations.models import Message
from conversations.providers.base import ChatRequest, Finish, ProviderError, ReasoningDelta, TextDelta, Usage
from conversations.streaming_markdown import StreamingMarkdown

logger = logging.getLogger(__name__)

MARKDOWN_SHARE = 0.1  # at most this share of a stream's time goes to rendering its markdown
MARKDOWN_SHARE_FROM = 0.002  # s: a feed cheaper than this never delays a frame

# The coalescing window widens as the loop gets busy (fewer, fuller frames
# when each frame's fixed cost is what saturates the core) and narrows again.
WINDOW_MAX_FACTOR = 2.5  # at most this many times CHAT_FRAME_INTERVAL_MS
WINDOW_PER_LATENESS = 3.0  # window added per second of smoothed lateness
LATENESS_SMOOTHING = 0.05  # weight of one pump's lateness in the average

# A final write that failed is tried again after these pauses, doubling.
FINAL_SAVE_FIRST_PAUSE = 0.1
FINAL_SAVE_MOST_PAUSE = 2.0

_active: dict[UUID, list[Generation]] = {}  # a comparison's replies: several
_after: set[asyncio.Task] = set()  # follow-up tasks (a title), referenced until done


class LoopLoad:
    """How late this process's pumps wake after their window, smoothed: how
    busy the event loop is, as every reply on it sees it."""

    lateness = 0.0

    @classmethod
    def woke(cls, late: float) -> None:
        cls.lateness += LATENESS_SMOOTHING * (max(late, 0.0) - cls.lateness)

    @classmethod
    def window(cls, interval: float) -> float:
        return min(interval * WINDOW_MAX_FACTOR, interval + WINDOW_PER_LATENESS * cls.lateness)


def frame_window() -> float:
    """The coalescing window now, in seconds (CHAT_FRAME_INTERVAL_MS on an idle loop)."""
    return LoopLoad.window(settings.CHAT_FRAME_INTERVAL_MS / 1000)


def get_active(conversation_id: UUID) -> Generation | None:
    """A generation of the conversation running in this process (the first of
    a comparison's), or None: whether a turn of it is under way here."""
    running = _active.get(conversation_id)
    return running[0] if running else None


def get_all(conversation_id: UUID) -> list[Generation]:
    """Every generation of the conversation running in this process, in the
    order they were registered (a comparison's in its models' order)."""
    return list(_active.get(conversation_id, ()))


def running() -> list[Generation]:
    """The generations this process is writing now."""
    return [generation for generations in _active.values() for generation in generations]


def follow_ups() -> list[asyncio.Task]:
    """Tasks started after a reply completed (a title call) that are still running."""
    return list(_after)


def unsaved() -> list[Generation]:
    """The generations whose reply has ended but whose final write has not succeeded yet."""
    return [generation for generation in running() if generation.unsaved]


def register(generation: Generation) -> None:
    """Add ``generation`` to the conversation's running replies in this process
    (before anything awaits, so a joiner finds it and a second send is refused)."""
    _active.setdefault(generation.conversation_id, []).append(generation)


def _unregister(generation: Generation) -> None:
    """Remove ``generation`` only: the other replies of a comparison go on."""
    generations = _active.get(generation.conversation_id, [])
    if generation in generations:
        generations.remove(generation)
    if not generations:
        _active.pop(generation.conversation_id, None)


def stop(conversation_id: UUID) -> bool:
    """Cancel every generation of the conversation in this process (all the
    replies of a comparison); True if one was running."""
    stopped = [generation.stop() for generation in get_all(conversation_id)]
    return any(stopped)


async def _deleted(message: Message) -> bool:
    """Whether the reply's row is gone (its conversation deleted); False if that cannot be told."""
    try:
        return not await database_sync_to_async(Message.objects.filter(pk=message.pk).exists)()
    except Exception:
        return False


class Generation:
    """One reply being written, owned by this process.

    The provider loop only appends to lists and sets an event (cheap per
    token); the pump coroutine turns what accumulated into frames; frames are
    numbered (``seq``) so that a joiner can drop what its snapshot holds.
    """

    def __init__(
        self, message: Message, request: ChatRequest, *, then=None, keep=None, tags=(), metadata=None, owner_id=None
    ) -> None:
        """``then(message)``: a coroutine function run after the reply completed.
        ``keep(message)``: for a reply that has no row (a temporary chat's, a
        stateless run's), called in place of the final write; such a reply is
        never checkpointed.  ``tags`` and ``metadata`` (a caller's, from the
        API) go out with the run's events; ``owner_id``: whose run it is."""
        self.message = message
        self._then = then
        self._keep = keep
        self.conversation_id = message.conversation_id
        self.request = request
        self.provider = providers.get_provider(request.model.provider)
        message.is_tail = True  # a new reply is always its branch's last message
        self.prefix = message.content  # non-empty only for Continue
        self.text: list[str] = []
        self.reasoning: list[str] = [message.reasoning] if message.reasoning else []
        self.sent_text = 0  # how many parts of self.text frames have carried
        self.sent_reasoning = len(self.reasoning)
        # The text as the frames drew it: finished blocks rendered once, the
        # open tail again on each frame (see conversations.streaming_markdown).
        self.markdown = StreamingMarkdown(self.prefix)
        self.markdown.feed("")  # the prefix's blocks are in the bubble already
        self.thought_ms: int | None = message.reasoning_ms  # set when the answer follows reasoning
        self._markdown_due = 0.0  # no frame with text before this (loop time)
        self.seq = 0
        self.final_html = ""
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.error_detail = ""  # the provider's own words, when it failed with some
        self.first_token_ms: int | None = None
        self.frames_sent = 0
        self._unsent = 0  # frames the channel layer failed to send since the last one it sent
        self._dirty = asyncio.Event()
        self._closing = asyncio.Event()
        self._last_frame = 0.0
        self._started = 0.0
        # What the last checkpoint held (parts of text, reasoning) and when the
        # database last heard of this reply (loop time): see checkpoint().
        self._checkpointed = (0, len(self.reasoning))
        self._beat_at = 0.0
        self._stop_requested = False
        self._finishing = False
        self._unsaved = False  # ended, final write not yet succeeded
        self._saving = asyncio.Lock()
        self._save_failures = 0
        self.save_notice = ""  # shown in the final bubble while it is not saved
        self.task: asyncio.Task | None = None
        self._control_task: asyncio.Task | None = None
        self._control_channel = ""
        self._control_ready = asyncio.Event()
        self.ended = asyncio.Event()  # the reply's text is final; its final write begins
        self.done = asyncio.Event()  # the final write succeeded and the tabs were sent the bubble
        # The run's typed events, numbered from 1 (see run_events()): what an
        # API client reads and a joiner replays.  One append per provider delta.
        self.tags, self.metadata, self.owner_id = tuple(tags), metadata or {}, owner_id
        self.run_log: list[tuple[str, object]] = [("run_start", None)]
        self._log_grew: asyncio.Future | None = None
        self._published = 0  # run_log entries sent to listeners on other workers
        self._publishing = False  # some worker has a listener: each frame also sends the new events
        self._publish_lock = asyncio.Lock()

    # --- control ---------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = self._beat_at = loop.time()
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
        """The streaming bubble holding what the frames sent so far carried."""
        reasoning = "".join(self.reasoning[: self.sent_reasoning])
        return frames.streaming_bubble(
            self.message, self.markdown, reasoning, replaces=replaces, thought_ms=self.thought_ms
        )

    # --- state for durability ---------------------------------------------
    def checkpoint(self, now: float) -> tuple[str, str] | None:
        """``(content, reasoning)`` so far if they grew since the last
        checkpoint (which this one then becomes); None when they did not, or
        when the final write is under way.  ``now`` is loop time."""
        parts = (len(self.text), len(self.reasoning))
        if self._finishing or parts == self._checkpointed or self._keep is not None:
            return None
        self._checkpointed, self._beat_at = parts, now
        return self.prefix + "".join(self.text), "".join(self.reasoning)

    def checkpoint_lost(self) -> None:
        """The last checkpoint or heartbeat was not written: the next tick writes both again."""
        self._checkpointed, self._beat_at = (-1, -1), -math.inf

    def heartbeat_due(self, now: float, every: float) -> bool:
        """True (and counted as sent) when the database has not heard of this
        reply for ``every`` seconds."""
        if self._finishing or now - self._beat_at < every or self._keep is not None:
            return False
        self._beat_at = now
        return True

    async def _control(self) -> None:
        """Answer other workers: Stop, and snapshots for sockets joining there."""
        layer = get_channel_layer()
        channel = self._control_channel = await layer.new_channel()
        group = frames.control_group(self.conversation_id)
        await layer.group_add(group, channel)
        self._control_ready.set()
        try:
            while True:
                request = await layer.receive(channel)
                if request["type"] == "generation.end":
                    return
                if request["type"] == "conversation.stop":
                    self.stop()
                elif request["type"] == "run.stop_request":
                    if request["run"] == str(self.message.id) and request["user"] == self.owner_id:
                        self.stop()
                elif request["type"] == "run.events_request":
                    await self._answer_events_request(request)
                elif request["type"] == "conversation.snapshot_request":
                    seq, html = self.snapshot()
                    await frames.send_snapshot(request["reply_to"], self.message.id, seq, html)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(layer.group_discard(group, channel))

    async def _answer_events_request(self, request: dict) -> None:
        """A listener on another worker joins this run: it is sent the events
        after its ``after`` now, and (being in the run's group already) every
        later one as each frame goes out."""
        if request["run"] != str(self.message.id):
            return
        if self.owner_id is not None and request.get("user") != self.owner_id:
            await frames.send_run_events(request["reply_to"], [], missing=True)
            return
        self._publishing = True
        # The group (which the asker is in) gets what it has not had; the
        # asker, everything up to that; later events reach it from the group.
        await self._publish()
        await frames.send_run_events(request["reply_to"], self.run_events(request["after"], self._published))

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
            self.error_detail = exc.provider_message
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
            self._log("text_delta", event.text)
        elif isinstance(event, ReasoningDelta):
            if not event.text:
                return
            if self.first_token_ms is None:
                self.first_token_ms = self._elapsed_ms()
            self.reasoning.append(event.text)
            self._dirty.set()
            self._log("reasoning_delta", event.text)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish = event

    # --- the run's events ----------------------------------------------------
    def _log(self, kind: str, data=None) -> None:
        self.run_log.append((kind, data))
        waiter, self._log_grew = self._log_grew, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def log_closed(self) -> bool:
        """True once ``run_end`` is in the log: no event follows."""
        return self.run_log[-1][0] == "run_end"

    async def log_grown(self, count: int) -> None:
        """Return once the log holds more than ``count`` events, or is closed."""
        while len(self.run_log) <= count and not self.log_closed:
            if self._log_grew is None:
                self._log_grew = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._log_grew)

    def run_events(self, after: int = 0, until: int | None = None) -> list[dict]:
        """The run's events after number ``after`` (up to ``until``), as the
        API sends them: ``{"id", "event", "run_id", "model", "tags", "data"}``."""
        head = {"run_id": str(self.message.id), "model": self.message.model_key, "tags": list(self.tags)}
        end = len(self.run_log) if until is None else until
        return [
            {"id": number, "event": kind, **head, "data": self._event_data(kind, data)}
            for number, (kind, data) in enumerate(self.run_log[after:end], start=after + 1)
        ]

    def _event_data(self, kind: str, data) -> dict:
        if kind in ("text_delta", "reasoning_delta"):
            return {"text": data}
        if kind == "run_start":
            # A stateless run is keyed by its own id: it belongs to no conversation.
            stateless = self.conversation_id == self.message.id
            return {
                "conversation": None if stateless else str(self.conversation_id),
                "metadata": self.metadata,
            }
        if kind == "run_end":
            return {"reply": reply_result(self.message)}
        return data

    def _log_end(self, status: str, error: str, error_kind: str) -> None:
        """The events of a run whose text is final: error, usage, finish
        (``run_end`` follows once the reply is saved: see save_final)."""
        if status == Message.Status.ERROR:
            self._log("error", {"kind": error_kind or "internal", "message": error})
        used = self.message.run_usage
        if used is not None:
            self._log(
                "usage",
                {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens, "estimated": not used.metered},
            )
        self._log("finish", {"reason": finish_reason(self.message)})

    async def _publish(self) -> None:
        """Send the events not yet sent to the listeners on other workers, in
        order (one send at a time: a listener drops what it has seen by number)."""
        if not self._publishing:
            return
        async with self._publish_lock:
            if self._published == len(self.run_log):
                return
            events = self.run_events(self._published)
            self._published += len(events)
            await frames.send_run_events(frames.run_group(self.message.id), events, group=True)

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
        while True:
            await self._dirty.wait()
            if self._closing.is_set():
                return
            due = max(self._last_frame + frame_window(), self._markdown_due)
            if due > loop.time():
                # asyncio.timeout rather than wait_for: no task per coalescing window.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._closing.wait()
                if self._closing.is_set():
                    return
                LoopLoad.woke(loop.time() - due)
            self._dirty.clear()
            try:
                await self._send_frame()
                await self._publish()
            except Exception as exc:
                # The channel layer failed (Redis restarting): this frame is
                # lost, and the next one's seq shows each socket the gap,
                # which it fills with a snapshot.  The reply goes on.
                if not self._unsent:
                    logger.warning("frames of reply %s are not being sent: %r", self.message.id, exc)
                self._unsent += 1
            else:
                if self._unsent:
                    logger.info("frames of reply %s are sent again (%d lost)", self.message.id, self._unsent)
                    self._unsent = 0
            self._last_frame = loop.time()

    async def _send_frame(self) -> None:
        text = "".join(self.text[self.sent_text :])
        reasoning = "".join(self.reasoning[self.sent_reasoning :])
        self.sent_text, self.sent_reasoning = len(self.text), len(self.reasoning)
        began = time.perf_counter()
        update = self.markdown.feed(text)
        cost = time.perf_counter() - began
        if cost > MARKDOWN_SHARE_FROM:
            # A long open block (a big table, a long code block) re-renders on
            # every frame: space its frames out so that rendering it takes at
            # most a tenth of this stream's time, however long it grows.
            self._markdown_due = asyncio.get_running_loop().time() + cost * (1 / MARKDOWN_SHARE - 1)
        thinking = None
        if text and self.thought_ms is None and not self.prefix and any(self.reasoning):
            # The answer starts after reasoning: fold the thinking section, once.
            self.thought_ms = self._elapsed_ms()
            thinking = frames.shown_streaming(self.message, self.markdown, "".join(self.reasoning), self.thought_ms)
            reasoning = ""
        self.seq += 1
        self.frames_sent += 1
        html = frames.stream_frame(self.message.id, update, self.markdown, reasoning, thinking)
        await frames.broadcast_delta(self.conversation_id, self.message.id, self.seq, html)

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
        message.finish(
            status,
            content=self.prefix + "".join(self.text),
            reasoning="".join(self.reasoning),
            error=error,
            error_kind=error_kind,
            error_detail=self.error_detail,
            finish_reason=str(self.finish.reason) if self.finish else None,
            finish_reason_raw=(self.finish.raw or "") if self.finish else "",
            usage=(self.usage.input_tokens, self.usage.output_tokens) if self.usage else None,
            first_token_ms=self.first_token_ms,
            duration_ms=self._elapsed_ms(),
            reasoning_ms=self.thought_ms,
        )
        if not message.parameters.get("continuations"):
            # A new row: nobody has rated it yet, so its footer need not ask.
            message.user_feedback, message.feedback_known = None, True
        self._unsaved = True
        self._log_end(status, error, error_kind)
        self.ended.set()
        with contextlib.suppress(Exception):
            await self._publish()
        if await self.save_final():
            return
        # The tabs see how the reply ended, and that it is not stored yet; it
        # stays registered (in memory, a second send refused, the sweep and
        # settle leaving its row alone) until a write succeeds.
        self.save_notice = _("Not saved yet — retrying…")
        await self._show_final()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.CHAT_FINAL_SAVE_RETRY_SECONDS
        pause = FINAL_SAVE_FIRST_PAUSE
        while loop.time() + pause < deadline:
            await asyncio.sleep(pause)  # backoff between attempts, not synchronisation
            if await self.save_final():
                return
            pause = min(pause * 2, FINAL_SAVE_MOST_PAUSE)
        logger.error(
            "reply %s could not be saved for %s s; it is kept and retried at every tick",
            message.id,
            settings.CHAT_FINAL_SAVE_RETRY_SECONDS,
        )
        self.save_notice = _("Not saved yet: the database is busy. The reply is kept and saving is retried.")
        await self._show_final()

    @property
    def unsaved(self) -> bool:
        """True while the reply has ended but its final write has not succeeded."""
        return self._unsaved

    async def save_final(self, *, wait: bool = True) -> bool:
        """One attempt at the ended reply's final write (each waits at most
        CHAT_WRITE_LOCK_SECONDS for the lock); True once it is saved.  The
        attempt that saves it sends every tab the bubble (without a notice),
        unregisters the reply and runs ``then``.  Safe to call from the
        reply's own retries, the durability ticks and at shutdown at once;
        with ``wait`` False it returns False at once while another attempt
        is under way."""
        if not wait and self._saving.locked():
            return False
        async with self._saving:
            if not self._unsaved:
                return True
            try:
                if self._keep is not None:
                    self._keep(self.message)  # a temporary chat's reply: no row to write
                else:
                    await _write_final(self.message)
            except Exception as exc:
                if await _deleted(self.message):
                    # Stopped for its conversation's deletion, which did not wait for this save.
                    logger.info("reply %s ended after its conversation was deleted", self.message.id)
                else:
                    if not self._save_failures:
                        logger.warning(
                            "could not save reply %s yet (%s: %s); retrying", self.message.id, type(exc).__name__, exc
                        )
                    self._save_failures += 1
                    return False
            self._unsaved = False
        if self._save_failures:
            logger.warning("saved reply %s after %d failed attempts", self.message.id, self._save_failures)
        self.save_notice = ""
        try:
            await self._show_final()
        finally:
            _unregister(self)
            # Only now: a client that sends again on run_end finds no reply being written.
            self._log("run_end", None)
            with contextlib.suppress(Exception):
                await self._publish()
            await self._end_control()
            self.done.set()
        message = self.message
        if self._then is not None and message.status == Message.Status.COMPLETE:
            _after.add(task := asyncio.create_task(self._then(message), context=contextvars.Context()))
            task.add_done_callback(_after.discard)
        return True

    async def _show_final(self) -> None:
        """Send every tab the reply's final bubble, with ``save_notice`` if any."""
        # Set before the broadcast's first await: a socket joining meanwhile
        # takes the final bubble as its snapshot.
        self.final_html = frames.bubble(self.message, notice=self.save_notice)
        try:
            # With the final bubble, every tab's "still being written" notice goes.
            html = self.final_html + frames.composer_error("")
            await frames.broadcast(self.conversation_id, html, final=str(self.message.id))
        except Exception:
            logger.exception("could not send the final bubble of reply %s", self.message.id)

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


@db.background
def _write_final(message: Message) -> None:
    with db.bounded_atomic(settings.CHAT_WRITE_LOCK_SECONDS):
        message.save_finished()


def finish_reason(message: Message) -> str:
    """How a run ended, normalised for the API: the provider's reason when it
    completed (``stop``, ``length``, ...), else ``stopped``, ``interrupted``, ``error``."""
    if message.status == Message.Status.COMPLETE:
        return message.finish_reason or "stop"
    return {Message.Status.STOPPED: "stopped", Message.Status.INTERRUPTED: "interrupted"}.get(message.status, "error")


def reply_result(message: Message) -> dict:
    """A reply as the API gives it when it ended (also inside ``run_end``)."""
    used = message.run_usage
    return {
        "id": str(message.id),
        "status": str(message.status),
        "model": message.model_key,
        "content": message.content,
        "reasoning": message.reasoning,
        "finish_reason": finish_reason(message) if message.status != Message.Status.STREAMING else None,
        "error": {"kind": message.error_kind or "internal", "message": message.error} if message.error else None,
        "usage": {"input_tokens": message.input_tokens, "output_tokens": message.output_tokens}
        if message.input_tokens is not None or message.output_tokens is not None
        else ({"input_tokens": used.input_tokens, "output_tokens": used.output_tokens} if used is not None else None),
        "first_token_ms": message.first_token_ms,
        "duration_ms": message.duration_ms,
    }
