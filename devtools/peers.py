"""A peer on the benchmark's reference scenario, for ratios measured back to back.

Machines here differ by about two times, so an absolute number from one says
little; the same scenario run against a peer on the same machine, minutes
apart, gives a ratio that does. The peer is Chainlit: its files are the
project leads' (``../shared/peers/chainlit``, read-only), with its own fake
OpenAI server (the same ``t<ns>`` tokens), load generator and
``run_chainlit_series.sh``, which starts a fresh Chainlit for one N, warms it
with two sessions, runs the load generator and stops every process it
started. :func:`chainlit` runs that script for one N and returns its JSON
line under ``benchstreams``' report keys, so one table shows both.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

from devtools.processes import ROOT

PEER_DIR = Path(os.environ.get("CHAT_PEER_DIR", ROOT.parent / "shared" / "peers" / "chainlit"))
PEER_VENV = Path(os.environ.get("CHAT_PEER_VENV", "/tmp/peers-venv"))  # as the peer's README installs it


BASE_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM"}


class PeerUnavailable(RuntimeError):
    """The peer's files or its virtualenv are missing: says how to get them."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(peer_dir: Path | None = None, venv: Path | None = None) -> None:
    """Raise :class:`PeerUnavailable` unless the peer can run."""
    peer_dir, venv = peer_dir or PEER_DIR, venv or PEER_VENV
    if not (peer_dir / "run_chainlit_series.sh").exists():
        raise PeerUnavailable(f"no Chainlit peer at {peer_dir} (set CHAT_PEER_DIR)")
    if not (venv / "bin" / "chainlit").exists():
        raise PeerUnavailable(
            f"no Chainlit in {venv}: install it as {peer_dir / 'README.md'} says (or set CHAT_PEER_VENV)"
        )


def available() -> bool:
    try:
        check()
    except PeerUnavailable:
        return False
    return True


def chainlit(n: int, options: dict, peer_dir: Path | None = None, venv: Path | None = None) -> dict:
    """One Chainlit run with ``n`` sessions on ``options``' scenario (tokens,
    delay, first delay, spread, pin, rounds), in benchstreams' report keys;
    the peer's own report is under ``peer``."""
    peer_dir, venv = peer_dir or PEER_DIR, venv or PEER_VENV
    check(peer_dir, venv)
    with tempfile.TemporaryDirectory(prefix="chainlit-peer-") as tmp:
        out = Path(tmp) / "results.jsonl"
        # Only what a shell needs: Chainlit reads DATABASE_URL (and more) as its own settings.
        env = {
            **{k: v for k, v in os.environ.items() if k in BASE_ENV},
            "NS": str(n),
            "PIN": "1" if options["pin"] else "0",
            "OUT": str(out),
            "VENV": str(venv),
            "TOKENS": str(options["tokens"]),
            "DELAY_MS": f"{options['delay'] * 1000:g}",
            "TTFT_MS": f"{options['first_delay'] * 1000:g}",
            "FAKE_PORT": str(_free_port()),
            "CL_PORT": str(_free_port()),
            "RUNDIR": str(Path(tmp) / "run"),
            "LOGDIR": str(Path(tmp) / "logs"),
            "LOADGEN_ARGS": f"--rounds {options['rounds']} --stagger-s {options['spread']:g}",
        }
        done = subprocess.run(
            ["bash", str(peer_dir / "run_chainlit_series.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=options["timeout"] + 300,
            check=False,
        )
        lines = out.read_text().splitlines() if out.exists() else []
        if not lines:
            logs = sorted((Path(tmp) / "logs").glob("*"))
            tail = "".join(p.read_text(errors="replace")[-2000:] for p in logs[-2:])
            raise RuntimeError(f"the Chainlit run gave no result (exit {done.returncode}):\n{done.stderr}\n{tail}")
        return normalised(json.loads(lines[-1]), options)


def normalised(peer: dict, options: dict) -> dict:
    """The peer's load generator report under benchstreams' keys."""
    tokens = peer["total_tokens"]
    cpu = peer["server"]["cpu_s_stream_phase"]
    lat = peer["lat_ms"]
    p99 = lat["p99"]
    return {
        "system": "chainlit",
        "clients": peer["n"],
        "clients_completed": peer["completed"],
        "within_knee": peer["completed"] == peer["n"] and p99 is not None and p99 <= options["knee_p99_ms"],
        "tokens_delivered": tokens,
        "tokens_per_s_avg": peer["delivered_tok_s_avg"],
        "tokens_per_s_peak": peer["delivered_tok_s_peak1s"],
        "latency_ms_p50": lat["p50"],
        "latency_ms_p95": lat["p95"],
        "latency_ms_p99": p99,
        "latency_ms_max": lat["max"],
        "server_cpu_ms_per_token_streaming": round(cpu * 1000 / tokens, 4) if tokens and cpu is not None else None,
        "server_peak_rss_mb": peer["server"]["vm_hwm_mb"],
        "errors": sorted(peer["errors"])[:5],
        "peer": peer,
    }


def ratios(app: dict, peer: dict) -> dict:
    """How many times better the app is than the peer at one N (above 1: better)."""

    def times(better_low_peer, better_low_app):
        if not better_low_peer or not better_low_app:
            return None
        return round(better_low_peer / better_low_app, 2)

    return {
        "cpu_per_token": times(peer["server_cpu_ms_per_token_streaming"], app["server_cpu_ms_per_token_streaming"]),
        "p99": times(peer["latency_ms_p99"], app["latency_ms_p99"]),
        "p50": times(peer["latency_ms_p50"], app["latency_ms_p50"]),
        "peak_rss": times(peer["server_peak_rss_mb"], app["server_peak_rss_mb"]),
    }
