"""Opt-in measurement for benchmarks: never active unless its variable is set.

``CHAT_SQL_WRITES_FILE=path``: count every INSERT/UPDATE/DELETE this process
runs, by table, and write the counts there as JSON at exit, so that a
benchmark can report database writes per reply from outside the server.
"""

from __future__ import annotations

import atexit
import json
import re
import threading
from collections import Counter

from django.db.backends.signals import connection_created

_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.I)
_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _count(execute, sql, params, many, context):
    match = _WRITE.match(sql)
    if match:
        with _lock:
            _counts[f"{match.group(1).split()[0].upper()} {match.group(2)}"] += 1
    return execute(sql, params, many, context)


def _instrument(sender, connection, **kwargs) -> None:
    # Fired on every reconnect of the same wrapper: install the counter once.
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def count_writes_to(path: str) -> None:
    connection_created.connect(_instrument, weak=False)

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(dict(_counts), out)

    atexit.register(dump)
