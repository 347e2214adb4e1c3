"""Anthropic Messages API.

Each request goes to its model's endpoint (``ModelSpec.endpoint``: base
URL, the variable holding its key, extra headers; see ``catalog``), with one
cached client per endpoint; the key is read at call time.  The built-in
endpoint ``anthropic`` takes ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``.
The key is passed to the client explicitly, so the SDK never falls back to other credential sources
(ANTHROPIC_AUTH_TOKEN, profiles on disk, workload identity).

History rules (the Messages API wants a user turn first, then alternation):
empty turns are dropped (an errored reply with no text would be an invalid
empty content block), then consecutive same-role turns are merged with a
blank line.  A history that starts with the assistant (say, its opening
user turn was trimmed away) gets ``LEADING_USER_TURN`` in front, so the
assistant's words still reach the model.  A final assistant turn is a
prefill the model continues; the API rejects trailing whitespace there, so
it is stripped.  Only plain text is sent: no thinking blocks or signatures,
whichever model wrote a turn.

The key goes out both as ``Authorization: Bearer`` (what anthropic 2.x sends
for ``api_key``) and as ``x-api-key``, the only header some
Anthropic-compatible endpoints (DeepSeek's ``/anthropic``, Kimi, GLM,
MiniMax) read.

Servers bend the stream (see ``_events``): one whole ``message`` answering a
streaming request is read as that reply; events without ``event:`` lines are
named by their JSON ``type``; a stream that ends without ``message_stop``
before its stop reason, or that carried no Messages event, is a
ProviderError, never an empty reply.  Input tokens come from
``message_start``, or from ``message_delta`` when that carries a non-zero
count (a gateway sent 0 first); a stream without usage yields no Usage.

This module is named like the SDK; ``import anthropic`` below is the SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator

import anthropic
import anyio
import httpx2
from django.conf import settings

from conversations.providers import sse
from conversations.providers.base import (
    ChatMessage,
    ChatRequest,
    ClientCache,
    Endpoint,
    ErrorKind,
    Event,
    Finish,
    FinishReason,
    Provider,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    Usage,
    kind_for_status,
    provider_error,
)

KEY_ENV = "ANTHROPIC_API_KEY"
KEYLESS = "no-key"  # sent to an endpoint that wants no key (the SDK insists on one)
DEFAULT_MAX_TOKENS = 4096  # max_tokens is required; used when neither request nor catalogue sets one
DEFAULT_THINKING_BUDGET = 2048
MIN_THINKING_BUDGET = 1024  # the API's minimum budget_tokens
LEADING_USER_TURN = "(The conversation so far.)"
WHOLE_REPLY_READ_TIMEOUT = 600.0  # see openai.WHOLE_REPLY_READ_TIMEOUT

STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "refusal": FinishReason.REFUSAL,
    "tool_use": FinishReason.TOOL_CALLS,
}
# Error bodies' ``error.type``: it narrows the kind the HTTP status gives
# (base.kind_for_status) and decides alone only for a mid-stream ``event:
# error``, sent with status 200.  The last three come from compatible servers.
KINDS_BY_TYPE = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.PERMISSION,
    "billing_error": ErrorKind.BILLING,
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "api_error": ErrorKind.SERVER,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout_error": ErrorKind.TIMEOUT,
    "content_filter": ErrorKind.CONTENT_FILTER,
    "content_policy_violation": ErrorKind.CONTENT_FILTER,
    "data_inspection_failed": ErrorKind.CONTENT_FILTER,
}
# The SDK's stream iterator does not wrap transport failures mid-stream:
# httpx2 errors (ReadTimeout, RemoteProtocolError, ...) arrive as they are.
_TRANSPORT_ERRORS = (httpx2.RequestError, httpx2.StreamError, anyio.EndOfStream, ssl.SSLError)

clients = ClientCache()


class AnthropicProvider(Provider):
    name = "anthropic"

    def default_endpoint(self) -> Endpoint:
        return Endpoint("anthropic", "anthropic", os.environ.get("ANTHROPIC_BASE_URL") or None, KEY_ENV)

    def warm_up(self, endpoint: Endpoint | None = None) -> None:
        client, _key = _client(endpoint or self.default_endpoint())
        # The SDK imports its resource modules (and builds their pydantic
        # models, ~35 ms) on first use: not during the first reply.
        client.messages.with_streaming_response  # noqa: B018

    def list_models(self, endpoint: Endpoint) -> list[str]:
        api_key = endpoint.required_key()
        connect, read = settings.CHAT_PROVIDER_CONNECT_TIMEOUT, settings.CHAT_PROVIDER_READ_TIMEOUT
        client = anthropic.Anthropic(
            api_key=api_key or KEYLESS,
            default_headers={"x-api-key": api_key or KEYLESS, **endpoint.http_headers()},
            base_url=endpoint.base_url,
            max_retries=0,
            timeout=httpx2.Timeout(read, connect=connect),
        )
        try:
            with client:
                return [model.id for model in client.models.list()]
        except (anthropic.AnthropicError, ValueError, *_TRANSPORT_ERRORS) as exc:
            raise _error(exc, api_key) from exc

    async def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        client, api_key = _client(request.model.endpoint or self.default_endpoint())
        input_tokens = output_tokens = None
        stop_reason = None
        try:
            # The SDK sends the request (auth, base URL, retries, timeouts, and
            # an APIStatusError for a refused one); the body's events are read
            # here as plain JSON rather than as pydantic objects plus a message
            # snapshot per event.  Leaving the block (also by cancellation or
            # aclose) closes the response at once.
            async with client.messages.with_streaming_response.create(**_params(request), stream=True) as response:
                async for kind, data in _events(client, response.http_response):
                    if kind == "message_start":
                        input_tokens = _usage(data.get("message")).get("input_tokens")
                    elif kind == "content_block_delta":
                        # Signature and tool-input deltas (and anything else) are not for display.
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            yield TextDelta(delta.get("text") or "")
                        elif delta.get("type") == "thinking_delta":
                            yield ReasoningDelta(delta.get("thinking") or "")
                    elif kind == "message_delta":
                        stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
                        usage = _usage(data)
                        if usage.get("output_tokens") is not None:
                            output_tokens = usage["output_tokens"]  # cumulative
                        if usage.get("input_tokens"):
                            input_tokens = usage["input_tokens"]
        except (anthropic.AnthropicError, json.JSONDecodeError, *_TRANSPORT_ERRORS) as exc:
            raise _error(exc, api_key) from exc
        if input_tokens is not None or output_tokens is not None:
            yield Usage(input_tokens, output_tokens)
        yield _finish(stop_reason)

    async def complete(self, request: ChatRequest) -> list[Event]:
        client, api_key = _client(request.model.endpoint or self.default_endpoint())
        timeout = httpx2.Timeout(
            max(settings.CHAT_PROVIDER_READ_TIMEOUT, WHOLE_REPLY_READ_TIMEOUT),
            connect=settings.CHAT_PROVIDER_CONNECT_TIMEOUT,
        )
        try:
            message = await client.messages.create(**_params(request), timeout=timeout)
        except (anthropic.AnthropicError, json.JSONDecodeError, *_TRANSPORT_ERRORS) as exc:
            raise _error(exc, api_key) from exc
        content = getattr(message, "content", None) or []
        reasoning = "".join(block.thinking for block in content if block.type == "thinking")
        text = "".join(block.text for block in content if block.type == "text")
        events: list[Event] = [ReasoningDelta(reasoning)] if reasoning else []
        events.append(TextDelta(text))
        # The SDK builds the message without validating it: a server may leave usage out.
        usage = getattr(message, "usage", None)
        counts = (getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None))
        if counts != (None, None):
            events.append(Usage(*counts))
        events.append(_finish(getattr(message, "stop_reason", None)))
        return events


def _client(endpoint: Endpoint) -> tuple[anthropic.AsyncAnthropic, str]:
    """The cached client for ``endpoint`` as the environment and settings are now, and its key."""
    api_key = endpoint.required_key()
    base_url, headers = endpoint.base_url, endpoint.http_headers()
    retries = settings.CHAT_PROVIDER_MAX_RETRIES
    connect, read = settings.CHAT_PROVIDER_CONNECT_TIMEOUT, settings.CHAT_PROVIDER_READ_TIMEOUT

    def build() -> anthropic.AsyncAnthropic:
        timeout = httpx2.Timeout(read, connect=connect)
        return anthropic.AsyncAnthropic(
            api_key=api_key or KEYLESS,
            # The SDK sends the key as a Bearer token only (see the module docstring).
            default_headers={"x-api-key": api_key or KEYLESS, **headers},
            base_url=base_url,
            max_retries=retries,
            timeout=timeout,
            http_client=anthropic.DefaultAioHttpClient(timeout=timeout),
        )

    cache_key = (api_key, base_url, tuple(sorted(headers.items())), retries, connect, read)
    return clients.get(cache_key, build), api_key


# The events of a Messages stream; any other name is skipped.
MESSAGE_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)


async def _events(client: anthropic.AsyncAnthropic, response: httpx2.Response) -> AsyncIterator[tuple[str, dict]]:
    """``(event name, data)`` of a Messages stream, up to ``message_stop``.

    Pings are skipped; an ``error`` event is raised as the SDK's status error
    (status 200, the body's ``error.type`` saying what failed), as the SDK's
    own stream does.  Unlike the SDK (2.x skips unnamed events), an event
    without an ``event:`` line is named by its JSON ``type``.  A JSON body (a
    gateway that does not stream) is one ``message``, yielded as the events
    that would have streamed it.  A body that ends without ``message_stop``
    is whole once a stop reason came, else cut: a CONNECTION ProviderError
    after the events it had; one with no Messages event is a SERVER
    ProviderError.
    """
    if sse.is_json(response.headers.get("content-type", "")):
        body = json.loads(await response.aread())
        if isinstance(body, dict) and body.get("type") == "error":
            raise client._make_status_error(f"{body}", body=body, response=response)
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise provider_error(ErrorKind.SERVER, key_env=KEY_ENV, detail="a JSON body that is no Messages message")
        for event in _message_events(body):
            yield event
        return
    recognised = stopped = finished = False
    async with contextlib.aclosing(sse.events(response.aiter_bytes())) as stream:
        async for kind, data in stream:
            if kind == "ping":
                continue
            if kind == "error":
                try:
                    body = json.loads(data)
                    message = f"{body}"
                except ValueError:
                    body, message = data, data or f"Error code: {response.status_code}"
                raise client._make_status_error(message, body=body, response=response)
            event = json.loads(data)
            if not isinstance(event, dict):
                continue
            kind = kind or str(event.get("type") or "")
            if kind == "error":
                raise client._make_status_error(f"{event}", body=event, response=response)
            if kind not in MESSAGE_EVENTS:
                continue
            recognised = True
            finished = finished or (kind == "message_delta" and bool((event.get("delta") or {}).get("stop_reason")))
            yield kind, event
            if kind == "message_stop":
                stopped = True
    if not recognised:
        raise provider_error(
            ErrorKind.SERVER, key_env=KEY_ENV, detail="a stream with no Messages event in it (HTTP 200)"
        )
    if not stopped and not finished:
        raise provider_error(
            ErrorKind.CONNECTION, key_env=KEY_ENV, detail="the stream ended before its stop reason and message_stop"
        )


def _message_events(message: dict) -> list[tuple[str, dict]]:
    """A whole Messages ``message`` as the events that would have streamed it."""
    events = [("message_start", {"type": "message_start", "message": {**message, "content": []}})]
    for index, block in enumerate(block for block in message["content"] if isinstance(block, dict)):
        if block.get("type") == "text":
            delta = {"type": "text_delta", "text": block.get("text") or ""}
        elif block.get("type") == "thinking":
            delta = {"type": "thinking_delta", "thinking": block.get("thinking") or ""}
        else:
            continue
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    usage = _usage(message)
    final = {"type": "message_delta", "delta": {"stop_reason": message.get("stop_reason")}, "usage": usage}
    events += [("message_delta", final), ("message_stop", {"type": "message_stop"})]
    return events


def _usage(holder: object) -> dict:
    """The ``usage`` object of an event or message, or {} when a server left it out."""
    usage = holder.get("usage") if isinstance(holder, dict) else None
    return usage if isinstance(usage, dict) else {}


def history(messages: list[ChatMessage]) -> list[dict]:
    """Our history as Messages API turns (see the module docstring for the rules)."""
    turns: list[dict] = []
    for message in messages:
        if not message.content.strip() and not message.images:
            continue
        content = _content(message)
        if turns and turns[-1]["role"] == message.role:
            previous = turns[-1]["content"]
            if isinstance(previous, str) and isinstance(content, str):
                turns[-1]["content"] = previous + "\n\n" + content
            else:
                turns[-1]["content"] = _blocks(previous) + _blocks(content)
        else:
            turns.append({"role": message.role, "content": content})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": LEADING_USER_TURN})
    if turns and turns[-1]["role"] == "assistant" and isinstance(turns[-1]["content"], str):
        turns[-1]["content"] = turns[-1]["content"].rstrip()
    return turns


def _content(message: ChatMessage) -> str | list[dict]:
    """A turn's content: its text, or with images base64 image blocks first, then the text."""
    if not message.images:
        return message.content
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.base64()}}
        for image in message.images
    ]
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    return blocks


