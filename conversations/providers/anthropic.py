"""Anthropic Messages API.

The key and endpoint come from ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL``, read at call time.  The key is passed to the client
explicitly, so the SDK never falls back to other credential sources
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
# Error bodies' ``error.type``; a mid-stream ``event: error`` has only this (status 200).
KINDS_BY_TYPE = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.PERMISSION,
    "billing_error": ErrorKind.PERMISSION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "api_error": ErrorKind.SERVER,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout_error": ErrorKind.TIMEOUT,
}
# The SDK's stream iterator does not wrap transport failures mid-stream:
# httpx2 errors (ReadTimeout, RemoteProtocolError, ...) arrive as they are.
_TRANSPORT_ERRORS = (httpx2.RequestError, httpx2.StreamError, anyio.EndOfStream, ssl.SSLError)

clients = ClientCache()


class AnthropicProvider(Provider):
    name = "anthropic"

    def is_configured(self) -> bool:
        return bool(os.environ.get(KEY_ENV))

    def warm_up(self) -> None:
        client, _key = _client()
        # The SDK imports its resource modules (and builds their pydantic
        # models, ~35 ms) on first use: not during the first reply.
        client.messages.with_streaming_response  # noqa: B018

    async def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        client, api_key = _client()
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
                        input_tokens = data["message"]["usage"]["input_tokens"]
                    elif kind == "content_block_delta":
                        # Signature deltas (and anything else) are not for display.
                        delta = data["delta"]
                        if delta["type"] == "text_delta":
                            yield TextDelta(delta["text"])
                        elif delta["type"] == "thinking_delta":
                            yield ReasoningDelta(delta["thinking"])
                    elif kind == "message_delta":
                        stop_reason = data["delta"].get("stop_reason")
                        output_tokens = data["usage"]["output_tokens"]  # cumulative
        except (anthropic.AnthropicError, json.JSONDecodeError, *_TRANSPORT_ERRORS) as exc:
            raise _error(exc, api_key) from exc
        if input_tokens is not None or output_tokens is not None:
            yield Usage(input_tokens, output_tokens)
        yield _finish(stop_reason)

    async def complete(self, request: ChatRequest) -> list[Event]:
        client, api_key = _client()
        timeout = httpx2.Timeout(
            max(settings.CHAT_PROVIDER_READ_TIMEOUT, WHOLE_REPLY_READ_TIMEOUT),
            connect=settings.CHAT_PROVIDER_CONNECT_TIMEOUT,
        )
        try:
            message = await client.messages.create(**_params(request), timeout=timeout)
        except (anthropic.AnthropicError, json.JSONDecodeError, *_TRANSPORT_ERRORS) as exc:
            raise _error(exc, api_key) from exc
        reasoning = "".join(block.thinking for block in message.content if block.type == "thinking")
        text = "".join(block.text for block in message.content if block.type == "text")
        events: list[Event] = [ReasoningDelta(reasoning)] if reasoning else []
        events += [
            TextDelta(text),
            Usage(message.usage.input_tokens, message.usage.output_tokens),
            _finish(message.stop_reason),
        ]
        return events


def _client() -> tuple[anthropic.AsyncAnthropic, str]:
    """The cached client for the current environment and settings, and its key."""
    api_key = os.environ.get(KEY_ENV, "")
    if not api_key:
        raise provider_error(ErrorKind.AUTH, key_env=KEY_ENV, detail=f"{KEY_ENV} is not set")
    base_url = os.environ.get("ANTHROPIC_BASE_URL") or None
    retries = settings.CHAT_PROVIDER_MAX_RETRIES
    connect, read = settings.CHAT_PROVIDER_CONNECT_TIMEOUT, settings.CHAT_PROVIDER_READ_TIMEOUT

    def build() -> anthropic.AsyncAnthropic:
        timeout = httpx2.Timeout(read, connect=connect)
        return anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=retries,
            timeout=timeout,
            http_client=anthropic.DefaultAioHttpClient(timeout=timeout),
        )

    return clients.get((api_key, base_url, retries, connect, read), build), api_key


async def _events(client: anthropic.AsyncAnthropic, response: httpx2.Response) -> AsyncIterator[tuple[str, dict]]:
    """``(event name, data)`` of a Messages stream, as the SDK's own stream reads it:
    pings and unnamed events skipped, an ``error`` event raised as the SDK's
    status error (status 200, the body's ``error.type`` saying what failed)."""
    async with contextlib.aclosing(sse.events(response.aiter_bytes())) as stream:
        async for kind, data in stream:
            if kind in ("", "ping"):
                continue
            if kind == "error":
                try:
                    body = json.loads(data)
                    message = f"{body}"
                except ValueError:
                    body, message = data, data or f"Error code: {response.status_code}"
                raise client._make_status_error(message, body=body, response=response)
            yield kind, json.loads(data)


def history(messages: list[ChatMessage]) -> list[dict]:
    """Our history as Messages API turns (see the module docstring for the rules)."""
    turns: list[dict] = []
    for message in messages:
        if not message.content.strip():
            continue
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"] += "\n\n" + message.content
        else:
            turns.append({"role": message.role, "content": message.content})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": LEADING_USER_TURN})
    if turns and turns[-1]["role"] == "assistant":
        turns[-1]["content"] = turns[-1]["content"].rstrip()
    return turns


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
    params["max_tokens"] = max_tokens
    return params


def _finish(raw: str | None) -> Finish:
    return Finish(STOP_REASONS.get(raw or "", FinishReason.OTHER), raw)


def _error(exc: Exception, api_key: str) -> ProviderError:
    """The ProviderError for an SDK, transport or malformed-stream failure."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return provider_error(ErrorKind.TIMEOUT, key_env=KEY_ENV, detail=f"{type(exc).__name__}: {exc}", secret=api_key)
    if isinstance(exc, (anthropic.APIConnectionError, *_TRANSPORT_ERRORS)):
        cause = exc.__cause__ if isinstance(exc, anthropic.APIConnectionError) else None
        detail = f"{type(exc).__name__}: {exc}" + (f" ({cause!r})" if cause else "")
        return provider_error(ErrorKind.CONNECTION, key_env=KEY_ENV, detail=detail, secret=api_key)
    if isinstance(exc, anthropic.APIStatusError):
        # The body's type is the more precise; a mid-stream ``event: error`` has status 200.
        status = exc.status_code if exc.status_code != 200 else None
        kind = KINDS_BY_TYPE.get(exc.type or "") or (kind_for_status(status) if status else ErrorKind.SERVER)
        return provider_error(
            kind, key_env=KEY_ENV, status=status, detail=exc.api_message or exc.message, secret=api_key
        )
    return provider_error(ErrorKind.SERVER, key_env=KEY_ENV, detail=f"{type(exc).__name__}: {exc}", secret=api_key)
