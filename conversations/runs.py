"""A run's typed events for API clients, wherever the run is being written.

``listen(run_id, user, after)`` yields the run's events after number
``after`` in batches, then the live ones until ``run_end``: no gap and no
duplicate, whichever worker writes it.

- A run this process writes (or wrote in the last ``CHAT_RUN_REPLAY_SECONDS``,
  if the API started it): read from its ``Generation.run_log``.
- A run another worker writes: this process joins the run's group, then asks
  that worker for the events after ``after`` (``frames.request_run_events``);
  it answers with those up to what it has sent the group, and the group gets
  every later one.  Events are numbered, so what comes twice is dropped.
- A run that ended (and is no longer in memory): its stored result, as the
  whole run in a few events from the start, or as its ``run_end`` alone (which
  carries the whole reply) after a given event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from uuid import UUID

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.translation import gettext as _

from conversations import durability, frames, generation
from conversations.generation import Generation
from conversations.models import Message

logger = logging.getLogger(__name__)

RECENT_MOST = 500  # ended runs kept for replay, at most
ANSWER_WAIT = 3.0  # s: how long the worker running a run has to answer a joiner

_recent: OrderedDict[str, list] = OrderedDict()  # run id -> [when it ended (inf: running), the run]
_kept: set[asyncio.Task] = set()


class RunNotFound(Exception):
    """No run of this id that the user may read."""


def keep(running: Generation) -> None:
    """Keep ``running``'s events for CHAT_RUN_REPLAY_SECONDS after it ends, so
    that a client reconnecting just after the end still gets exact replay."""

    # Kept from now, not from its end: a run that ends at once (an error) is
    # still found by the client that asks for its events next.
    entry = _recent[str(running.message.id)] = [math.inf, running]
    _forget_old()

    async def kept() -> None:
        await running.done.wait()
        entry[0] = time.monotonic()

    task = asyncio.get_running_loop().create_task(kept())
    _kept.add(task)
    task.add_done_callback(_kept.discard)


def _forget_old() -> None:
    oldest = time.monotonic() - settings.CHAT_RUN_REPLAY_SECONDS
    for key, (ended, _running) in list(_recent.items()):
        if ended < oldest or (len(_recent) > RECENT_MOST and ended < math.inf):
            del _recent[key]


def local(run_id: UUID | str) -> Generation | None:
    """The run if this process writes it or keeps it for replay."""
    key = str(run_id)
    kept = _recent.get(key)
    if kept is not None:
        return kept[1]
    for running in generation.running():
        if str(running.message.id) == key:
            return running
    return None


def stateless(running: Generation) -> bool:
    return running.conversation_id == running.message.id


@database_sync_to_async
def _owned_reply(run_id: UUID | str, user) -> Message | None:
    """The reply of run ``run_id`` if ``user`` owns its conversation, after
    settling a dead worker's (so that a reply nobody writes any more ends)."""
    reply = (
        Message.objects.of_owner(user)
        .filter(pk=run_id, role=Message.Role.ASSISTANT)
        .select_related("conversation")
        .first()
    )
    if reply is not None and reply.is_streaming:
        durability.settle(reply.conversation_id)
        reply.refresh_from_db()
    return reply


async def listen(run_id: UUID | str, user, after: int = 0) -> AsyncIterator[list[dict]]:
    """The run's events after number ``after``, in batches, to its end.
    RunNotFound (before anything is yielded) unless ``user`` may read it."""
    running = local(run_id)
    if running is not None:
        if running.owner_id != user.pk:
            raise RunNotFound
        async for batch in _from_log(running, after):
            yield batch
        return
    reply = await _owned_reply(run_id, user)
    if reply is not None and not reply.is_streaming:
        yield stored(reply, after)
        return
    # Being written by another worker: a conversation's reply, or a stateless run (no row).
    control = reply.conversation_id if reply is not None else run_id
    async for batch in _from_worker(control, run_id, user, after, reply):
        yield batch


async def state(run_id: UUID | str, user) -> dict:
    """The run's result (``generation.reply_result``) if it ended; while it
    runs here, its reply so far; RunNotFound unless ``user`` may read it."""
    running = local(run_id)
    if running is not None:
        if running.owner_id != user.pk:
            raise RunNotFound
        if running.ended.is_set():
            return generation.reply_result(running.message)
        return {
            **generation.reply_result(running.message),
            "content": running.prefix + "".join(running.text),
            "reasoning": "".join(running.reasoning),
        }
    reply = await _owned_reply(run_id, user)
    if reply is None:
        raise RunNotFound  # (a stateless run another worker writes is read through its events)
    return generation.reply_result(reply)


