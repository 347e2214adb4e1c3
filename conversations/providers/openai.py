"""OpenAI Chat Completions, and every OpenAI-compatible server.

Each request goes to its model's endpoint (``ModelSpec.endpoint``: base
URL, the variable holding its key, extra headers; see ``catalog``), with one
cached client per endpoint; the key is read at call time.  The built-in
endpoint ``openai`` takes the SDK's own variables, ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``.  DeepSeek, Qwen, Ollama, vLLM, llama.cpp, LM Studio and
OpenRouter are endpoints of this kind.  ``max_tokens`` rather than ``max_completion_tokens`` is sent,
because OpenAI-compatible servers widely accept only the former.
DeepSeek-style ``reasoning_content`` (and OpenRouter/vLLM ``reasoning``)
deltas become ReasoningDelta.

Servers bend the stream (see ``_chunks``): one whole ``chat.completion``
answering a streaming request is read as that reply; a stream that ends
without ``data: [DONE]`` before its finish reason, or that carried no chunk of
this format, is a ProviderError, never an empty reply; a stream with no
finish reason that ends properly ended normally (STOP); one without usage
(``stream_options`` ignored) yields no Usage.

This module is named like the SDK; ``import openai`` below is the SDK
(absolute import), not this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import httpx2
import openai
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

KEY_ENV = "OPENAI_API_KEY"
# The SDK insists on a key; a server that wants none (Ollama) gets this one.
KEYLESS = "no-key"
# A non-streaming reply arrives only once fully generated, so it gets at
# least this long (seconds) instead of the streaming read timeout.
WHOLE_REPLY_READ_TIMEOUT = 600.0
# Seconds to read the rest of a stream's body after [DONE] (its chunked terminator
# usually arrives at once; a busy machine took over 0.1 s, and the connection
# was then dropped instead of going back to the pool).
DRAIN_TIMEOUT = 0.5

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}
# Error bodies' code/type: they narrow the kind the HTTP status gives
# (base.kind_for_status) and decide alone only for a mid-stream error frame,
# which carries no status.  DashScope (Qwen) refuses content with
# ``data_inspection_failed``; OpenAI's 429 ``insufficient_quota`` is a bill.
_KINDS_BY_TYPE = {
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "requests": ErrorKind.RATE_LIMIT,
    "tokens": ErrorKind.RATE_LIMIT,
    "overloaded": ErrorKind.OVERLOADED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "content_filter": ErrorKind.CONTENT_FILTER,
    "content_policy_violation": ErrorKind.CONTENT_FILTER,
    "data_inspection_failed": ErrorKind.CONTENT_FILTER,
    "insufficient_quota": ErrorKind.BILLING,
}

# OpenAI's reasoning models, when the catalogue does not say: o1, o3-mini, o4-mini, gpt-5…
REASONING_MODEL = re.compile(r"^(o[1-9](-|$)|gpt-5)")

# Sent to the model, not shown to the person, so it is not translated.
CONTINUE_PROMPT = "Continue exactly where your previous message stopped. Do not repeat anything you already wrote."

clients = ClientCache()


class OpenAIProvider(Provider):
    name = "openai"

    def default_endpoint(self) -> Endpoint:
        return Endpoint("openai", "openai", os.environ.get("OPENAI_BASE_URL") or None, KEY_ENV)

    def warm_up(self, endpoint: Endpoint | None = None) -> None:
        client, _key = _client(endpoint or self.default_endpoint())
        # The SDK imports its resource modules (and builds their pydantic
        # models, ~35 ms) on first use: not during the first reply.
        client.chat.completions.with_streaming_response  # noqa: B018

    def list_models(self, endpoint: Endpoint) -> list[str]:
        api_key = endpoint.required_key()
        connect, read = settings.CHAT_PROVIDER_CONNECT_TIMEOUT, settings.CHAT_PROVIDER_READ_TIMEOUT
        client = openai.OpenAI(
            api_key=api_key or KEYLESS,
            base_url=endpoint.base_url,
            default_headers=endpoint.http_headers(),
            max_retries=0,
            timeout=httpx2.Timeout(read, connect=connect),
        )
        try:
            with client:
                return [model.id for model in client.models.list()]
        except (openai.OpenAIError, ValueError) as exc:
            raise _error(exc, api_key) from exc

    async def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        client, api_key = _client(request.model.endpoint or self.default_endpoint())
        usage: Usage | None = None
        finish = _finish(None)  # a stream that ends properly without a finish reason ended normally
        try:
            # The SDK sends the request (auth, base URL, retries, timeouts, and
            # an APIStatusError for a refused one); the body's chunks are read
            # here as plain JSON rather than as one pydantic object each.
            # Leaving the block (also by cancellation or aclose) closes the response at once.
            async with client.chat.completions.with_streaming_response.create(
                **_params(request), stream=True, stream_options={"include_usage": True}
            ) as response:
                async for data in _chunks(response.http_response):
                    if isinstance(data.get("usage"), dict):
                        counts = (data["usage"].get("prompt_tokens"), data["usage"].get("completion_tokens"))
                        if counts != (None, None):
                            usage = Usage(*counts)
                    for choice in data.get("choices") or ():
                        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                            continue
                        for event in _delta_events(choice.get("delta") or {}):
                            yield event
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise _error(exc, api_key) from exc
        if usage is not None:
            yield usage
        yield finish

    async def complete(self, request: ChatRequest) -> list[Event]:
        client, api_key = _client(request.model.endpoint or self.default_endpoint())
        timeout = httpx2.Timeout(
            max(settings.CHAT_PROVIDER_READ_TIMEOUT, WHOLE_REPLY_READ_TIMEOUT),
            connect=settings.CHAT_PROVIDER_CONNECT_TIMEOUT,
        )
        try:
            completion = await client.chat.completions.create(**_params(request), timeout=timeout)
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise _error(exc, api_key) from exc
        events: list[Event] = []
        finish = Finish(FinishReason.OTHER)
        if completion.choices:
            choice = completion.choices[0]
            reasoning = _reasoning(choice.message)
            if reasoning:
                events.append(ReasoningDelta(reasoning))
            events.append(TextDelta(choice.message.content or choice.message.refusal or ""))
            finish = _finish(choice.finish_reason)
        if completion.usage is not None:
            events.append(Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens))
        events.append(finish)
        return events


def _client(endpoint: Endpoint) -> tuple[openai.AsyncOpenAI, str]:
    """The cached client for ``endpoint`` as the environment and settings are now, and its key."""
    api_key = endpoint.required_key()
    base_url, headers = endpoint.base_url, endpoint.http_headers()
    retries = settings.CHAT_PROVIDER_MAX_RETRIES
    connect, read = settings.CHAT_PROVIDER_CONNECT_TIMEOUT, settings.CHAT_PROVIDER_READ_TIMEOUT

    def build() -> openai.AsyncOpenAI:
        timeout = httpx2.Timeout(read, connect=connect)
        return openai.AsyncOpenAI(
            api_key=api_key or KEYLESS,
            base_url=base_url,
            default_headers=headers,
            max_retries=retries,
            timeout=timeout,
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
        )

    cache_key = (api_key, base_url, tuple(sorted(headers.items())), retries, connect, read)
    return clients.get(cache_key, build), api_key


def _message(message: ChatMessage) -> dict:
    """One turn; with images, content parts: the text, then each image as a data URL."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts = [{"type": "text", "text": message.content}] if message.content.strip() else []
    parts += [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in message.images]
    return {"role": message.role, "content": parts}


