"""An OpenAI-compatible gateway, ``/v1/``: ``POST /v1/chat/completions``
(streamed and not) and ``GET /v1/models``, so any OpenAI SDK client can use
this app with a per-user key, its limits and budgets.  Transport only, as
``conversations.api`` is: each call is a server-owned run (``actions``),
stateless by default; with ``"store": true`` it is recorded as a new
conversation (in the sidebar, search and admin review).

A client that hangs up on a stream stops its run (a script that gave up
does not want to pay for the rest); a stored one goes on, as in the browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Literal

from django.utils.translation import gettext as _
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, ValidationError

from conversations import actions, providers, runs
from conversations.api import ApiKeyAuth, open_urls
from conversations.eventstream import sse_data, sse_response
from conversations.generation import reply_result
from conversations.providers.base import ChatMessage

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="chatsite OpenAI-compatible API",
    version="1-openai",
    urls_namespace="openai_v1",
    auth=ApiKeyAuth(),
    docs_url=None,
)

FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}


def _error(request, status: int, message: str, kind: str, code: str | None = None):
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return api.create_response(request, body, status=status)


class Refused(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@api.exception_handler(Refused)
def _refused(request, exc: Refused):
    return _error(request, exc.status, exc.message, exc.kind)


@api.exception_handler(actions.ReplyRefused)
def _reply_refused(request, exc: actions.ReplyRefused):
    return _error(request, 429, exc.message, "rate_limit_error", "rate_limit_exceeded")


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return _error(request, 401, _("Incorrect API key provided."), "invalid_request_error", "invalid_api_key")


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    return _error(request, 400, json.dumps(exc.errors, default=str)[:1000], "invalid_request_error")


class ContentPart(Schema):
    type: str
    text: str = ""


class ChatMessageIn(Schema):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(Schema):
    include_usage: bool = False


class CompletionIn(Schema):
    model: str
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    store: bool = False
    metadata: dict = {}


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(part.type != "text" for part in content):
        raise Refused(400, _("Only text content parts are accepted here."))
    return "".join(part.text for part in content)


def _split(messages: list[ChatMessageIn]) -> tuple[str, list[ChatMessage]]:
    """The system prompt (system and developer messages, joined) and the turns."""
    system = "\n\n".join(_text(m.content) for m in messages if m.role in ("system", "developer"))
    turns = [ChatMessage(role=m.role, content=_text(m.content)) for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise Refused(400, _("The last message must be the user's, with some text."))
    return system, turns


@api.get("/models", summary="The models this server offers")
def models(request):
    return {
        "object": "list",
        "data": [
            {"id": spec.key, "object": "model", "created": 0, "owned_by": spec.endpoint_name}
            for spec in providers.offered_models()
        ],
    }


@api.post("/chat/completions", summary="Chat completions, OpenAI's wire format, on this server's runs")
async def chat_completions(request, body: CompletionIn):
    user = request.auth
    if providers.get_model(body.model) is None:
        raise Refused(404, _("The model %(model)s does not exist here.") % {"model": body.model}, "not_found_error")
    system, turns = _split(body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    if body.store:
        running = await actions.start_recorded(
            user, body.model, turns, system, tags=("openai",), metadata=body.metadata
        )
    else:
        run = actions.StatelessRun(
            body.model,
            turns,
            system=system,
            temperature=body.temperature,
            max_tokens=max_tokens,
            tags=("openai",),
            metadata=body.metadata,
        )
        (running,) = await actions.start_stateless(user, [run])
    runs.keep(running)
    head = {"id": f"chatcmpl-{running.message.id}", "created": int(time.time()), "model": body.model}
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(running.message.id, user, head, usage, cancel=not body.store))
    try:
        await running.done.wait()
    except asyncio.CancelledError:
        if not body.store:
            running.stop()
        raise
    result = reply_result(running.message)
    if result["status"] == "error":
        return _error(request, 502, result["error"]["message"], "api_error", result["error"]["kind"])
    message = {"role": "assistant", "content": result["content"]}
    if result["reasoning"]:
        message["reasoning_content"] = result["reasoning"]
    return {
        **head,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": FINISH.get(result["finish_reason"], "stop")}],
        "usage": _usage(result["usage"]),
    }


def _usage(used: dict | None) -> dict:
    tokens_in, tokens_out = (used or {}).get("input_tokens") or 0, (used or {}).get("output_tokens") or 0
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


async def _chunks(run_id, user, head: dict, include_usage: bool, *, cancel: bool):
    chunk = {**head, "object": "chat.completion.chunk"}

    def choice(delta: dict, finish=None) -> str:
        return sse_data({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    finished = False
    try:
        yield choice({"role": "assistant", "content": ""})
        used = None
        async for batch in runs.listen(run_id, user):
            parts = []
            for event in batch:
                kind, data = event["event"], event["data"]
                if kind == "text_delta":
                    parts.append(choice({"content": data["text"]}))
                elif kind == "reasoning_delta":
                    parts.append(choice({"reasoning_content": data["text"]}))
                elif kind == "usage":
                    used = data
                elif kind == "error":
                    parts.append(
                        sse_data({"error": {"message": data["message"], "type": "api_error", "code": data["kind"]}})
                    )
                elif kind == "finish" and data["reason"] != "error":
                    parts.append(choice({}, FINISH.get(data["reason"], "stop")))
                elif kind == "run_end":
                    if include_usage:
                        parts.append(sse_data({**chunk, "choices": [], "usage": _usage(used)}))
                    parts.append(sse_data("[DONE]"))
            if parts:
                yield "".join(parts)
        finished = True
    except Exception:
        logger.exception("the chunks of completion %s broke off", run_id)
        yield sse_data({"error": {"message": _("The reply could not be read."), "type": "api_error", "code": None}})
        yield sse_data("[DONE]")
        finished = True
    finally:
        if not finished and cancel:
            running = runs.local(run_id)
            if running is not None:
                running.stop()


def urls():
    return open_urls(api)
