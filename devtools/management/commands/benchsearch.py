"""Server time of search (``conversations.search.search``: the queries and
the snippets, no HTTP) over a library made by ``seedlibrary``::

    python manage.py seedlibrary --conversations 10000 --messages 20 --user bench
    python manage.py benchsearch --user bench --repeat 30

For each query (a common word, a rare word, CJK of 2 and 4 characters, an
emoji, no match) it runs the search once to warm the caches, then
``--repeat`` times, and reports the median and the 95th percentile in
milliseconds (wall clock) with the number of results, and the median CPU
time of this process (on SQLite the whole search runs in it: the part of
the wall time that is not waiting for a busy machine's cores).
"""

from __future__ import annotations

import json
import os
import statistics
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection

from conversations.search import search

QUERIES = [
    ("common word", "model"),
    ("rare word", "quixotry"),
    ("CJK, 2 characters", "你好"),
    ("CJK, 4 characters", "人工智能"),
    ("Japanese, 3 characters", "ありが"),
    ("emoji", "👋🏽"),
    ("no match", "xylographic"),
    # The worst cases: no index answers, the newest conversations are scanned.
    ("2 characters, no match", "zq"),
    ("punctuation only, no match", "!?!"),
]


class Command(BaseCommand):
    help = "Median and p95 server time of search over a seeded library."

    def add_arguments(self, parser):
        parser.add_argument("--user", default="bench")
        parser.add_argument("--repeat", type=int, default=30)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        user = get_user_model().objects.get(username=options["user"])
        rows = []
        for label, query in QUERIES:
            results = search(user, query)  # warm-up
            times, cpu = [], []
            for _ in range(options["repeat"]):
                started, started_cpu = time.perf_counter(), time.process_time()
                search(user, query)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            times.sort()
            rows.append(
                {
                    "query": label,
                    "text": query,
                    "titles": len(results.titles),
                    "messages": len(results.messages),
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
                    # This process's CPU: all of it on SQLite (in process), the ORM and snippets only on PostgreSQL.
                    "cpu_median_ms": round(statistics.median(cpu), 1),
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps({"database": connection.vendor, "rows": rows}, ensure_ascii=False))
            return
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        self.stdout.write(f"database: {connection.vendor}, {options['repeat']} runs each, load average {load}\n")
        self.stdout.write("| query | text | titles | messages | median ms | p95 ms | process CPU median ms |")
        self.stdout.write("| --- | --- | --- | --- | --- | --- | --- |")
        for row in rows:
            self.stdout.write(
                f"| {row['query']} | {row['text']} | {row['titles']} | {row['messages']} "
                f"| {row['median_ms']} | {row['p95_ms']} | {row['cpu_median_ms']} |"
            )