def _params(request: ChatRequest) -> dict:
    """Chat Completions arguments: system first, empty turns dropped, optional knobs only when set."""
    messages = [{"role": "system", "content": request.system}] if request.system.strip() else []
    # An errored reply with no text is not worth replaying (and some servers reject it).
    messages += [_message(m) for m in request.messages if m.content.strip() or m.images]
    if request.extra.get("continuation") and messages and messages[-1]["role"] == "assistant":
        # Chat Completions answers a trailing assistant turn afresh rather than
        # extending it (unlike Anthropic's prefill), so ask for the rest.
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    spec = request.model
    params: dict = {"model": spec.name, "messages": messages}
    reasoning = spec.reasoning_model if spec.reasoning_model is not None else bool(REASONING_MODEL.match(spec.name))
    max_tokens = request.max_tokens or spec.max_tokens
    if max_tokens:
        # OpenAI's reasoning models refuse max_tokens (and any temperature but the default).
        params["max_completion_tokens" if reasoning else "max_tokens"] = max_tokens
    if request.temperature is not None and not reasoning:
        params["temperature"] = request.temperature
    if spec.reasoning_effort:
        params["reasoning_effort"] = spec.reasoning_effort
    extra = dict(spec.extra_body or {})
    if spec.thinking_style == "enable_thinking":  # Qwen (DashScope, vLLM)
        extra["enable_thinking"] = spec.thinking
        if spec.thinking and spec.thinking_budget:
            extra["thinking_budget"] = spec.thinking_budget
    elif spec.thinking_style == "thinking_type":  # Kimi, GLM
        extra["thinking"] = {"type": "enabled" if spec.thinking else "disabled"}
    if extra:
        params["extra_body"] = extra
    return params


