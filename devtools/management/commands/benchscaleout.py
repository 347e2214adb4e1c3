"""Measure the two-worker path: joiners' snapshots, Redis traffic, checkpoint writes.

Starts the fake provider and two workers (daphne) on this database and
``REDIS_URL``.  For each of ``--conversations`` conversations a client on
worker A sends a message; part-way through the reply a second client joins the
same conversation through worker B.  It reports:

* how long a joiner waits for its snapshot (from opening the socket, and from
  the end of the handshake, to the bubble that the live frames continue);
* whether every joiner's text (snapshot, then live frames) equals the reply
  A's client saw, token for token: no gap, nothing twice;
* frames delivered per second and Redis commands per second during the run;
* database writes per reply, and how many of them were checkpoints.

Example (PostgreSQL and Redis)::

    DJANGO_DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite REDIS_URL=redis://127.0.0.1:6379/0 \\
        python manage.py benchscaleout --conversations 20
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import tempfile
import time
from pathlib import Path

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from conversations.stats import percentile
from devtools.benchstats import FINAL, TOKEN, prepare, provider_options, rounded
from devtools.processes import app_server, database_env, fake_provider
from devtools.streamview import StreamView, has_delta

BUBBLE = re.compile(r'class="msg msg-assistant status-streaming')


class Command(BaseCommand):
    help = "Two workers on Redis: joiners' snapshot time, frames/s carried, checkpoint writes per reply."

    def add_arguments(self, parser):
        parser.add_argument("--conversations", type=int, default=20, help="Concurrent conversations (20).")
        parser.add_argument("--tokens", type=int, default=200, help="Tokens per reply (200).")
        parser.add_argument("--delay", type=float, default=0.02, help="Seconds between tokens (0.02).")
        parser.add_argument("--first-delay", type=float, default=0.2, help="Seconds to the first token (0.2).")
        parser.add_argument("--timeout", type=float, default=60.0, help="Give up on a conversation after this long.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, **options):
        if not settings.REDIS_URL:
            raise CommandError("Set REDIS_URL: two workers need a shared channel layer.")
        call_command("migrate", verbosity=0)
        cookie, conversations = prepare(options["conversations"])
        writes = [Path(tempfile.mkstemp(prefix="chat-writes-", suffix=".json")[1]) for _ in range(2)]
        base = {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OPENAI_API_KEY": "bench",
            "CHAT_MODELS": "openai:fake-timestamped",
            "CHAT_DEMO_MODEL": "0",
            "REDIS_URL": settings.REDIS_URL,
            **database_env(),
        }
        with fake_provider({"DJANGO_SECRET_KEY": settings.SECRET_KEY}, *provider_options(options)) as provider:
            base["OPENAI_BASE_URL"] = provider.url + "/v1"
            workers = [app_server({**base, "CHAT_SQL_WRITES_FILE": str(path)}).start() for path in writes]
            try:
                stats = redis.Redis.from_url(settings.REDIS_URL)
                commands_before = stats.info("stats")["total_commands_processed"]
                started = time.monotonic()
                results = asyncio.run(self._run(workers, cookie, conversations, options))
                elapsed = time.monotonic() - started
                commands = stats.info("stats")["total_commands_processed"] - commands_before
            finally:
                for worker in workers:
                    worker.stop()
        counts: dict[str, int] = {}
        for path in writes:
            for key, value in json.loads(path.read_text() or "{}").items():
                counts[key] = counts.get(key, 0) + value
            path.unlink(missing_ok=True)
        report = self._report(results, counts, elapsed, commands, options)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                self.stdout.write(f"{key:36} {value}")

    async def _run(self, workers, cookie, conversations, options):
        import websockets

        a, b = workers
        reply_seconds = options["first_delay"] + options["tokens"] * options["delay"]

        def connect(worker, conversation):
            return websockets.connect(
                f"ws://127.0.0.1:{worker.port}/ws/conversations/{conversation.id}/",
                origin=worker.url,
                additional_headers={"Cookie": cookie},
                max_size=None,
                open_timeout=30,
            )

        async def one(conversation) -> dict:
            result = {"frames": 0}
            async with connect(a, conversation) as on_a:
                await asyncio.sleep(random.uniform(0, 1))  # spread the sends over 1 s
                await on_a.send(json.dumps({"action": "send", "text": "bench"}))
                owner = asyncio.create_task(self._read(on_a, result))
                # Join somewhere in the middle of the reply.
                await asyncio.sleep(random.uniform(0.25, 0.75) * reply_seconds)
                opened = time.monotonic()
                async with connect(b, conversation) as on_b:
                    handshake = time.monotonic()
                    joined = await self._join(on_b, result)
                result["snapshot_ms"] = (joined["snapshot_at"] - opened) * 1000
                result["snapshot_after_handshake_ms"] = (joined["snapshot_at"] - handshake) * 1000
                result["joiner_tokens"] = joined["tokens"]
                await owner
            return result

        # A lost final bubble must show as an error, not hang the benchmark.
        return await asyncio.gather(
            *(asyncio.wait_for(one(c), options["timeout"]) for c in conversations), return_exceptions=True
        )

    async def _read(self, ws, result: dict) -> None:
        while True:
            frame = await ws.recv()
            result["frames"] += 1
            if FINAL.search(frame):
                result["final_tokens"] = TOKEN.findall(frame)
                return

    async def _join(self, ws, result: dict) -> dict:
        """The joiner's view, applied as the browser would: the last streaming
        bubble before the first live frame is its snapshot, and the stream
        frames after it append finished blocks, replace the open tail or
        extend it."""
        view = StreamView()
        snapshot_at, live = 0.0, False
        while True:
            frame = await ws.recv()
            now = time.monotonic()
            result["frames"] += 1
            if FINAL.search(frame):
                return {"snapshot_at": snapshot_at or now, "tokens": TOKEN.findall(view.html)}
            if has_delta(frame):
                view.apply([frame])
                live = True
            elif BUBBLE.search(frame) and not live:
                view, snapshot_at = StreamView(frame), now

    def _report(self, results, counts, elapsed, commands, options) -> dict:
        ok = [r for r in results if isinstance(r, dict)]
        failed = [r for r in results if not isinstance(r, dict)]
        errors = sorted({f"{type(r).__name__}: {r}" for r in failed})
        snapshot = [r["snapshot_ms"] for r in ok]
        after_handshake = [r["snapshot_after_handshake_ms"] for r in ok]
        exact = sum(1 for r in ok if r["joiner_tokens"] == r.get("final_tokens"))
        replies = len(ok)
        updates = counts.get("UPDATE conversations_message", 0)
        frames = sum(r["frames"] for r in ok)
        total_writes = sum(counts.values())
        return {
            "conversations": options["conversations"],
            "tokens_per_reply": options["tokens"],
            "failed": len(failed),
            "errors": errors[:5],
            "joiners_exact (no gap, no repeat)": f"{exact}/{len(results)}",
            "snapshot_ms_p50": rounded(percentile(snapshot, 50), 1),
            "snapshot_ms_p95": rounded(percentile(snapshot, 95), 1),
            "snapshot_ms_max": rounded(max(snapshot, default=None), 1),
            "snapshot_after_handshake_ms_p50": rounded(percentile(after_handshake, 50), 1),
            "snapshot_after_handshake_ms_p95": rounded(percentile(after_handshake, 95), 1),
            "frames_delivered": frames,
            "frames_per_s": round(frames / elapsed, 1),
            "redis_commands_per_s": round(commands / elapsed, 1),
            "db_writes_per_reply": round(total_writes / replies, 2) if replies else None,
            "checkpoint_writes_per_reply": round((updates - replies) / replies, 2) if replies else None,
            "db_writes_by_table": counts,
            "elapsed_s": round(elapsed, 2),
        }
