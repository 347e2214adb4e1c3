"""Real server processes for browser and multi-worker tests."""

from __future__ import annotations

import os

from django.db import connection

from conversations.processes import ChildProcess, app_server

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


def database_env() -> dict[str, str]:
    """Environment that points a server process at the test database."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return {"SQLITE_PATH": str(db["NAME"])}
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return {"DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"}


def server_on_test_db(env: dict[str, str]) -> ChildProcess:
    """The app on the test database, with no provider settings from the machine."""
    clean = {k: None for k in os.environ if k.startswith(("OPENAI_", "ANTHROPIC_", "CHAT_"))}
    return app_server({**clean, "DJANGO_TESTING": "1", "DJANGO_DEBUG": "0", **database_env(), **env})
