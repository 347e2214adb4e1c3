"""Benchmark the streaming path end to end.

Starts the fake provider and the app (daphne) as separate processes, opens N
authenticated websocket clients, has each send ``--rounds`` messages (the
first sends spread over one second), and reports completion, delivered tokens
per second (average and peak one-second bucket), added latency, frames per
second, the server's CPU, memory per socket and its growth across rounds,
database writes per reply, and the server's worst event-loop lag and garbage
collection pause while streaming (``CHAT_STALLS_FILE``, see
``devtools.instrumentation``).

Added latency is measured end to end: the fake provider's ``timestamped``
scenario makes every token ``t<time.time_ns()> `` (its send time); a client
subtracts it from the time it received the first frame carrying that token.
Percentiles are nearest-rank (``conversations.stats.percentile``, see
``devtools.benchstats``): each is one of the measured values, None without any.

Use its own database, e.g.::

    SQLITE_PATH=/tmp/bench.sqlite3 python manage.py benchstreams --clients 10
    python manage.py benchstreams --clients 200 --pin --json
    python manage.py benchstreams --sweep 10,50,100,200,400 --pin
    python manage.py benchstreams --clients 100 --pin --py-spy /tmp/profile.txt
    python manage.py benchstreams --clients 100 --pin --scenario markdown
    python manage.py benchstreams --clients 100 --pin --app-dir ../before  # another commit's app
    python manage.py benchstreams --sweep 10,20,40,80,160 --pin --peer chainlit  # Chainlit beside it

``--sweep`` runs the scenario once per N, each against a fresh server, prints
one table row each, and stops after the first N past the knee (a client did
not complete, or p99 added latency above ``--knee-p99-ms``, 100 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from conversations.models import Conversation
from conversations.stats import percentile
from devtools import peers
from devtools.benchstats import FINAL, TOKEN, prepare, provider_options, rounded
from devtools.instrumentation import growth
from devtools.processes import app_server, database_env, fake_provider

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ACCESS_LOG = re.compile(r'^[\d.:]+ - - \[[^]]*\] "(WS|GET|POST)')  # daphne's per-request lines
KNEE_P99_MS = 100.0
STALL_MS = 50.0  # a loop lag or GC pause above this counts as a stall


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.time() of each delivered token
    frames: int = 0
    replies: int = 0
    error: str = ""
    first_send: float = 0.0  # time.time()
    last_final: float = 0.0


def _api_keys(conversations) -> dict[int, str]:
    """A new API key for each owner of ``conversations`` (the bench user), in place of earlier runs' keys."""
    from conversations.models import ApiKey

    owners = {c.owner_id: c.owner for c in conversations}
    ApiKey.objects.filter(owner_id__in=owners, name="benchstreams").delete()
    return {pk: ApiKey.issue(owner, "benchstreams")[1] for pk, owner in owners.items()}


