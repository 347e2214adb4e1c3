"""Opt-in measurement for benchmarks: never active unless its setting is set
(``devtools.apps`` reads them; both come from the environment).

``CHAT_SQL_WRITES_FILE=path``: count every INSERT/UPDATE/DELETE this process
runs, by table, and write the counts there as JSON at exit, so that a
benchmark can report database writes per reply from outside the server.

``CHAT_STALLS_FILE=path``: time the event loop's lag and every garbage
collection of this process, and write them there as JSON at exit.  The lag
sampler is a task on the server's event loop that sleeps ``LAG_INTERVAL`` and
records how late it woke up; it is started when daphne's reactor starts
running (nothing runs on the loop before that).  GC pauses
come from ``gc.callbacks``.  Events above ``RECORD_MS`` are kept with their
wall-clock time, so a benchmark can keep only those of its streaming window.

``CHAT_TRACEMALLOC_DIR=dir``: trace every allocation from start-up, and on
each SIGUSR1 write a tracemalloc snapshot to ``dir/<n>.snapshot`` (after a
full collection), so a benchmark can say which lines hold the memory that
grows from one round of replies to the next.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import itertools
import json
import re
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

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


def call_when_loop_runs(callback) -> None:
    """Call ``callback()`` when daphne's reactor starts running.

    Django's apps are ready before the server's loop starts.  daphne installs
    Twisted's asyncio reactor when ``daphne.server`` is imported, before it
    imports the ASGI app, so the reactor's public ``callWhenRunning`` takes the
    call (as in ``conversations.lifecycle``); daphne has made the reactor's
    loop the current event loop by then.  Outside daphne (tests, management
    commands) there is no reactor, or it never runs, and nothing is called.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return  # not under daphne: no loop to sample
    reactor.callWhenRunning(callback)


# --- event-loop lag and GC pauses -------------------------------------------
LAG_INTERVAL = 0.01  # seconds between two samples of the loop's lag
RECORD_MS = 10.0  # lags and pauses above this are kept with their time


class StallMonitor:
    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []  # (time.time(), ms) above RECORD_MS
        self.max_lag_ms = 0.0
        self.lag_samples = 0
        self.gc_pauses: list[tuple[float, int, float]] = []  # (time.time(), generation, ms) above RECORD_MS
        self.gc_max_ms = {0: 0.0, 1: 0.0, 2: 0.0}
        self.gc_counts = {0: 0, 1: 0, 2: 0}
        self.gc_total_ms = 0.0
        self._gc_started = 0.0
        self._sampler: asyncio.Future | None = None

    # gc.callbacks: called with ("start" | "stop", {"generation": n, ...})
    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_started) * 1000
        generation = info.get("generation", 0)
        self.gc_counts[generation] += 1
        self.gc_total_ms += ms
        self.gc_max_ms[generation] = max(self.gc_max_ms[generation], ms)
        if ms > RECORD_MS:
            self.gc_pauses.append((time.time(), generation, round(ms, 2)))

    async def sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            ms = max(0.0, (loop.time() - expected) * 1000)
            self.lag_samples += 1
            self.max_lag_ms = max(self.max_lag_ms, ms)
            if ms > RECORD_MS:
                self.lags.append((time.time(), round(ms, 2)))

    def start_when_loop_runs(self) -> None:
        call_when_loop_runs(self._start_sampling)

    def _start_sampling(self) -> None:
        # On the reactor's thread, before or as its loop starts: the current loop is daphne's.
        self._sampler = asyncio.ensure_future(self.sample_lag(), loop=asyncio.get_event_loop())

    def report(self) -> dict:
        return {
            "lag_samples": self.lag_samples,
            "lag_interval_ms": LAG_INTERVAL * 1000,
            "max_lag_ms": round(self.max_lag_ms, 2),
            "lags": self.lags,
            "gc_counts": self.gc_counts,
            "gc_max_ms": {k: round(v, 2) for k, v in self.gc_max_ms.items()},
            "gc_total_ms": round(self.gc_total_ms, 2),
            "gc_pauses": self.gc_pauses,
            "record_ms": RECORD_MS,
        }


def record_stalls_to(path: str) -> StallMonitor:
    monitor = StallMonitor()
    gc.callbacks.append(monitor.on_gc)
    monitor.start_when_loop_runs()

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(monitor.report(), out)

    atexit.register(dump)
    return monitor


TRACE_FRAMES = 12


def snapshot_on_signal(directory: str) -> None:
    tracemalloc.start(TRACE_FRAMES)
    numbers = itertools.count(1)

    def dump(signum, frame) -> None:
        gc.collect()
        tracemalloc.take_snapshot().dump(str(Path(directory) / f"{next(numbers)}.snapshot"))

    signal.signal(signal.SIGUSR1, dump)


def growth(first: Path, last: Path, top: int = 12) -> list[str]:
    """Where the memory traced at ``last`` exceeds ``first``'s, biggest first:
    size and count added, and the innermost frames outside the standard library."""
    before, after = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    total = sum(s.size for s in after.statistics("filename")) - sum(s.size for s in before.statistics("filename"))
    lines = [f"{total / 1024:+.1f} KB traced in all"]
    grown = [stat for stat in after.compare_to(before, "traceback") if stat.size_diff > 0]
    for stat in grown[:top]:
        frames = [f for f in stat.traceback if "/lib/python3" not in f.filename or "site-packages" in f.filename]
        where = "; ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in (frames or list(stat.traceback))[-4:])
        lines.append(f"{stat.size_diff / 1024:+.1f} KB in {stat.count_diff:+d} blocks: {where}")
    return lines
