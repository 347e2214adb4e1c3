"""Writes that wait a bounded time for the database's write lock.

SQLite lets one connection write at a time (a second waits out its busy
timeout, 20 s by default here); PostgreSQL makes a write wait for the row and
table locks it needs.  A write that must not wait that long runs in
``bounded_atomic(seconds)``: it waits at most ``seconds`` and then raises
OperationalError, which ``is_busy`` recognises.
"""

from __future__ import annotations

import contextlib

from django.db import Error, OperationalError, connection, transaction

PG_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out (or NOWAIT found a lock)


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