def _cpu_seconds(pid: int) -> float:
    if isinstance(pid, list):  # several workers: their sum
        return sum(_cpu_seconds(p) for p in pid)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    if isinstance(pid, list):
        return sum(_peak_rss_mb(p) for p in pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid: int) -> float:
    if isinstance(pid, list):
        return sum(_rss_mb(p) for p in pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def merged_writes(per_worker: list[dict | None]) -> dict | None:
    """Database writes by table, summed over workers; None if any worker's count is missing."""
    if any(w is None for w in per_worker):
        return None
    total: Counter[str] = Counter()
    for writes in per_worker:
        total.update(writes)
    return dict(total)


def merged_stalls(per_worker: list[dict]) -> dict:
    """Loop lags and GC pauses of every worker, as one worker's report (maxima, sums, all events)."""
    per_worker = [s for s in per_worker if s]
    if len(per_worker) < 2:
        return per_worker[0] if per_worker else {}
    return {
        "lag_samples": sum(s["lag_samples"] for s in per_worker),
        "max_lag_ms": max(s["max_lag_ms"] for s in per_worker),
        "lags": sorted(lag for s in per_worker for lag in s["lags"]),
        "gc_counts": {g: sum(s["gc_counts"][g] for s in per_worker) for g in per_worker[0]["gc_counts"]},
        "gc_max_ms": {g: max(s["gc_max_ms"][g] for s in per_worker) for g in per_worker[0]["gc_max_ms"]},
        "gc_total_ms": round(sum(s["gc_total_ms"] for s in per_worker), 2),
        "gc_pauses": sorted(p for s in per_worker for p in s["gc_pauses"]),
        "record_ms": per_worker[0]["record_ms"],
    }


class Command(BaseCommand):
    help = "Benchmark N concurrent streaming websocket clients against a real server."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=10, help="Concurrent clients (default 10).")
        parser.add_argument("--rounds", type=int, default=1, help="Messages per client (default 1).")
        parser.add_argument("--tokens", type=int, default=200, help="Tokens per reply (default 200).")
        parser.add_argument("--delay", type=float, default=0.02, help="Seconds between tokens (default 0.02).")
        parser.add_argument("--first-delay", type=float, default=0.2, help="Seconds to the first token (0.2).")
        parser.add_argument("--spread", type=float, default=1.0, help="Spread the first sends over this many s.")
        parser.add_argument(
            "--pin",
            action="store_true",
            help="Server on core 0; provider and clients on core 1. With --workers 2: worker k on core k, the "
            "provider and clients on either.",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Server processes (default 1); more need REDIS_URL and PostgreSQL. Clients are dealt to them in "
            "turn; CPU and memory are the workers' sums.",
        )
        parser.add_argument("--timeout", type=float, default=120.0, help="Give up on a reply after this long.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument(
            "--scenario",
            choices=("timestamped", "markdown"),
            default="timestamped",
            help="The fake provider's replies: plain stamped words (default), or stamps inside headings, lists, "
            "tables and code (markdown).",
        )
        parser.add_argument(
            "--app-dir",
            type=Path,
            default=None,
            help="Serve the app from this checkout (e.g. a git worktree of an earlier commit) to compare two "
            "commits on the same machine; the database, fake provider and clients stay this checkout's.",
        )
        parser.add_argument(
            "--sweep",
            default="",
            help="Comma-separated client counts (e.g. 10,50,100,200,400): one run and one table row each, "
            "stopping after the first past the knee. Overrides --clients.",
        )
        parser.add_argument(
            "--knee-p99-ms",
            type=float,
            default=KNEE_P99_MS,
            help=f"A run is within the knee if every client completes and p99 is at most this ({KNEE_P99_MS:g}).",
        )
        parser.add_argument(
            "--peer",
            choices=("chainlit",),
            default="",
            help="Also run the peer (../shared/peers/chainlit, see devtools/peers.py) on the same scenario, back "
            "to back at each N, and report both and their ratio.",
        )
        parser.add_argument(
            "--transport",
            choices=("ws", "sse", "both"),
            default="ws",
            help="How clients read replies: the browser's websocket (default), or the HTTP API's Server-Sent "
            "Events (POST /api/v1/conversations/<id>/runs with stream, an API key each); both: each N with the "
            "websocket then SSE, back to back, and the SSE relay's cost per token beside the websocket's.",
        )
        parser.add_argument(
            "--tracemalloc",
            action="store_true",
            help="Trace the server's allocations and report what grew from the end of the second round to the "
            "end of the last but one (use with --rounds 4 or more; the server runs much slower meanwhile).",
        )
        parser.add_argument(
            "--py-spy",
            dest="py_spy",
            default="",
            metavar="PATH",
            help="Profile the server with `py-spy record` while the clients run; folded stacks go to PATH.",
        )

    def handle(self, *args, **options):
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError("Set REDIS_URL (and DATABASE_URL): several workers need a shared channel layer.")
        if options["pin"] and options["workers"] == 1:
            os.sched_setaffinity(0, {1})
        call_command("migrate", verbosity=0)
        if options["peer"]:
            peers.check()  # before any run: say at once if it is missing
        if options["peer"]:
            return self._sweep_with_peer(options["sweep"] or str(options["clients"]), options)
        if options["transport"] == "both":
            return self._sweep_transports(options["sweep"] or str(options["clients"]), options)
        if not options["sweep"]:
            report = self._bench(options["clients"], options)
            if options["json"]:
                self.stdout.write(json.dumps(report, indent=2))
            else:
                for key, value in report.items():
                    self.stdout.write(f"{key:34} {value}")
            return
        reports = []
        if not options["json"]:
            self.stdout.write(self._row(None))
        for n in [int(v) for v in options["sweep"].split(",") if v.strip()]:
            report = self._bench(n, options)
            reports.append(report)
            if not options["json"]:
                self.stdout.write(self._row(report))
                self.stdout.flush()
            if not report["within_knee"]:
                break  # past the knee: larger N only take longer
        if options["json"]:
            self.stdout.write(json.dumps(reports, indent=2))
        else:
            knee = max((r["clients"] for r in reports if r["within_knee"]), default=0)
            shown = knee or f"below {reports[0]['clients']}"
            limit = options["knee_p99_ms"]
            self.stdout.write(f"knee (largest N with every client complete and p99 <= {limit:g} ms): {shown}")

    def _sweep_with_peer(self, sweep: str, options: dict) -> None:
        """Each N: the peer, then the app, back to back; each side stops after its first N past the knee."""
        name = options["peer"]
        rows, past = [], set()
        if not options["json"]:
            self.stdout.write(self._row(None))
        for n in [int(v) for v in sweep.split(",") if v.strip()]:
            row = {"clients": n}
            for system in (name, "app"):
                if system in past:
                    continue
                row[system] = report = peers.chainlit(n, options) if system == name else self._bench(n, options)
                if not options["json"]:
                    self.stdout.write(self._row(report))
                    self.stdout.flush()
                if not report["within_knee"]:
                    past.add(system)
            if name in row and "app" in row:
                row["ratio"] = peers.ratios(row["app"], row[name])
                if not options["json"]:
                    self.stdout.write(f"{'':>9} ratio at N={n} (app vs {name}, above 1 is better): {row['ratio']}")
            rows.append(row)
            if past == {name, "app"}:
                break
        knees = {
            system: max((r["clients"] for r in rows if system in r and r[system]["within_knee"]), default=0)
            for system in (name, "app")
        }
        knee_ratio = round(knees["app"] / knees[name], 2) if knees[name] else None
        if options["json"]:
            self.stdout.write(json.dumps({"rows": rows, "knees": knees, "knee_ratio": knee_ratio}, indent=2))
        else:
            limit = options["knee_p99_ms"]
            self.stdout.write(
                f"knee (every client complete, p99 <= {limit:g} ms): app {knees['app'] or 'below the first N'}, "
                f"{name} {knees[name] or 'below the first N'}; ratio {knee_ratio}"
            )

    COLUMNS = (
        ("system", "system", 8),
        ("N", "clients", 5),
        ("done", "clients_completed", 5),
        ("tok/s", "tokens_per_s_avg", 8),
        ("peak", "tokens_per_s_peak", 6),
        ("p50", "latency_ms_p50", 8),
        ("p95", "latency_ms_p95", 8),
        ("p99", "latency_ms_p99", 8),
        ("max", "latency_ms_max", 8),
        ("frames/s", "frames_per_s", 9),
        ("cpu ms/tok", "server_cpu_ms_per_token", 11),
        ("streaming", "server_cpu_ms_per_token_streaming", 10),
        ("KB/sock", "server_kb_per_socket", 8),
        ("peak MB", "server_peak_rss_mb", 8),
        ("lag max", "server_loop_lag_ms_max", 8),
        ("gc max", "server_gc_pause_ms_max", 7),
        ("writes", "db_writes_per_reply", 7),
    )

    def _sweep_transports(self, sweep: str, options: dict) -> None:
        """At each N: the websocket, then SSE, on fresh servers; the SSE relay's CPU per token as a ratio."""
        self.stdout.write(self._row(None))
        for n in [int(v) for v in sweep.split(",") if v.strip()]:
            ws, sse = (self._bench(n, {**options, "transport": transport}) for transport in ("ws", "sse"))
            self.stdout.write(self._row(ws))
            self.stdout.write(self._row(sse))
            key = "server_cpu_ms_per_token_streaming"
            ratio = round(sse[key] / ws[key], 2) if ws.get(key) and sse.get(key) else None
            self.stdout.write(f"          SSE vs websocket at N={n}: cpu per token x{ratio} (below 1: SSE is cheaper)")
            self.stdout.flush()

    def _row(self, report: dict | None) -> str:
        if report is None:
            return " ".join(f"{title:>{width}}" for title, _, width in self.COLUMNS)
        return " ".join(f"{report.get(key, '-')!s:>{width}}" for _, key, width in self.COLUMNS)

    def _bench(self, n: int, options: dict) -> dict:
        model_key = f"openai:fake-{options['scenario']}"
        workers = options.get("workers", 1)
        cookies, conversations = prepare(n + workers, model_key)  # one more per worker to warm it up
        warmups, conversations = conversations[:workers], conversations[workers:]
        writes_files = [Path(tempfile.mkstemp(prefix="chat-writes-", suffix=".json")[1]) for _ in range(workers)]
        stalls_files = [Path(tempfile.mkstemp(prefix="chat-stalls-", suffix=".json")[1]) for _ in range(workers)]
        traces = Path(tempfile.mkdtemp(prefix="chat-tracemalloc-")) if options.get("tracemalloc") else None
        pin = options["pin"]
        with fake_provider(
            {"DJANGO_SECRET_KEY": settings.SECRET_KEY},
            *provider_options(options),
            cpus="1" if pin and workers == 1 else "",
        ) as provider:
            servers = []
            try:
                for k, (writes, stalls) in enumerate(zip(writes_files, stalls_files, strict=True)):
                    servers.append(self._server(provider, model_key, writes, stalls, traces, k, options))
                pids = [server.pid for server in servers]
                print(f"server pid {' '.join(map(str, pids))} (N={n})", file=sys.stderr, flush=True)
                pid = pids[0] if workers == 1 else pids
                profiler = None
                # One socket that connects and leaves: the imports and caches of
                # the socket path are then in the idle RSS, not in "per socket".
                for server, warmup in zip(servers, warmups, strict=True):
                    asyncio.run(self._warm_up(server, cookies, warmup))
                idle_rss = _rss_mb(pid)
                cpu_before = _cpu_seconds(pid)
                each_before = [_cpu_seconds(p) for p in pids]
                if options["py_spy"]:
                    profiler = self._profile(pids[0], options["py_spy"])
                started = time.time()
                run = asyncio.run(self._run(servers, pid, cookies, conversations, options))
                elapsed = time.time() - started
                cpu = _cpu_seconds(pid) - cpu_before
                each = [round(_cpu_seconds(p) - before, 3) for p, before in zip(pids, each_before, strict=True)]
                peak_rss = _peak_rss_mb(pid)
            finally:
                if profiler is not None:
                    profiler.send_signal(2)  # SIGINT: py-spy writes what it has
                    profiler.wait(30)
                    print(self.profile_summary(options["py_spy"]), file=sys.stderr)
                for server in servers:
                    server.stop()
                server_log = [line for server in servers for line in server.log if not ACCESS_LOG.match(line)][-30:]
        # Empty when a server did not exit cleanly (killed at stop): reported as None, not as zero.
        writes = merged_writes([json.loads(f.read_text() or "null") if f.exists() else None for f in writes_files])
        stalls = merged_stalls([json.loads(f.read_text() or "{}") if f.exists() else {} for f in stalls_files])
        for f in writes_files + stalls_files:
            f.unlink(missing_ok=True)
        report = self._report(run, options, elapsed, cpu, idle_rss, peak_rss, writes, stalls)
        report["server_cpu_seconds_by_worker"] = each
        if traces:
            snapshots = sorted(traces.glob("*.snapshot"), key=lambda p: int(p.stem))
            # From the end of the second round to the end of the last but one: both taken while the
            # clients that finished first already stream their next reply, so in-flight memory cancels out.
            if len(snapshots) >= 4:
                report["tracemalloc_growth"] = growth(snapshots[1], snapshots[-2])
            shutil.rmtree(traces, ignore_errors=True)
        if report["clients_completed"] < n:  # what the server said (less its access log), to see why
            report["server_log_tail"] = [line.rstrip() for line in server_log]
        return report

    def _server(self, provider, model_key, writes_file, stalls_file, traces, k: int, options: dict):
        """Worker ``k``, started; pinned to core ``k`` (mod 2) under --pin."""
        return app_server(
            {
                "DJANGO_DEBUG": "0",
                "DJANGO_SECRET_KEY": settings.SECRET_KEY,
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "OPENAI_API_KEY": "bench",
                "OPENAI_BASE_URL": provider.url + "/v1",
                "CHAT_MODELS": model_key,
                "CHAT_DEMO_MODEL": "0",
                "CHAT_SQL_WRITES_FILE": str(writes_file),
                "CHAT_STALLS_FILE": str(stalls_file),
                **({"CHAT_TRACEMALLOC_DIR": str(traces)} if traces and k == 0 else {}),
                **database_env(),
            },
            cpus=str(k % 2) if options["pin"] else "",
            **({"root": options["app_dir"].resolve()} if options["app_dir"] else {}),
        ).start()

    @staticmethod
    def profile_summary(path: str, top: int = 20) -> str:
        """The top functions of a py-spy ``raw`` (folded) profile: by self samples and by inclusive samples."""
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # merge lines of one function
            total += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
        lines = [f"{total} samples; self %, then inclusive %"]
        lines += [f"  self {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
        lines += [f"  incl {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top * 2)]
        return "\n".join(lines)

    def _profile(self, pid: int, path: str) -> subprocess.Popen:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        # --gil: only the thread holding the GIL, i.e. where the CPU goes.
        args = [spy, "record", "--pid", str(pid), "--rate", "100", "--gil", "--format", "raw", "--output", path]
        profiler = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # py-spy attaches
        return profiler

    async def _warm_up(self, server, cookie, conversation: Conversation) -> None:
        import websockets

        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/ws/conversations/{conversation.id}/",
            origin=f"http://127.0.0.1:{server.port}",
            additional_headers={"Cookie": cookie},
            open_timeout=30,
        ) as ws:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)  # the current state, if any

    async def _run(self, servers, pid, cookie, conversations, options) -> dict:
        """Client ``i`` talks to ``servers[i % len(servers)]``; memory and CPU are ``pid``'s (one, or a list)."""
        import websockets

        results = [ClientResult() for _ in conversations]
        sockets: list = []
        connected = asyncio.Event()
        run = {"results": results, "connected_rss": 0.0, "rss_after_round": [], "cpu_connected": 0.0}
        rounds_done = Counter()

        def connection(server, conversation: Conversation):
            """The client's connection: a websocket, or (SSE) an HTTP client holding the key."""
            if options.get("transport") == "sse":
                import httpx

                key = api_keys[conversation.owner_id]
                return httpx.AsyncClient(timeout=options["timeout"], headers={"Authorization": f"Bearer {key}"})
            return websockets.connect(
                f"ws://127.0.0.1:{server.port}/ws/conversations/{conversation.id}/",
                origin=f"http://127.0.0.1:{server.port}",
                additional_headers={"Cookie": cookie},
                max_size=None,
                open_timeout=30,
            )

        async def one_reply(connection_, server, conversation: Conversation, result: ClientResult) -> None:
            text = f"bench {secrets.token_hex(4)}"
            if options.get("transport") != "sse":
                await connection_.send(json.dumps({"action": "send", "text": text}))
                return await self._read_reply(connection_, result)
            url = f"http://127.0.0.1:{server.port}/api/v1/conversations/{conversation.id}/runs"
            body = {"input": text, "stream": True, "stream_mode": ["messages", "updates"]}
            async with connection_.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                await self._read_events(response, result)

        async def client(i: int, conversation: Conversation) -> None:
            result = results[i]
            server = servers[i % len(servers)]
            try:
                async with connection(server, conversation) as connected_:
                    sockets.append(connected_)
                    if len(sockets) == len(conversations):
                        run["connected_rss"] = _rss_mb(pid)
                        run["cpu_connected"] = _cpu_seconds(pid)
                        connected.set()
                    await connected.wait()
                    await asyncio.sleep(options["spread"] * i / len(conversations))  # spread the first sends
                    for r in range(options["rounds"]):
                        if not result.first_send:
                            result.first_send = time.time()
                        await asyncio.wait_for(one_reply(connected_, server, conversation, result), options["timeout"])
                        result.last_final = time.time()
                        result.replies += 1
                        rounds_done[r] += 1
                        if rounds_done[r] == len(conversations):  # every client has finished round r
                            run["rss_after_round"].append(_rss_mb(pid))
                            if options.get("tracemalloc"):
                                os.kill(servers[0].pid, signal.SIGUSR1)  # a snapshot (devtools.instrumentation)
            except Exception as exc:  # reported, not raised: one failed client must not hide the rest
                result.error = f"{type(exc).__name__}: {exc}"
                connected.set()

        api_keys = {}
        if options.get("transport") == "sse":
            api_keys = await database_sync_to_async(_api_keys)(conversations)
        await asyncio.gather(*(client(i, c) for i, c in enumerate(conversations)))
        run["cpu_done"] = _cpu_seconds(pid)
        return run

    async def _read_events(self, response, result: ClientResult) -> None:
        """One reply's Server-Sent Events: each write is a "frame"; stamps as in ``_read_reply``."""
        seen: set[str] = set()
        async for chunk in response.aiter_text():
            received = time.time_ns()
            result.frames += 1
            for stamp in TOKEN.findall(chunk):
                if stamp not in seen:  # run_end's reply repeats every token
                    seen.add(stamp)
                    result.latencies_ms.append((received - int(stamp)) / 1e6)
                    result.arrivals.append(received / 1e9)
            if "event: run_end" in chunk:
                return

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

    def _report(self, run, options, elapsed, cpu, idle_rss, peak_rss, writes, stalls) -> dict:
        results = run["results"]
        n = len(results)
        latencies = [v for r in results for v in r.latencies_ms]
        arrivals = [t for r in results for t in r.arrivals]
        buckets = Counter(int(t) for t in arrivals)
        tokens = len(latencies)
        replies = sum(r.replies for r in results)
        frames = sum(r.frames for r in results)
        completed = sum(1 for r in results if r.replies == options["rounds"] and not r.error)
        span = (max(arrivals) - min(arrivals)) if arrivals else 0.0
        # The streaming window: from the first send to the last final bubble.
        window_start = min((r.first_send for r in results if r.first_send), default=0.0)
        window_end = max((r.last_final for r in results), default=0.0)
        window = window_end - window_start if window_end > window_start else 0.0
        in_window = [(at, ms) for at, ms in stalls.get("lags", []) if window_start <= at <= window_end]
        lags = [ms for _, ms in in_window]
        pauses = [ms for at, _, ms in stalls.get("gc_pauses", []) if window_start <= at <= window_end]
        streaming_cpu = run.get("cpu_done", 0.0) - run.get("cpu_connected", 0.0)
        total_writes = sum(writes.values()) if writes is not None else None
        rss_rounds = run["rss_after_round"]
        p99 = percentile(latencies, 99)  # None without tokens
        return {
            "system": "app" if options.get("transport", "ws") == "ws" else "app-sse",
            "workers": options.get("workers", 1),
            "scenario": options["scenario"],
            "clients": n,
            "rounds": options["rounds"],
            "tokens_per_reply": options["tokens"],
            "clients_completed": completed,
            "within_knee": completed == n and p99 is not None and p99 <= options.get("knee_p99_ms", KNEE_P99_MS),
            "errors": sorted({r.error for r in results if r.error})[:5],
            "replies": replies,
            "tokens_delivered": tokens,
            "tokens_per_s_avg": round(tokens / span, 1) if span else 0.0,
            "tokens_per_s_peak": max(buckets.values()) if buckets else 0,
            "latency_ms_p50": rounded(percentile(latencies, 50), 2),
            "latency_ms_p95": rounded(percentile(latencies, 95), 2),
            "latency_ms_p99": rounded(p99, 2),
            "latency_ms_max": round(max(latencies), 2) if latencies else None,
            "latency_ms_mean": round(statistics.fmean(latencies), 2) if latencies else None,
            "frames": frames,
            "frames_per_reply": round(frames / replies, 1) if replies else None,
            "frames_per_s": round(frames / window, 1) if window else 0.0,
            "streaming_seconds": round(window, 2),
            "wall_seconds": round(elapsed, 2),
            "server_cpu_seconds": round(cpu, 3),
            "server_cpu_ms_per_token": round(cpu * 1000 / tokens, 4) if tokens else None,
            "server_cpu_ms_per_token_streaming": round(streaming_cpu * 1000 / tokens, 4) if tokens else None,
            "server_rss_idle_mb": round(idle_rss, 1),
            "server_rss_connected_mb": round(run["connected_rss"], 1),
            "server_kb_per_socket": round((run["connected_rss"] - idle_rss) * 1024 / n, 1) if n else None,
            "server_rss_after_round_mb": [round(v, 1) for v in rss_rounds],
            "server_rss_growth_mb": round(rss_rounds[-1] - rss_rounds[0], 1) if rss_rounds else None,
            "server_peak_rss_mb": round(peak_rss, 1),
            "server_stall_record_ms": stalls.get("record_ms"),  # 0 below: no lag or pause above this
            "server_loop_lag_ms_max": round(max(lags, default=0.0), 1) if stalls else None,
            "server_loop_lag_ms_max_overall": stalls.get("max_lag_ms"),
            "server_loop_lag_samples": stalls.get("lag_samples"),
            "server_gc_pause_ms_max": round(max(pauses, default=0.0), 1) if stalls else None,
            "server_gc_max_ms_by_generation": stalls.get("gc_max_ms"),
            "server_gc_collections": stalls.get("gc_counts"),
            "server_gc_total_ms": stalls.get("gc_total_ms"),
            "server_stalls_over_50ms": sum(1 for ms in lags + pauses if ms > STALL_MS) if stalls else None,
            # When the loop lagged over 50 ms: seconds after the first send, and how long.
            "server_loop_lags_over_50ms": [[round(at - window_start, 2), ms] for at, ms in in_window if ms > STALL_MS],
            "db_writes_total": total_writes,
            "db_writes_per_reply": round(total_writes / replies, 2) if replies and total_writes is not None else None,
            "db_writes_by_table": writes,
        }