def _blocks(content: str | list[dict]) -> list[dict]:
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def _params(request: ChatRequest) -> dict:
    spec = request.model
    max_tokens = request.max_tokens or spec.max_tokens or DEFAULT_MAX_TOKENS
    params: dict = {"model": spec.name, "messages": history(request.messages)}
    if request.system.strip():
        params["system"] = request.system
    if spec.thinking:
        budget = max(spec.thinking_budget or DEFAULT_THINKING_BUDGET, MIN_THINKING_BUDGET)
        if budget >= max_tokens:
            # The budget counts against max_tokens (and must stay below it):
            # raise the limit so the visible reply keeps its share.
            max_tokens += budget
        params["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif request.temperature is not None:
        # This SDK version has no ``temperature`` argument; the API still takes it.
        params["extra_body"] = {"temperature": request.temperature}
    if spec.extra_body:
        params["extra_body"] = {**spec.extra_body, **params.get("extra_body", {})}
    params["max_tokens"] = max_tokens
    return params


def _finish(raw: str | None) -> Finish:
    """No stop reason at all is a normal end (the stream ended properly); an unknown one is OTHER."""
    if not raw:
        return Finish(FinishReason.STOP, raw)
    return Finish(STOP_REASONS.get(raw, FinishReason.OTHER), raw)


def _error(exc: Exception, api_key: str) -> ProviderError:
    """The ProviderError for an SDK, transport or malformed-stream failure."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return provider_error(ErrorKind.TIMEOUT, key_env=KEY_ENV, detail=f"{type(exc).__name__}: {exc}", secret=api_key)
    if isinstance(exc, (anthropic.APIConnectionError, *_TRANSPORT_ERRORS)):
        cause = exc.__cause__ if isinstance(exc, anthropic.APIConnectionError) else None
        detail = f"{type(exc).__name__}: {exc}" + (f" ({cause!r})" if cause else "")
        return provider_error(ErrorKind.CONNECTION, key_env=KEY_ENV, detail=detail, secret=api_key)
    if isinstance(exc, anthropic.APIStatusError):
        # The status says what failed, the body's type at most narrows it; a
        # mid-stream ``event: error`` has status 200 and only its type.
        status = exc.status_code if exc.status_code != 200 else None
        type_kind = KINDS_BY_TYPE.get(exc.type or "")
        kind = kind_for_status(status, type_kind) if status else type_kind or ErrorKind.SERVER
        said = exc.api_message if isinstance(exc.api_message, str) else ""
        return provider_error(
            kind, key_env=KEY_ENV, status=status, detail=said or exc.message, secret=api_key, provider_message=said
        )
    return provider_error(ErrorKind.SERVER, key_env=KEY_ENV, detail=f"{type(exc).__name__}: {exc}", secret=api_key)
