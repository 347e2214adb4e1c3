"""Server-Sent Events: the one place the API's streams are framed.

``sse`` frames one of a run's events (``Generation.run_events``) for
``/api/v1/``; ``sse_data`` frames a bare ``data:`` line, as OpenAI's chat
completions stream does (``/v1/``), ``[DONE]`` included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sse(event: dict, event_id: str | int | None = None) -> str:
    """One event: its name, its id (``event_id`` or the event's own), and the
    whole event as JSON on one line."""
    return f"id: {event['id'] if event_id is None else event_id}\nevent: {event['event']}\ndata: {_json(event)}\n\n"


def sse_data(value) -> str:
    """A nameless event of ``value`` as JSON (a string as it is: ``[DONE]``)."""
    return f"data: {value if isinstance(value, str) else _json(value)}\n\n"


def sse_response(chunks: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
