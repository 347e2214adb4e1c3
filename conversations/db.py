"""Writes that wait a bounded time for the database's write lock, and the
thread this process's background writes run on.

SQLite lets one connection write at a time (a second waits out its busy
timeout, 20 s by default here); PostgreSQL makes a write wait for the row and
table locks it needs.  A write that must not wait that long runs in
``bounded_atomic(seconds)``: it waits at most ``seconds`` and then raises
OperationalError, which ``is_busy`` recognises.

``background(fn)`` runs ``fn`` on this process's one writer thread:
checkpoints, heartbeats, replies' final writes, titles and the sweep;
``turn(fn)`` on one of a few turn threads: setting up a send, Retry, Continue,
Edit or a branch switch.  The sockets' own reads run on channels' one shared
database thread; a write waiting for the lock there would hold up every
socket's handshake behind it.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.db import Error, OperationalError, connection, connections, transaction

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-writer")
TURN_THREADS = 4  # sends set up at once in one process, each waiting for the lock on its own
_turns = ThreadPoolExecutor(max_workers=TURN_THREADS, thread_name_prefix="chat-turn")

PG_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out (or NOWAIT found a lock)


def background(fn):
    """``fn`` as a coroutine function run on the writer thread, with channels'
    connection hygiene around it.  A database error other than a busy lock
    closes the thread's connection first, so that the next call opens a fresh
    one (PostgreSQL restarted: the old connection is dead)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Error as exc:
            if not is_busy(exc):
                with contextlib.suppress(Exception):
                    connection.close()
            raise

    return database_sync_to_async(run, thread_sensitive=False, executor=_writer)


def turn(fn):
    """``fn`` as a coroutine function run on a turn thread, with channels'
    connection hygiene; the thread's connections are closed after each call
    (sends are rare beside tokens, and no idle connection is left per thread)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return database_sync_to_async(run, thread_sensitive=False, executor=_turns)


def close_writer_connections(timeout: float = 10.0) -> None:
    """Close the writer thread's connections (a test run's end, before its database is dropped)."""
    _writer.submit(connections.close_all).result(timeout=timeout)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that gave up waiting for a lock: SQLite's
    "database is locked", PostgreSQL's lock_timeout."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc).lower()
    if "database is locked" in text or "database table is locked" in text:
        return True
    return getattr(exc.__cause__, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE


@contextlib.contextmanager
def bounded_atomic(seconds: float):
    """``transaction.atomic()`` whose writes wait at most ``seconds`` for a
    lock, then raise OperationalError (``is_busy``) with nothing written.

    SQLite takes its write lock when the transaction begins (``BEGIN
    IMMEDIATE``), so the connection's busy timeout is lowered around it;
    PostgreSQL's ``lock_timeout`` is set for this transaction only."""
    millis = max(1, int(seconds * 1000))
    if connection.vendor != "sqlite":
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{millis}ms'")
            yield
        return
    connection.ensure_connection()
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        previous = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout = {millis}")
    try:
        with transaction.atomic():
            yield
    finally:
        if connection.connection is raw:
            with contextlib.suppress(Error), connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")
