"""``python -m chatsite.serve``: daphne's command line on uvloop."""

import asyncio
import json
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


async def _handshake_and_first_frame(server, offer_deflate: bool) -> tuple[str, str]:
    """The negotiated Sec-WebSocket-Extensions, and the frame with the sent message."""
    import websockets
    from asgiref.sync import sync_to_async

    from devtools.benchstats import prepare

    cookie, (conversation,) = await sync_to_async(prepare)(1, "openai:gpt-4.1-mini")
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws/conversations/{conversation.id}/",
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": cookie},
        compression="deflate" if offer_deflate else None,
    ) as ws:
        await ws.send(json.dumps({"action": "send", "text": "压缩一下 deflate 🙂"}))
        frames = [await asyncio.wait_for(ws.recv(), 30) for _ in range(2)]  # the acknowledgement, the bubbles
        return ws.response.headers.get("Sec-WebSocket-Extensions", ""), frames[1]


CHAT = {"OPENAI_API_KEY": "sk-test-not-a-real-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}


def test_the_server_declines_permessage_deflate_by_default():
    with _server({**CHAT, "CHAT_MODELS": "openai:gpt-4.1-mini"}) as server:
        extensions, frame = asyncio.run(_handshake_and_first_frame(server, offer_deflate=True))
    assert extensions == ""
    assert "压缩一下 deflate 🙂" in frame


def test_chat_ws_deflate_1_accepts_a_browsers_offer_with_a_small_window():
    with _server({**CHAT, "CHAT_MODELS": "openai:gpt-4.1-mini", "CHAT_WS_DEFLATE": "1"}) as server:
        extensions, frame = asyncio.run(_handshake_and_first_frame(server, offer_deflate=True))
    assert extensions.startswith("permessage-deflate")
    assert "client_max_window_bits=11" in extensions
    assert "压缩一下 deflate 🙂" in frame  # compressed on the wire, whole after inflating