async def _chunks(response: httpx2.Response) -> AsyncIterator[dict]:
    """The JSON objects of a Chat Completions stream, up to ``[DONE]``.

    Transport failures become the SDK's APITimeoutError / APIConnectionError
    and an ``{"error": ...}`` chunk its APIError, as the SDK's own stream does.
    After ``[DONE]`` the rest of the body is read (for at most
    ``DRAIN_TIMEOUT``), so that the connection goes back to the pool: leaving
    the byte iterator early would make httpx close the response, and the
    next reply would open a new connection.

    Servers that bend the format: a JSON body (a gateway that does not
    stream) is one ``chat.completion``, yielded as the one chunk that would
    have carried it (each choice's ``message`` as its ``delta``).  A body that
    ends without ``[DONE]`` is whole once a finish reason came (some servers
    leave the terminator out), else cut: a CONNECTION ProviderError after the
    chunks it had.  A body with no chunk of this format (none with
    ``choices`` or ``usage``) is a SERVER ProviderError.
    """
    done = recognised = finished = False
    try:
        if sse.is_json(response.headers.get("content-type", "")):
            completion = json.loads(await response.aread())
            if isinstance(completion, dict) and completion.get("error"):
                raise _stream_error(completion["error"], response)
            if isinstance(completion, dict) and isinstance(completion.get("choices"), list):
                done = recognised = True
                choices = [{**c, "delta": c.get("message") or {}} for c in completion["choices"] if isinstance(c, dict)]
                yield {**completion, "choices": choices}
        else:
            async with (
                asyncio.timeout(None) as drain,
                contextlib.aclosing(sse.events(response.aiter_bytes())) as stream,
            ):
                async for _, data in stream:
                    if done:
                        continue
                    if data.startswith("[DONE]"):
                        done = True
                        drain.reschedule(asyncio.get_running_loop().time() + DRAIN_TIMEOUT)
                        continue
                    chunk = json.loads(data)
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):
                        raise _stream_error(chunk["error"], response)
                    if isinstance(chunk.get("choices"), list) or isinstance(chunk.get("usage"), dict):
                        recognised = True
                        choices = chunk.get("choices") or ()
                        finished = finished or any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
                    yield chunk
    except (TimeoutError, httpx2.RequestError, httpx2.StreamError, ssl.SSLError, anyio.EndOfStream) as exc:
        if not done:
            if isinstance(exc, httpx2.TimeoutException | TimeoutError):
                raise openai.APITimeoutError(request=response.request) from exc
            raise openai.APIConnectionError(request=response.request) from exc
        # else the reply is whole; only the connection is lost
    if not recognised:
        kind = "a JSON body" if sse.is_json(response.headers.get("content-type", "")) else "a stream"
        raise provider_error(
            ErrorKind.SERVER, key_env=KEY_ENV, detail=f"{kind} with no Chat Completions chunk in it (HTTP 200)"
        )
    if not done and not finished:
        raise provider_error(
            ErrorKind.CONNECTION, key_env=KEY_ENV, detail="the stream ended before its finish reason and data: [DONE]"
        )


def _stream_error(error: object, response: httpx2.Response) -> openai.APIError:
    """The SDK's APIError for an ``{"error": ...}`` in a 200 body."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message, response.request, body=error)


def _reasoning(delta: object) -> str:
    """DeepSeek's ``reasoning_content`` or OpenRouter/vLLM's ``reasoning`` (extra fields on the model)."""
    for name in ("reasoning_content", "reasoning"):
        value = delta.get(name) if isinstance(delta, dict) else getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _delta_events(delta: dict) -> list[Event]:
    events: list[Event] = []
    reasoning = _reasoning(delta)
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    content, refusal = delta.get("content"), delta.get("refusal")
    if content:
        events.append(TextDelta(content))
    if refusal:
        events.append(TextDelta(refusal))
    return events


def _finish(raw: str | None) -> Finish:
    """No finish reason at all is a normal end (the reply arrived whole); an unknown one is OTHER."""
    if not raw:
        return Finish(FinishReason.STOP, raw)
    return Finish(FINISH_REASONS.get(raw, FinishReason.OTHER), raw)


def _error(exc: Exception, api_key: str) -> ProviderError:
    """The ProviderError for an SDK (or malformed-stream) failure."""
    if isinstance(exc, openai.APITimeoutError):
        return provider_error(ErrorKind.TIMEOUT, key_env=KEY_ENV, detail=str(exc), secret=api_key)
    if isinstance(exc, openai.APIConnectionError):
        detail = f"{exc}: {exc.__cause__!r}" if exc.__cause__ else str(exc)
        return provider_error(ErrorKind.CONNECTION, key_env=KEY_ENV, detail=detail, secret=api_key)
    if not isinstance(exc, openai.APIError):
        return provider_error(ErrorKind.SERVER, key_env=KEY_ENV, detail=f"{type(exc).__name__}: {exc}", secret=api_key)
    body = exc.body if isinstance(exc.body, dict) else {}
    said = body.get("message") if isinstance(body.get("message"), str) else ""
    code = exc.code if isinstance(exc.code, str) else ""  # OpenRouter's is a number
    type_kind = _KINDS_BY_TYPE.get(code) or _KINDS_BY_TYPE.get(exc.type or "")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        kind = kind_for_status(status, type_kind)
        return provider_error(
            kind, key_env=KEY_ENV, status=status, detail=said or exc.message, secret=api_key, provider_message=said
        )
    # A ``data: {"error": ...}`` frame in the middle of a stream.
    kind = type_kind or ErrorKind.SERVER
    return provider_error(kind, key_env=KEY_ENV, detail=said or exc.message, secret=api_key, provider_message=said)
