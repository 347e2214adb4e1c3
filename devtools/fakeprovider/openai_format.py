"""The OpenAI Chat Completions wire format (``POST /v1/chat/completions``).

Streaming: ``chat.completion.chunk`` events (the role first, ``reasoning_content``
deltas, content deltas or ``tool_calls`` deltas, the finish reason, usage when
``stream_options`` asks for it), then ``data: [DONE]``; a midstream error is a
``data: {"error": …}`` frame.  Non-streaming: one ``chat.completion``.
``error()`` is the body of an error response.  The scenarios that bend the
format (``json-reply``, ``foreign-stream``, ``truncated``, ``no-terminator``,
``no-finish``, ``no-usage``) are described in ``scenarios``.
"""

from __future__ import annotations

import time

from devtools.fakeprovider.connection import Connection, new_id, sse
from devtools.fakeprovider.scenarios import (
    TOOL_ARGUMENTS,
    TOOL_NAME,
    Plan,
    count_words,
    end_partial,
    stamped,
    wait_whole,
)

OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request (fake bad request)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    402: ("unknown_error", "invalid_request_error", "Insufficient Balance"),  # DeepSeek's
    403: ("invalid_request_error", "model_not_allowed", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    529: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
}
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "refusal": "content_filter",
    "tool_calls": "tool_calls",
    None: None,
}


def error(status: int, message: str = "", kind: str | None = None) -> tuple[dict, dict[str, str]]:
    """The body of an error response and its request-id header; ``kind`` overrides the code."""
    error_type, code, default = OPENAI_ERRORS.get(status, ("server_error", None, "Error"))
    payload = {"error": {"message": message or default, "type": error_type, "param": None, "code": kind or code}}
    return payload, {"x-request-id": new_id("req_")}


def reasoning_model_problem(body: dict) -> str:
    """What OpenAI's reasoning models (o1, o3, o4-mini, gpt-5) say about a body they refuse, or ""."""
    if "max_tokens" in body:
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
        )
    if body.get("temperature") not in (None, 1):
        return (
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
            "Only the default (1) value is supported."
        )
    return ""


async def respond(conn: Connection, plan: Plan, body: dict) -> bool:
    """Answer a completion request; False when the connection must not be reused."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if not body.get("stream") or plan.scenario == "json-reply":
        return await _whole(conn, plan, body, max_tokens)
    if plan.scenario == "foreign-stream":
        return await _foreign(conn, plan, max_tokens)
    completion_id, created, model = new_id("chatcmpl-"), int(time.time()), body["model"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and plan.scenario != "no-usage"

    def chunk(delta: dict, finish: str | None = None, *, choices: bool = True, usage: dict | None = None) -> str:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
        }
        if include_usage:
            data["usage"] = usage
        return sse(data)

    await conn.start_stream({"x-request-id": new_id("req_")})
    await conn.chunk(chunk({"role": "assistant", "content": "", "refusal": None}))
    await conn.pause(plan.first_delay)
    sent = 0
    for index, token in enumerate(plan.reasoning_tokens()):
        await conn.pause(plan.delay if index else 0)
        await conn.chunk(chunk({"content": None, "reasoning_content": token}))
        sent += 1
    for index, token in enumerate(plan.text_tokens(max_tokens)):
        await conn.pause(plan.delay if index or sent else 0)
        await conn.chunk(chunk({"content": stamped(token)}))
        sent += 1
    if plan.scenario == "tool-call":
        for index, arguments in enumerate(TOOL_ARGUMENTS):
            await conn.pause(plan.delay if index else 0)
            await conn.chunk(chunk({"tool_calls": [_tool_call_delta(index, arguments)]}))
            sent += 1
    if plan.partial:
        error = {
            "message": "The server had an error while processing your request.",
            "type": plan.error or "server_error",
            "param": None,
            "code": None,
        }
        return await end_partial(conn, plan, sse({"error": error}))
    await conn.chunk(chunk({}, _FINISH_REASONS[plan.finish(max_tokens)]))
    if include_usage:
        prompt = count_words(body)
        usage = {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent}
        await conn.chunk(chunk({}, choices=False, usage=usage))
    if plan.scenario != "no-terminator":
        await conn.chunk(sse("[DONE]"))
    await conn.end_stream()
    return True


def _tool_call_delta(index: int, arguments: str) -> dict:
    """One piece of the tool call; the first names the function."""
    if index:
        return {"index": 0, "function": {"arguments": arguments}}
    return {"index": 0, "id": "call_fake", "type": "function", "function": {"name": TOOL_NAME, "arguments": arguments}}


async def _foreign(conn: Connection, plan: Plan, max_tokens: int | None) -> bool:
    """A stream of events that are no chat.completion.chunk, then ``[DONE]``."""
    await conn.start_stream({"x-request-id": new_id("req_")})
    for index, token in enumerate(plan.text_tokens(max_tokens)):
        await conn.pause(plan.delay if index else plan.first_delay)
        await conn.chunk(sse({"text": stamped(token)}))
    await conn.chunk(sse("[DONE]"))
    await conn.end_stream()
    return True


async def _whole(conn: Connection, plan: Plan, body: dict, max_tokens: int | None) -> bool:
    if not await wait_whole(conn, plan, max_tokens):
        return False
    text = "".join(map(stamped, plan.text_tokens(max_tokens)))
    reasoning = "".join(plan.reasoning_tokens())
    message = {"role": "assistant", "content": text, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if plan.scenario == "tool-call":
        call = {
            "id": "call_fake",
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": "".join(TOOL_ARGUMENTS)},
        }
        message.update(content=None, tool_calls=[call])
    prompt = count_words(body)
    completion = plan.token_count(max_tokens) + len(plan.reasoning_tokens())
    if plan.scenario == "tool-call":
        completion += len(TOOL_ARGUMENTS)
    payload = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH_REASONS[plan.finish(max_tokens)],
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    if plan.scenario == "no-usage":
        del payload["usage"]
    await conn.send_json(200, payload, {"x-request-id": new_id("req_")})
    return True
