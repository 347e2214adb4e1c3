"""Websocket helpers shared by the consumer and durability tests: connect as
a signed-in user, send frames, read frames until the final bubble."""

import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatsite.asgi import application
from devtools.streamview import StreamView, has_delta, is_snapshot


@database_sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(user, conversation, *, origin=b"http://localhost") -> WebsocketCommunicator:
    headers = [(b"host", b"localhost")]
    if origin:
        headers.append((b"origin", origin))
    if user is not None:
        headers.append((b"cookie", await session_cookie(user)))
    communicator = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def is_final(frame: str) -> bool:
    return 'class="msg msg-assistant' in frame and 'hx-swap-oob="outerHTML' in frame and "status-streaming" not in frame


async def until_final(communicator, wait=20.0) -> list[str]:
    frames = []
    while True:
        frame = await communicator.receive_from(timeout=wait)
        frames.append(frame)
        if is_final(frame):
            return frames


def delta_text(frames: list[str]) -> str:
    """The text the frames alone draw into a new reply's empty bubble."""
    return StreamView().apply(frames).text()


async def send(communicator, **fields):
    await communicator.send_to(text_data=json.dumps(fields))


async def first_delta(communicator, wait=10.0) -> list[str]:
    frames = []
    while True:
        frames.append(await communicator.receive_from(timeout=wait))
        if has_delta(frames[-1]):
            return frames


async def composer_error(communicator) -> str:
    """The next frame that shows an error under the composer."""
    while True:
        frame = await communicator.receive_from(timeout=10)
        if 'id="composer-error"' in frame and "alert" in frame and "></div>" not in frame:
            return frame


def column_view(frames: list[str], reply_id) -> StreamView:
    """What a tab shows of one reply of a comparison (its column) while it
    streams: its last snapshot (if it joined with one), then only that reply's
    frames after it."""
    view = StreamView()
    for frame in frames:
        if is_final(frame):
            continue
        if is_snapshot(frame) and f'id="msg-{reply_id}"' in frame:
            view = StreamView(frame)
        elif has_delta(frame) and f"#msg-{reply_id}-" in frame:
            view.apply([frame])
    return view
