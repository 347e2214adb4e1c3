"""The Anthropic Messages wire format (``POST /v1/messages``).

Streaming: ``message_start``, ``ping``, a thinking block (with its signature)
for the reasoning scenario, the text block's deltas (or a ``tool_use`` block's
``input_json_delta``s), ``message_delta`` with the stop reason and usage,
``message_stop``; a midstream error is an ``event: error``.  Non-streaming:
one ``message``.  ``problem()`` is the 400 the real API gives for a malformed
body; ``error()`` is the body of an error response.  The scenarios that bend
the format (``json-reply``, ``unnamed-events``, ``foreign-stream``,
``truncated``, ``no-terminator``, ``no-finish``, ``no-usage``,
``late-input-tokens``) are described in ``scenarios``.
"""

from __future__ import annotations

import json

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

SIGNATURE = "ZmFrZS1zaWduYXR1cmU="

ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request (fake bad request)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model not found"),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "refusal": "refusal",
    "tool_calls": "tool_use",
    None: None,
}


def error(status: int, message: str = "", kind: str | None = None) -> tuple[dict, dict[str, str]]:
    """The body of an error response and its request-id header; ``kind`` overrides the type."""
    error_type, default = ANTHROPIC_ERRORS.get(status, ("api_error", "Error"))
    payload = {
        "type": "error",
        "error": {"type": kind or error_type, "message": message or default},
        "request_id": new_id("req_"),
    }
    return payload, {"request-id": payload["request_id"]}


def problem(body: dict) -> str:
    """The 400 message the real Messages API would give for ``body``, or ""."""
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for number, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{number}: Input should be an object"
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{number}.role: Input should be 'user' or 'assistant'"
        if content == "" or content == []:
            return f"messages.{number}: text content blocks must be non-empty"
    if messages[-1].get("role") == "assistant" and str(messages[-1].get("content")).rstrip() != str(
        messages[-1].get("content")
    ):
        return "final assistant content cannot end with trailing whitespace"
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        if not 1024 <= thinking.get("budget_tokens", 0) < body["max_tokens"]:
            return "thinking.budget_tokens: must be >= 1024 and less than max_tokens"
        if "temperature" in body:
            return "temperature may only be set to 1 when thinking is enabled"
    return ""


async def respond(conn: Connection, plan: Plan, body: dict) -> bool:
    """Answer a Messages request; False when the connection must not be reused."""
    max_tokens = body.get("max_tokens")
    if not body.get("stream") or plan.scenario == "json-reply":
        return await _whole(conn, plan, body, max_tokens)
    model = body["model"]
    named = plan.scenario != "unnamed-events"

    async def event(kind: str, data: dict) -> None:
        await conn.chunk(sse({"type": kind, **data}, event=kind if named else None))

    await conn.start_stream({"request-id": new_id("req_")})
    if plan.scenario == "foreign-stream":
        for index, token in enumerate(plan.text_tokens(max_tokens)):
            await conn.pause(plan.delay if index else plan.first_delay)
            await conn.chunk(sse({"text": stamped(token)}))
        await conn.end_stream()
        return True
    prompt = count_words(body)
    message = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0 if plan.scenario == "late-input-tokens" else prompt, "output_tokens": 1},
    }
    if plan.scenario == "no-usage":
        del message["usage"]
    await event("message_start", {"message": message})
    await event("ping", {})
    await conn.pause(plan.first_delay)
    sent, index = 0, 0
    if plan.reasoning_tokens():
        await event(
            "content_block_start",
            {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        )
        for token in plan.reasoning_tokens():
            await conn.pause(plan.delay if sent else 0)
            await event("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": token}})
            sent += 1
        await event("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": SIGNATURE}})
        await event("content_block_stop", {"index": 0})
        index = 1
    if plan.scenario == "tool-call":
        block = {"type": "tool_use", "id": "toolu_fake", "name": TOOL_NAME, "input": {}}
        await event("content_block_start", {"index": index, "content_block": block})
        for arguments in TOOL_ARGUMENTS:
            await conn.pause(plan.delay if sent else 0)
            delta = {"type": "input_json_delta", "partial_json": arguments}
            await event("content_block_delta", {"index": index, "delta": delta})
            sent += 1
    else:
        await event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
    for token in plan.text_tokens(max_tokens):
        await conn.pause(plan.delay if sent else 0)
        await event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": stamped(token)}})
        sent += 1
    if plan.partial:
        error = {"type": "error", "error": {"type": plan.error or "overloaded_error", "message": "Overloaded"}}
        return await end_partial(conn, plan, sse(error, event="error"))
    await event("content_block_stop", {"index": index})
    stop_reason = _FINISH_REASONS[plan.finish(max_tokens)]
    final: dict = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": sent}}
    if plan.scenario == "late-input-tokens":
        final["usage"]["input_tokens"] = prompt
    elif plan.scenario == "no-usage":
        del final["usage"]
    await event("message_delta", final)
    if plan.scenario != "no-terminator":
        await event("message_stop", {})
    await conn.end_stream()
    return True


async def _whole(conn: Connection, plan: Plan, body: dict, max_tokens: int | None) -> bool:
    if not await wait_whole(conn, plan, max_tokens):
        return False
    content = []
    if plan.reasoning_tokens():
        content.append({"type": "thinking", "thinking": "".join(plan.reasoning_tokens()), "signature": SIGNATURE})
    if plan.scenario == "tool-call":
        arguments = "".join(TOOL_ARGUMENTS)
        content.append({"type": "tool_use", "id": "toolu_fake", "name": TOOL_NAME, "input": json.loads(arguments)})
    else:
        content.append({"type": "text", "text": "".join(map(stamped, plan.text_tokens(max_tokens)))})
    payload = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": _FINISH_REASONS[plan.finish(max_tokens)],
        "stop_sequence": None,
        "usage": {
            "input_tokens": count_words(body),
            "output_tokens": plan.token_count(max_tokens)
            + len(plan.reasoning_tokens())
            + (len(TOOL_ARGUMENTS) if plan.scenario == "tool-call" else 0),
        },
    }
    if plan.scenario == "no-usage":
        del payload["usage"]
    await conn.send_json(200, payload, {"request-id": new_id("req_")})
    return True
