"""Crash durability: checkpoints, heartbeats and the sweep of dead workers' replies.

A reply is written once when it ends (``Message.save_finished``).  So that a
worker that dies (``kill -9``, a lost machine) loses at most a few seconds of
text, and so that nobody waits forever on a reply nobody writes, each worker
process runs one small loop (``_tick``) while it has replies or sockets:

* **checkpoint**: every ``CHAT_CHECKPOINT_SECONDS`` the text of each of its
  replies that grew is written, with a fresh ``heartbeat_at``, in one UPDATE
  for all of them (not one per reply, and never one per token);
* **heartbeat**: every ``CHAT_HEARTBEAT_SECONDS`` its replies that did not grow
  (a slow first token) get a fresh ``heartbeat_at``, again in one UPDATE;
* **sweep**: every ``CHAT_HEARTBEAT_SECONDS`` (and at once when a process
  starts serving) a ``streaming`` reply that no live worker has vouched for in
  ``CHAT_HEARTBEAT_TIMEOUT_SECONDS`` is marked ``interrupted``, keeping its
  checkpointed text, and its open tabs are sent the final bubble (with
  Continue and Retry).

These writes run on the process's writer thread (``conversations.db``), not
on the sockets' shared database thread, and wait a bounded time for the
database's write lock: a checkpoint at most ``CHECKPOINT_LOCK_SECONDS`` (one
that could not wait is written at the next tick), the sweep at most
``CHAT_WRITE_LOCK_SECONDS``.  Every tick also tries again the final write of
each reply that ended but is not saved yet (``generation.unsaved()``).

With the in-memory channel layer there is one process, so a ``streaming`` reply
it does not run is dead at once: ``settle`` marks it without waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from conversations import db, frames, generation
from conversations.models import Message

logger = logging.getLogger(__name__)

_worker: asyncio.Task | None = None
_sockets = 0  # conversation sockets open in this process
_last_sweep = -math.inf  # loop time of the last sweep

# A checkpoint waits this long for the write lock at most: a writer holding it
# longer delays only this checkpoint (the next tick writes the text again),
# not the final writes queued behind it on the writer thread.
CHECKPOINT_LOCK_SECONDS = 0.5


def socket_opened() -> None:
    global _sockets
    _sockets += 1
    ensure_running()


def socket_closed() -> None:
    global _sockets
    _sockets = max(0, _sockets - 1)


def open_sockets() -> int:
    """Conversation sockets open in this process now."""
    return _sockets


def ensure_running() -> None:
    """Start this process's loop if it is not running on the current event loop.

    Cheap enough to call on every request: the loop sweeps at once when it
    starts (so a restarted worker cleans up after the one that died), then
    keeps going while the process has replies or sockets, and stops when idle.
    """
    global _worker
    loop = asyncio.get_running_loop()
    if _worker is not None and not _worker.done() and _worker.get_loop() is loop:
        return
    # A fresh context: the loop outlives the request or socket that started it.
    _worker = loop.create_task(_run(), name="chat-durability", context=contextvars.Context())


async def interrupt_all(within: float = 10.0) -> None:
    """End every reply this process is writing as ``interrupted``, saved with
    all its text, and wait (bounded) until they are written; a reply whose
    final write has still not succeeded gets one last attempt."""
    running = generation.running()
    for reply in running:
        reply.interrupt()
    if running:
        await asyncio.wait([asyncio.ensure_future(reply.done.wait()) for reply in running], timeout=within)
    for reply in generation.unsaved():
        if not await reply.save_final():
            logger.error("reply %s could not be saved before shutdown: it keeps its last checkpoint", reply.message.id)


async def _run() -> None:
    loop = asyncio.get_running_loop()
    interval = min(settings.CHAT_CHECKPOINT_SECONDS, settings.CHAT_HEARTBEAT_SECONDS)
    next_tick = loop.time()
    while True:
        try:
            await _tick(loop.time())
        except Exception:
            logger.exception("checkpoint or sweep failed; trying again at the next tick")
        if not generation.running() and not _sockets:
            return
        # Fixed rate, not fixed delay: a checkpoint is never more than one
        # interval old, however long the writes took.
        next_tick += interval
        await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def _tick(now: float) -> None:
    global _last_sweep
    for reply in generation.unsaved():
        if not await reply.save_final(wait=False):
            break  # the database still refuses: the others would wait for nothing
    checkpoints, beats = _due(now)
    if checkpoints or beats:
        try:
            await _write_checkpoints(checkpoints, beats)
        except Exception as exc:
            for running in generation.running():
                if running.message.id in checkpoints or running.message.id in beats:
                    running.checkpoint_lost()
            if not db.is_busy(exc):
                raise
            logger.warning("checkpoint skipped: the database stayed locked; written at the next tick")
    if now - _last_sweep >= settings.CHAT_HEARTBEAT_SECONDS:
        _last_sweep = now
        await sweep()


def _due(now: float) -> tuple[dict[UUID, tuple[str, str]], list[UUID]]:
    """What to write now: the text of replies that grew since their last
    checkpoint, and the ids of replies whose heartbeat is due.  Taken on the
    event loop, so it is consistent with what the generations hold."""
    checkpoints: dict[UUID, tuple[str, str]] = {}
    beats: list[UUID] = []
    for running in generation.running():
        text = running.checkpoint(now)
        if text is not None:
            checkpoints[running.message.id] = text
        elif running.heartbeat_due(now, settings.CHAT_HEARTBEAT_SECONDS):
            beats.append(running.message.id)
    return checkpoints, beats


@db.background
def _write_checkpoints(texts: dict[UUID, tuple[str, str]], beats: list[UUID]) -> None:
    with db.bounded_atomic(CHECKPOINT_LOCK_SECONDS):
        Message.objects.checkpoint(texts, beats)


def _dead(queryset):
    """The streaming replies in ``queryset`` whose worker is gone."""
    replies = queryset.streaming().exclude(conversation_id__in=[g.conversation_id for g in generation.running()])
    if not settings.REDIS_URL:
        return replies  # one process: a reply it does not run is dead
    return replies.silent_since(timezone.now() - timedelta(seconds=settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS))


def settle(conversation_id: UUID) -> list[Message]:
    """Synchronous: mark the conversation's dead replies interrupted and return
    them.  Used before a new reply is started and when a socket joins."""
    return _dead(Message.objects.filter(conversation_id=conversation_id)).interrupt()


def settle_owner(user) -> list[Message]:
    """Synchronous: as ``settle``, for every conversation of ``user`` (before
    their replies in flight are counted against a limit)."""
    return _dead(Message.objects.of_owner(user)).interrupt()


@db.background
def _settle_all() -> list[Message]:
    with db.bounded_atomic(settings.CHAT_WRITE_LOCK_SECONDS):
        return _dead(Message.objects.all()).interrupt()


async def sweep() -> int:
    """Mark every dead worker's replies interrupted and tell their open tabs;
    returns how many.  In single-process mode only ``settle`` does this: a
    global sweep there could not tell a reply from a test's or a benchmark's
    other process."""
    if not settings.REDIS_URL:
        return 0
    swept = await _settle_all()
    for message in swept:
        logger.warning("reply %s was left streaming by a worker that stopped; marked interrupted", message.id)
        await frames.announce(message)
    return len(swept)
