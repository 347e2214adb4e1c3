"""A small, fast server-sent-events reader for the providers' streaming responses.

The SDKs turn every streamed chunk into a pydantic object (about a third of a
server's CPU per token when many replies stream at once); the providers here
keep the SDKs for the request (auth, base URL, retries, timeouts, status
error mapping) and read the body's events with this instead.

It follows the SSE rules the providers rely on: lines end with ``\\n``,
``\\r\\n`` or ``\\r``; a blank line ends an event; ``data:`` lines of one event
are joined with ``\\n``; a single space after the colon is dropped; ``event:``
names the event; comments (``:``) and other fields are ignored.

``is_json()`` tells a response that is not a stream at all: some gateways
answer a streaming request with one whole JSON body, which the providers then
read as a non-streamed reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` for each event of a byte stream (``event`` is "" when unnamed)."""
    buffer = b""
    event = ""
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                continue  # a lone \r may be the first half of \r\n: wait for the next chunk
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            if not raw:
                if data:
                    yield event, "\n".join(data)
                event, data = "", []
                continue
            line = raw.decode("utf-8")
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    if buffer.endswith(b"\r"):
        buffer = buffer[:-1]
    if buffer:
        name, _, value = buffer.decode("utf-8").partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield event, "\n".join(data)  # a stream that ended without the final blank line


def is_json(content_type: str) -> bool:
    """True for a JSON media type (``application/json``, ``…+json``), whatever its parameters."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")
