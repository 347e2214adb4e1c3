"""Benchmark the streaming path end to end.

Starts the fake provider and the app (daphne) as separate processes, opens N
authenticated websocket clients, has each send ``--rounds`` messages (the
first sends spread over one second), and reports completion, delivered tokens
per second, added latency, frames, the server's CPU and memory, and database
writes per reply.

Added latency is measured end to end: the fake provider's ``timestamped``
scenario makes every token ``t<time.time_ns()> `` (its send time); a client
subtracts it from the time it received the first frame carrying that token.

Use its own database, e.g.::

    SQLITE_PATH=/tmp/bench.sqlite3 python manage.py benchstreams --clients 10
    python manage.py benchstreams --clients 200 --pin --json
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.core.management.base import BaseCommand

from conversations.models import Conversation, Message
from conversations.processes import app_server, database_env, fake_provider

TOKEN = re.compile(r"t(\d{19})(?!\d)")  # markdown may drop the trailing space
FINAL = re.compile(r'class="msg msg-assistant status-(?!streaming)')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.time() of each delivered token
    frames: int = 0
    replies: int = 0
    error: str = ""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Command(BaseCommand):
    help = "Benchmark N concurrent streaming websocket clients against a real server."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=10, help="Concurrent clients (default 10).")
        parser.add_argument("--rounds", type=int, default=1, help="Messages per client (default 1).")
        parser.add_argument("--tokens", type=int, default=200, help="Tokens per reply (default 200).")
        parser.add_argument("--delay", type=float, default=0.02, help="Seconds between tokens (default 0.02).")
        parser.add_argument("--first-delay", type=float, default=0.2, help="Seconds to the first token (0.2).")
        parser.add_argument("--spread", type=float, default=1.0, help="Spread the first sends over this many s.")
        parser.add_argument("--pin", action="store_true", help="Server on core 0; provider and clients on core 1.")
        parser.add_argument("--timeout", type=float, default=120.0, help="Give up on a reply after this long.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, **options):
        if options["pin"]:
            os.sched_setaffinity(0, {1})
        call_command("migrate", verbosity=0)
        n = options["clients"]
        cookies, conversations = self._prepare(n)
        writes_file = Path(tempfile.mkstemp(prefix="chat-writes-", suffix=".json")[1])
        provider_options = ["--tokens", str(options["tokens"]), "--delay", str(options["delay"])]
        provider_options += ["--first-delay", str(options["first_delay"])]
        with fake_provider(
            {"DJANGO_SECRET_KEY": settings.SECRET_KEY}, *provider_options, cpus="1" if options["pin"] else ""
        ) as provider:
            server = app_server(
                {
                    "DJANGO_DEBUG": "0",
                    "DJANGO_SECRET_KEY": settings.SECRET_KEY,
                    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                    "OPENAI_API_KEY": "bench",
                    "OPENAI_BASE_URL": provider.url + "/v1",
                    "CHAT_MODELS": "openai:fake-timestamped",
                    "CHAT_DEMO_MODEL": "0",
                    "CHAT_SQL_WRITES_FILE": str(writes_file),
                    **database_env(),
                },
                cpus="0" if options["pin"] else "",
            ).start()
            try:
                idle_rss = _rss_mb(server.pid)
                cpu_before = _cpu_seconds(server.pid)
                started = time.time()
                results, connected_rss = asyncio.run(self._run(server, cookies, conversations, options))
                elapsed = time.time() - started
                cpu = _cpu_seconds(server.pid) - cpu_before
                peak_rss = _peak_rss_mb(server.pid)
            finally:
                server.stop()
        writes = json.loads(writes_file.read_text() or "{}") if writes_file.exists() else {}
        writes_file.unlink(missing_ok=True)
        report = self._report(results, options, elapsed, cpu, idle_rss, connected_rss, peak_rss, writes)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                self.stdout.write(f"{key:32} {value}")

    def _prepare(self, n: int) -> tuple[str, list[Conversation]]:
        user, _ = get_user_model().objects.get_or_create(username="bench")
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        Message.objects.filter(conversation__owner=user, status=Message.Status.STREAMING).update(
            status=Message.Status.INTERRUPTED
        )
        conversations = [
            Conversation.objects.create(owner=user, title=f"bench {i}", model_key="openai:fake-timestamped")
            for i in range(n)
        ]
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", conversations

    async def _run(self, server, cookie, conversations, options):
        import websockets

        results = [ClientResult() for _ in conversations]
        sockets: list = []
        connected = asyncio.Event()
        connected_rss = [0.0]

        async def client(i: int, conversation: Conversation) -> None:
            result = results[i]
            url = f"ws://127.0.0.1:{server.port}/ws/conversations/{conversation.id}/"
            try:
                async with websockets.connect(
                    url,
                    origin=f"http://127.0.0.1:{server.port}",
                    additional_headers={"Cookie": cookie},
                    max_size=None,
                    open_timeout=30,
                ) as ws:
                    sockets.append(ws)
                    if len(sockets) == len(conversations):
                        connected.set()
                    await connected.wait()
                    await asyncio.sleep(options["spread"] * i / len(conversations))  # spread the first sends
                    for _ in range(options["rounds"]):
                        await ws.send(json.dumps({"action": "send", "text": f"bench {secrets.token_hex(4)}"}))
                        await asyncio.wait_for(self._read_reply(ws, result), options["timeout"])
                        result.replies += 1
            except Exception as exc:  # reported, not raised: one failed client must not hide the rest
                result.error = f"{type(exc).__name__}: {exc}"
                connected.set()

        async def sample_rss() -> None:
            await connected.wait()
            connected_rss[0] = _rss_mb(server.pid)

        await asyncio.gather(sample_rss(), *(client(i, c) for i, c in enumerate(conversations)))
        return results, connected_rss[0]

    async def _read_reply(self, ws, result: ClientResult) -> None:
        seen: set[str] = set()
        while True:
            frame = await ws.recv()
            received = time.time_ns()
            result.frames += 1
            for stamp in TOKEN.findall(frame):
                if stamp not in seen:  # the final bubble repeats every token
                    seen.add(stamp)
                    result.latencies_ms.append((received - int(stamp)) / 1e6)
                    result.arrivals.append(received / 1e9)
            if FINAL.search(frame):
                return

    def _report(self, results, options, elapsed, cpu, idle_rss, connected_rss, peak_rss, writes) -> dict:
        n = len(results)
        latencies = [v for r in results for v in r.latencies_ms]
        arrivals = [t for r in results for t in r.arrivals]
        buckets = Counter(int(t) for t in arrivals)
        tokens = len(latencies)
        replies = sum(r.replies for r in results)
        completed = sum(1 for r in results if r.replies == options["rounds"] and not r.error)
        span = (max(arrivals) - min(arrivals)) if arrivals else 0.0
        total_writes = sum(writes.values())
        return {
            "clients": n,
            "rounds": options["rounds"],
            "tokens_per_reply": options["tokens"],
            "clients_completed": completed,
            "errors": sorted({r.error for r in results if r.error})[:5],
            "replies": replies,
            "tokens_delivered": tokens,
            "tokens_per_s_avg": round(tokens / span, 1) if span else 0.0,
            "tokens_per_s_peak": max(buckets.values()) if buckets else 0,
            "latency_ms_p50": round(_percentile(latencies, 50), 2),
            "latency_ms_p95": round(_percentile(latencies, 95), 2),
            "latency_ms_p99": round(_percentile(latencies, 99), 2),
            "latency_ms_max": round(max(latencies), 2) if latencies else None,
            "latency_ms_mean": round(statistics.fmean(latencies), 2) if latencies else None,
            "frames": sum(r.frames for r in results),
            "frames_per_reply": round(sum(r.frames for r in results) / replies, 1) if replies else None,
            "frames_per_s": round(sum(r.frames for r in results) / elapsed, 1) if elapsed else 0.0,
            "wall_seconds": round(elapsed, 2),
            "server_cpu_seconds": round(cpu, 3),
            "server_cpu_ms_per_token": round(cpu * 1000 / tokens, 4) if tokens else None,
            "server_rss_idle_mb": round(idle_rss, 1),
            "server_rss_connected_mb": round(connected_rss, 1),
            "server_kb_per_socket": round((connected_rss - idle_rss) * 1024 / n, 1) if n else None,
            "server_peak_rss_mb": round(peak_rss, 1),
            "db_writes_total": total_writes,
            "db_writes_per_reply": round(total_writes / replies, 2) if replies else None,
            "db_writes_by_table": writes,
        }
