"""``python -m chatsite.serve``: daphne's command line on uvloop."""

from pathlib import Path

import pytest
from django.conf import settings

from devtools.processes import app_server, database_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _loaded_uvloop(pid: int) -> bool:
    """Whether the process has uvloop's compiled event loop mapped."""
    return "uvloop/loop." in Path(f"/proc/{pid}/maps").read_text()


def _server(extra: dict) -> object:
    env = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": settings.SECRET_KEY, **database_env(), **extra}
    return app_server({"DJANGO_ALLOWED_HOSTS": "127.0.0.1", **env})


def test_the_server_runs_daphne_on_uvloop():
    with _server({}) as server:
        assert _loaded_uvloop(server.pid)
        assert any("Listening on TCP address" in line for line in server.log)


def test_the_server_warms_up_on_its_running_loop_before_the_first_reply():
    # A warm-up that ran before the loop did failed (the SDK clients are kept per loop) and skipped the GC freeze.
    with _server({"OPENAI_API_KEY": "sk-test-not-a-real-key", "CHAT_MODELS": "openai:gpt-4.1-mini"}) as server:
        assert "Warmed up in" in server.wait_for("Warmed up")
        assert not any("Traceback" in line for line in server.log)


def test_chat_uvloop_0_keeps_asyncios_own_loop():
    with _server({"CHAT_UVLOOP": "0"}) as server:
        assert not _loaded_uvloop(server.pid)
        assert any("Listening on TCP address" in line for line in server.log)
