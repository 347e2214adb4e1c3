"""Reading Server-Sent Events with httpx, as an API client would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass
class Event:
    id: str
    event: str
    data: dict

    @property
    def kind(self) -> str:
        return self.event


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The response's events, as the SSE specification splits them (a blank line ends one)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield Event(
                    fields.get("id", [""])[-1],
                    fields.get("event", ["message"])[-1],
                    json.loads("\n".join(fields["data"])),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


async def read_all(client: httpx.AsyncClient, method: str, url: str, *, until=None, **kwargs) -> list[Event]:
    """Every event of one streamed request (or those up to the first for which ``until`` is true)."""
    got = []
    async with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events(response):
            got.append(event)
            if until is not None and until(event):
                break
    return got


def text_of(got: list[Event], run_id: str | None = None) -> str:
    return "".join(
        e.data["data"]["text"]
        for e in got
        if e.event == "text_delta" and (run_id is None or e.data["run_id"] == run_id)
    )
