"""Taking the machine's PostgreSQL and Redis down and up again, for the fault tests.

Each ``*_down()`` is a context manager: the service stops on entry and is
started again on exit, also when the body fails, and exit returns only once
it accepts connections.  ``*_uncontrollable()`` says why a service cannot be
controlled here ("" when it can): tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

READY_SECONDS = 20.0  # a service that is not back by then fails the test (and CI says so)


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _poll(condition, what: str, within: float = READY_SECONDS) -> None:
    """Poll ``condition`` every 50 ms until it holds, or raise after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {within:g} s")
        time.sleep(0.05)  # sleep-ok: a bounded poll of a service coming back


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=READY_SECONDS)


# --- PostgreSQL ----------------------------------------------------------------


def _cluster(db: dict) -> tuple[str, str] | None:
    """(version, name) of the local cluster on ``db``'s port, from ``pg_lsclusters``."""
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=10).stdout
    for line in listing.splitlines():
        version, name, port, *_rest = line.split()
        if int(port) == int(db.get("PORT") or 5432):
            return version, name
    return None


def postgres_uncontrollable(db: dict) -> str:
    if not db["ENGINE"].endswith("postgresql"):
        return "the database is not PostgreSQL"
    if (db.get("HOST") or "127.0.0.1") not in ("127.0.0.1", "localhost", "::1"):
        return "PostgreSQL is not on this machine"
    for command in ("pg_ctlcluster", "pg_lsclusters", "pg_isready"):
        if shutil.which(command) is None:
            return f"no {command} here: PostgreSQL cannot be restarted"
    if os.geteuid() != 0:
        return "not root: PostgreSQL cannot be restarted"
    if _cluster(db) is None:
        return "no local PostgreSQL cluster on the database's port"
    return ""


@contextlib.contextmanager
def postgres_down(db: dict) -> Iterator[None]:
    """PostgreSQL stopped (fast: open sessions are cut), then started again."""
    version, name = _cluster(db)
    host, port = db.get("HOST") or "127.0.0.1", str(db.get("PORT") or 5432)
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    try:
        _run(*ctl, "stop", "-m", "fast")
        yield
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # "already running"
            _run(*ctl, "start")
        _poll(
            lambda: subprocess.run(["pg_isready", "-q", "-h", host, "-p", port], timeout=5).returncode == 0,
            "PostgreSQL did not accept connections again",
        )


# --- Redis ---------------------------------------------------------------------


def redis_uncontrollable(url: str) -> str:
    if not url:
        return "REDIS_URL is unset"
    if (urlsplit(url).hostname or "") not in ("127.0.0.1", "localhost", "::1"):
        return "Redis is not on this machine"
    for command in ("redis-server", "redis-cli"):
        if shutil.which(command) is None:
            return f"no {command} here: Redis cannot be restarted"
    if os.geteuid() != 0:
        return "not root: Redis cannot be restarted"
    return ""


def _redis_options(client) -> list[str]:
    """Command-line options that start Redis again as it runs now (its config
    file if it has one, else the settings a restart would lose)."""
    config_file = client.info("server").get("config_file") or ""
    options = [config_file] if config_file else []
    for name in ("bind", "port", "save", "appendonly", "dir", "logfile", "dbfilename"):
        value = client.config_get(name).get(name)
        if value is not None:
            options += [f"--{name}", *(value.split() if name == "bind" else [value])]
    return [*options, "--daemonize", "yes"]


@contextlib.contextmanager
def redis_down(url: str) -> Iterator[None]:
    """Redis shut down (without saving: it keeps nothing on disk), then started again."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 6379
    # No retries: redis-py's default backoff would turn each failed ping into seconds.
    client = redis.Redis(host=host, port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    options = _redis_options(client)
    try:
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection
            client.shutdown(nosave=True)
        _poll(lambda: not _accepts(host, port), "Redis did not stop")
        yield
    finally:
        if not _accepts(host, port):
            subprocess.run(["redis-server", *options], check=True, timeout=READY_SECONDS, cwd=Path("/"))
        _poll(lambda: _redis_pings(client), "Redis did not accept connections again")
        client.close()


def _redis_pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
