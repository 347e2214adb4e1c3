"""The fake provider's side of one HTTP/1.1 connection.

``Connection`` reads requests (keep-alive and pipelining included) and writes
responses: JSON bodies, and chunked ``text/event-stream`` bodies whose chunks
``sse()`` frames.  While a response is in progress it watches the socket for
EOF: a client that hangs up then counts as a disconnect, and the next write or
pause raises ``ClientGone``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}


@dataclass
class Request:
    """One request as read off the connection."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


class ClientGone(Exception):
    """The client closed its connection while we were responding."""


class BadRequest(Exception):
    pass


@dataclass
class Connection:
    """One client connection: a buffered reader, a writer, and EOF watching."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    on_disconnect: Callable[[], None]
    buf: bytearray = field(default_factory=bytearray)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        self.buf += data
        return bool(data)

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed an idle connection."""
        while b"\r\n\r\n" not in self.buf:
            if not await self._fill():
                if self.buf.strip():
                    raise BadRequest("truncated request head")
                return None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError as exc:
            raise BadRequest(lines[0]) from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        self.buf[:] = rest
        while len(self.buf) < length:
            if not await self._fill():
                raise BadRequest("truncated body")
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return Request(method, target, headers, body)

    @contextlib.asynccontextmanager
    async def responding(self):
        """While inside, a client EOF counts as a disconnect (once)."""
        watcher = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        # Bytes arriving now (a pipelined request) stay in buf for the parser.
        with contextlib.suppress(ConnectionError):
            while await self._fill():
                pass
        self.gone.set()
        self.on_disconnect()

    async def write(self, data: bytes) -> None:
        if self.gone.is_set():
            raise ClientGone
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError as exc:
            raise ClientGone from exc

    async def pause(self, seconds: float) -> None:
        """Sleep, but notice at once when the client hangs up meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)
        if self.gone.is_set():
            raise ClientGone

    async def send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
        await self.write(_head(status, head) + body)

    async def start_stream(self, headers: dict[str, str]) -> None:
        head = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **headers,
        }
        await self.write(_head(200, head))

    async def chunk(self, data: str) -> None:
        raw = data.encode()
        await self.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    async def end_stream(self) -> None:
        await self.write(b"0\r\n\r\n")


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Status')}", "connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sse(data: object, event: str | None = None) -> str:
    line = "data: " + (data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)) + "\n\n"
    return f"event: {event}\n{line}" if event else line


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
