"""Real server processes for browser and multi-worker tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from devtools.processes import ChildProcess, app_server, database_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_missing() -> str:
    """Why browser tests cannot run here, or "" when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return ""


def server_on_test_db(env: dict[str, str]) -> ChildProcess:
    """The app on the test database, with no provider settings from the machine
    and no title calls unless ``env`` sets ``CHAT_TITLE_MODEL``."""
    clean = {k: None for k in os.environ if k.startswith(("OPENAI_", "ANTHROPIC_", "CHAT_"))}
    # Removing every CHAT_ variable also removed app_server's "off" default,
    # and an unset CHAT_TITLE_MODEL means titles by the conversation's model.
    quiet = {"CHAT_TITLE_MODEL": "off", "DJANGO_TESTING": "1", "DJANGO_DEBUG": "0"}
    return app_server({**clean, **quiet, **database_env(), **env})


@contextlib.contextmanager
def two_workers(env: dict[str, str], db_blocker) -> Iterator[tuple[ChildProcess, ChildProcess]]:
    """Two app processes on the test database with the same ``env``; both
    are stopped at the end, also when the second one fails to start."""
    with contextlib.ExitStack() as running:
        with db_blocker.unblock():
            a = running.enter_context(server_on_test_db(env))
            b = running.enter_context(server_on_test_db(env))
        yield a, b
