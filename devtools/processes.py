"""Child processes that announce readiness on their output: the app under
daphne and the fake provider, for the benchmark and the tests.

``ChildProcess`` starts a command and waits until a line of its output matches
``ready`` (an event, not a sleep); ``port`` is the number that line captured.
Both children get ``CHAT_DEVTOOLS=1``: the fake provider is a devtools command,
and the app's instrumentation (``CHAT_SQL_WRITES_FILE``, ``CHAT_STALLS_FILE``)
lives in the devtools app, whatever ``DJANGO_DEBUG`` the caller gives them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAPHNE_READY = re.compile(r"Listening on TCP address [\d.]+:(\d+)")
FAKE_READY = re.compile(r"Fake provider listening on http://[\d.]+:(\d+)")


class ChildProcess:
    def __init__(self, args: list[str], env: dict[str, str], ready: re.Pattern, *, cpus: str = "", root: Path = ROOT):
        self.args = ["taskset", "-c", cpus, *args] if cpus else args
        self.root = root
        self.env = env
        self.ready = ready
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._line = threading.Condition()

    def start(self, timeout: float = 30.0) -> ChildProcess:
        self.proc = subprocess.Popen(
            self.args, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError(f"{self.args[0]} did not start:\n" + "".join(self.log[-40:]))
        return self

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line of output containing ``pattern``, waiting for it
        (an event per line, not a sleep); TimeoutError if none comes."""
        with self._line:
            found = self._line.wait_for(lambda: next((line for line in self.log if pattern in line), None), timeout)
        if found is None:
            raise TimeoutError(f"no {pattern!r} in the output of {self.args[0]}:\n" + "".join(self.log[-20:]))
        return found

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._line:
                self.log.append(line)
                self._line.notify_all()
            if self.port is None:
                match = self.ready.search(line)
                if match:
                    self.port = int(match.group(1))
                    self._ready.set()
        self._ready.set()  # it exited: stop waiting

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def database_env() -> dict[str, str]:
    """Environment that points a child process at this process's database."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return {"SQLITE_PATH": str(db["NAME"]), "DATABASE_URL": None}
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return {"DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"}


def _environ(env: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with ``env`` applied (None removes a
    variable), with the development tools installed."""
    merged = {**os.environ, **env, "CHAT_DEVTOOLS": "1"}
    return {k: v for k, v in merged.items() if v is not None}


def app_server(env: dict[str, str | None], *, cpus: str = "", root: Path = ROOT) -> ChildProcess:
    """The app under daphne on a free port of 127.0.0.1.  No title calls and
    no per-user reply limits unless ``env`` asks (benchmarks and tests measure
    the chat's own calls, many at once for one user).
    ``root``: the checkout to serve (another commit's, to compare two)."""
    # One bench user runs every stream: no per-user limits unless ``env`` sets them.
    env = {"CHAT_TITLE_MODEL": "off", "CHAT_MAX_CONCURRENT_REPLIES": "0", "CHAT_REPLIES_PER_MINUTE": "0", **env}
    if (root / "chatsite" / "serve.py").exists():
        serve = [sys.executable, "-m", "chatsite.serve"]  # daphne on uvloop (see chatsite/serve.py)
    else:  # an older checkout (--app-dir)
        serve = [str(BIN / "daphne") if (BIN / "daphne").exists() else "daphne"]
    args = [*serve, "-b", "127.0.0.1", "-p", "0", "chatsite.asgi:application"]
    return ChildProcess(args, _environ(env), DAPHNE_READY, cpus=cpus, root=root)


def fake_provider(env: dict[str, str | None], *options: str, cpus: str = "") -> ChildProcess:
    """``manage.py fakeprovider`` on a free port."""
    args = [sys.executable, "manage.py", "fakeprovider", "--port", "0", *options]
    return ChildProcess(args, _environ(env), FAKE_READY, cpus=cpus)
