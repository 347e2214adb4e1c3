"""Websocket helpers shared by the consumer and durability tests: connect as
a signed-in user, send frames, read frames until the final bubble."""

import html
import json
import re

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatsite.asgi import application

# The parts of a stream frame (conversations/frames.py, _frame.html), in the order they apply.
PART = re.compile(
    r'<section hx-swap-oob="beforeend:#msg-[0-9a-f-]+-done">(?P<append>.*?)</section>'
    r'|<section hx-swap-oob="innerHTML:#msg-[0-9a-f-]+-open">(?P<open>.*?)</section>'
    r'|<span hx-swap-oob="beforeend:#msg-[0-9a-f-]+-tail">(?P<tail>.*?)</span>',
    re.S,
)
OPEN_PART = re.compile(r'<div class="stream-open" id="msg-[0-9a-f-]+-open">')
DONE_PART = re.compile(r'<div class="stream-done" id="msg-[0-9a-f-]+-done">')
TAG = re.compile(r"<[^>]+>")


def text_of(fragment: str) -> str:
    """The text an HTML fragment shows (tags dropped, entities decoded)."""
    return html.unescape(TAG.sub("", fragment)).strip()


class StreamView:
    """What a tab shows of a streaming reply: the finished part and the open
    tail of a snapshot's bubble (or an empty bubble), with frames applied as
    htmx applies them."""

    def __init__(self, snapshot: str = ""):
        self.done = self.open = ""
        if snapshot:
            done_at, open_at = DONE_PART.search(snapshot), OPEN_PART.search(snapshot)
            self.done = snapshot[done_at.end() : open_at.start()].removesuffix("</div>")
            chunk = snapshot[open_at.end() : snapshot.index('<span class="typing"')].rstrip()
            assert chunk.endswith("</div></div>"), chunk
            self.open = chunk.removesuffix("</div></div>")

    def apply(self, frames: list[str]) -> "StreamView":
        for frame in frames:
            for part in PART.finditer(frame):
                if part["append"] is not None:
                    self.done += part["append"]
                elif part["open"] is not None:
                    self.open = part["open"]
                else:
                    paragraph = self.open.rstrip()
                    assert paragraph.endswith("</p>"), f"text appended to a tail that is not a paragraph: {paragraph}"
                    self.open = paragraph.removesuffix("</p>") + part["tail"] + "</p>"
        return self

    @property
    def html(self) -> str:
        return self.done + self.open

    def text(self) -> str:
        return text_of(self.html)


def has_delta(frame: str) -> bool:
    return PART.search(frame) is not None


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