async def stop(run_id: UUID | str, user) -> None:
    """Stop the run wherever it is being written.  RunNotFound for a run
    here, or a conversation's reply, that is not ``user``'s; a stateless run
    that is not here is asked for on every worker (and stops if it is theirs)."""
    running = local(run_id)
    if running is not None:
        if running.owner_id != user.pk:
            raise RunNotFound
        running.stop()
        return
    reply = await _owned_reply(run_id, user)
    if reply is None and await _is_reply(run_id):
        raise RunNotFound
    control = reply.conversation_id if reply is not None else run_id
    await frames.request_run_stop(control, run_id, user.pk)


@database_sync_to_async
def _is_reply(run_id) -> bool:
    return Message.objects.filter(pk=run_id).exists()


def stored(reply: Message, after: int = 0) -> list[dict]:
    """The events of a run that ended, from its row: the whole run when
    ``after`` is 0, else its ``run_end`` (which carries the whole reply)."""
    head = {"run_id": str(reply.id), "model": reply.model_key, "tags": []}
    result = generation.reply_result(reply)
    events = [("run_end", {"reply": result})]
    if not after:
        events[:0] = [("run_start", {"conversation": str(reply.conversation_id), "metadata": {}})]
        if reply.reasoning:
            events.insert(1, ("reasoning_delta", {"text": reply.reasoning}))
        if reply.content:
            events.insert(len(events) - 1, ("text_delta", {"text": reply.content}))
        if result["error"]:
            events.insert(len(events) - 1, ("error", result["error"]))
        if result["usage"]:
            events.insert(len(events) - 1, ("usage", {**result["usage"], "estimated": False}))
        events.insert(len(events) - 1, ("finish", {"reason": result["finish_reason"]}))
    return [
        {"id": number, "event": kind, **head, "data": data} for number, (kind, data) in enumerate(events, after + 1)
    ]


async def _from_log(running: Generation, after: int) -> AsyncIterator[list[dict]]:
    """Events from this process's run, at most one batch per frame window
    (a client is written to as often as a tab is, not once per token)."""
    loop = asyncio.get_running_loop()
    position, sent_at = min(after, len(running.run_log)), -1e9
    while True:
        await running.log_grown(position)
        wait = sent_at + generation.frame_window() - loop.time()
        if wait > 0 and not running.log_closed:
            await asyncio.sleep(wait)  # pacing: what arrives meanwhile goes out in the same write
        events = running.run_events(position)
        if events:
            position += len(events)
            sent_at = loop.time()
            yield events
        if running.log_closed and position >= len(running.run_log):
            return


async def _from_worker(control, run_id, user, after: int, reply: Message | None) -> AsyncIterator[list[dict]]:
    """Events of a run another worker writes (see the module's docstring)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = frames.run_group(run_id)
    await layer.group_add(group, channel)
    inbox: asyncio.Queue = asyncio.Queue()
    reader = asyncio.get_running_loop().create_task(_read(layer, channel, inbox))
    try:
        await frames.request_run_events(control, run_id, after, user.pk, channel)
        position, held, answered = after, [], False
        while True:
            try:
                async with asyncio.timeout(None if answered else ANSWER_WAIT):
                    message = await inbox.get()
            except TimeoutError:
                # Nobody answered: the run ended meanwhile, or its worker is gone.
                yield await _unanswered(run_id, user, position, reply)
                return
            if message.get("missing"):
                raise RunNotFound
            if not message.get("replay") and not answered:
                held.append(message)  # sent to the group before our answer left: kept till then
                continue
            batches = [message, *held] if not answered else [message]
            answered, held = True, []
            for batch in batches:
                events = [event for event in batch["events"] if event["id"] > position]
                if events:
                    position = events[-1]["id"]
                    yield events
                    if events[-1]["event"] == "run_end":
                        return
    finally:
        with contextlib.suppress(Exception):
            # The reader returns by itself: cancelling a receive can lose
            # another consumer's message in channels-redis' shared receive loop.
            await asyncio.shield(layer.send(channel, {"type": "run.leave"}))
            await asyncio.wait_for(asyncio.shield(reader), 5)
        reader.cancel()
        with contextlib.suppress(Exception):
            await asyncio.shield(layer.group_discard(group, channel))


async def _read(layer, channel: str, inbox: asyncio.Queue) -> None:
    while True:
        message = await layer.receive(channel)
        if message["type"] == "run.leave":
            return
        if message["type"] == "run.events":
            inbox.put_nowait(message)


async def _unanswered(run_id, user, position: int, reply: Message | None) -> list[dict]:
    if reply is None:
        raise RunNotFound  # a stateless run that no worker has (any more)
    reply = await _owned_reply(run_id, user)
    if reply is None:
        raise RunNotFound
    if not reply.is_streaming:
        return stored(reply, position)
    logger.warning("run %s is streaming, but no worker answered a joiner", run_id)
    head = {"run_id": str(reply.id), "model": reply.model_key, "tags": []}
    error = {"kind": "unreachable", "message": _("The worker writing this reply did not answer. Try again.")}
    return [{"id": position + 1, "event": "error", **head, "data": error}]
