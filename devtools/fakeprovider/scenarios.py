"""The fake provider's scenarios: what a request asks for, parsed from its model name.

Scenarios are chosen per request by the model name::

    model   := "fake-" scenario [ "@" option { "," option } ]
    option  := name "=" value

    options: tokens=<int>        reply length in tokens
             delay=<seconds>     pause between tokens
             first_delay=<seconds> pause before the first token
             fails=<int>         flaky-429: failures before success (default 1)
             error=<type>        midstream-error and error-<status>: the error
                                 type (Anthropic) / code (OpenAI) sent
             message=<name>      error-<status>: one of ``ERROR_MESSAGES`` as
                                 the error's message

    e.g. "fake-long@tokens=500,delay=0.002", "fake-normal@first_delay=0.5",
         "fake-error-401@error=api_error" (a server calling every error api_error),
         "fake-error-400@error=data_inspection_failed,message=data-inspection" (DashScope)

Scenarios (``SCENARIOS``):

normal           the reply text, finish stop / end_turn
slow-first       as normal, first token after ``first_delay`` (default 0.3 s)
long             500 tokens unless ``tokens=`` says otherwise
length           cut short: finish_reason length / stop_reason max_tokens
refusal          OpenAI finish_reason content_filter; Anthropic stop_reason refusal
reasoning        reasoning first (OpenAI ``reasoning_content`` deltas; Anthropic a
                 thinking block with a signature), then the reply
midstream-error  half the tokens, then an error frame (OpenAI ``data: {"error":…}``,
                 Anthropic ``event: error``)
disconnect       half the tokens, then the server closes the TCP connection
                 in the middle of the chunked body
stall            half the tokens, then silence until the client hangs up
no-body          the stream's response headers, then silence until the client hangs up
no-headers       the request is read, then silence (not even headers) until the client hangs up
flaky-429        429 for the first ``fails`` requests with the same body, then normal
timestamped      every token is ``t<time.time_ns()> `` (its send time), for benchmarks
markdown         as timestamped, each stamp inside markdown (headings, bold, code
                 spans, lists, a table, a fenced block) from ``MARKDOWN_TOKENS``
error-<status>   that HTTP error before any streaming: 400 401 402 403 404 429 500 529
                 (402 with DeepSeek's body, "Insufficient Balance", on the OpenAI side)

Servers that bend the wire formats (streaming requests; a non-streaming one
gets the normal reply unless said otherwise):

json-reply       one whole JSON body (application/json: a ``chat.completion`` /
                 a Messages ``message``) answering ``stream: true``
unnamed-events   Anthropic: ``data:`` lines without ``event:`` lines (the type only
                 in the JSON); OpenAI: as normal (its events are unnamed anyway)
foreign-stream   ``data: {"text": <token>}`` events, nothing of the wire format
                 (OpenAI then ``[DONE]``; Anthropic then the end of the body)
truncated        half the tokens, then the body ends cleanly: no finish, no
                 ``[DONE]`` / ``message_stop`` (non-streaming: the connection drops)
no-terminator    the whole reply and its finish reason, then the body ends without
                 ``[DONE]`` / ``message_stop``
no-finish        finish_reason / stop_reason null throughout (streaming and not),
                 the terminator as usual
tool-call        no text: one tool call (OpenAI ``tool_calls`` deltas; Anthropic a
                 ``tool_use`` block of ``input_json_delta``s), finish tool_calls /
                 tool_use (streaming and not)
no-usage         no usage at all, whatever ``stream_options`` asks (OpenAI: no usage
                 chunk or field; Anthropic: no ``usage`` in any event or message)
reasoning-model  OpenAI's o-series rules: 400 for ``max_tokens`` (use
                 ``max_completion_tokens``) and for any temperature but 1; then as normal
late-input-tokens
                 Anthropic: ``message_start`` says 0 input tokens, ``message_delta``
                 carries the real count; OpenAI: as normal

Every reply honours the request's ``max_tokens``: fewer tokens, finish length.
Unknown models get a 404.  ``expected_text()`` and ``expected_reasoning()``
give the exact text a scenario sends.  Pre-stream errors carry
``x-should-retry: false`` and ``retry-after-ms: 1`` so SDK retries stay out
of the way; flaky-429 carries only ``retry-after-ms: 1``, so SDKs do retry.

``Plan`` is one request's scenario and options; ``wait_whole`` and
``end_partial`` play the parts both wire formats share (pacing a non-streaming
reply, ending a partial one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devtools.fakeprovider.connection import Connection

SCENARIOS = (
    "normal",
    "slow-first",
    "long",
    "length",
    "refusal",
    "reasoning",
    "midstream-error",
    "disconnect",
    "stall",
    "no-body",
    "no-headers",
    "flaky-429",
    "timestamped",
    "markdown",
    "json-reply",
    "unnamed-events",
    "foreign-stream",
    "truncated",
    "no-terminator",
    "no-finish",
    "tool-call",
    "no-usage",
    "late-input-tokens",
    "reasoning-model",
    "error-400",
    "error-401",
    "error-402",
    "error-403",
    "error-404",
    "error-429",
    "error-500",
    "error-529",
)
ERROR_STATUSES = (400, 401, 402, 403, 404, 429, 500, 529)
# Error messages a name can ask for with ``message=``: providers' real ones,
# and one long enough to be trimmed that echoes key-like strings and HTML.
ERROR_MESSAGES = {
    "data-inspection": "Input data may contain inappropriate content.",
    "context-length": (
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens. "
        "Please reduce the length of the messages."
    ),
    "long-key": (
        "Invalid request: <img src=x onerror=alert(1)> the proxy rejected it. "
        + "The upstream said the request was malformed in ways too numerous to list here. "
        + "Key sk-ant-api03_AbCd_Ef01_2345_6789_ghIJ_klMN_op-QRst, header Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig, "
        + "session 0123456789abcdef0123456789abcdef01234567. "
        + "Further explanation follows and goes on. " * 8
    ),
}

# The reply's first tokens: multi-byte text whose grapheme clusters span
# chunks ("👋" + skin tone "🏽"), and HTML that must be escaped downstream.
BASE_TOKENS = (
    "Hello",
    ",",
    " world",
    "!",
    " 你",
    "好",
    "，",
    "世界",
    " 👋",
    "🏽",
    " 🎉",
    " <script>",
    "alert(1)",
    "</script>",
    " <img",
    " src=x",
    " onerror=alert(1)>",
    " The",
    " end",
    ".",
)
REASONING_TOKENS = ("Thinking", " about", " 你好", " step", " by", " step", ".")
# The tool-call scenario's call: its name, and its arguments in the pieces they stream in.
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = ('{"city": ', '"Paris"', "}")


@dataclass(frozen=True)
class Stamp:
    """A token whose ``{}`` becomes ``t<time.time_ns()>`` at the moment it is
    written, after any pacing pause, so benchmarks measure only what happens
    after the provider sends."""

    pattern: str


STAMP = Stamp("{} ")  # the timestamped scenario's token
# The markdown scenario's tokens, in a cycle: every kind of block a reply
# has, so the stream renders finished blocks, open ones and held-back lines.
MARKDOWN_TOKENS = tuple(
    Stamp(pattern)
    for pattern in (
        "## Step {}\n\n",
        "Some {} words ",
        "with **{}** bold ",
        "and `{}` code.\n\n",
        "- {} item\n",
        "- *{}* item\n\n",
        "| {} | b |\n|---|---|\n",
        "| {} | 2 |\n",
        "| {} | 3 |\n\n",
        "```python\nx = '{}'\n",
        "y = '{}'\n```\n\n",
        "1. {} done\n\n",
    )
)


def stamped(token) -> str:
    return token.pattern.format(f"t{time.time_ns()}") if isinstance(token, Stamp) else token


@dataclass(frozen=True)
class Plan:
    """What one request asks for, parsed from its model name."""

    scenario: str
    tokens: int
    delay: float
    first_delay: float
    fails: int = 1
    error: str | None = None
    message: str = ""  # an error's message, from ERROR_MESSAGES

    @property
    def partial(self) -> bool:
        """Scenarios that stop half-way (error, disconnect, stall, a clean but early end)."""
        return self.scenario in ("midstream-error", "disconnect", "stall", "truncated")

    def token_count(self, max_tokens: int | None = None) -> int:
        if self.scenario == "tool-call":
            return 0
        count = self.tokens
        if max_tokens is not None and max_tokens > 0:
            count = min(count, max_tokens)
        if self.partial:
            count = max(1, count // 2)
        return count

    def finish(self, max_tokens: int | None = None) -> str | None:
        """Our neutral finish: "stop", "length", "refusal", "tool_calls", or None (no-finish)."""
        if self.scenario == "no-finish":
            return None
        if self.scenario == "tool-call":
            return "tool_calls"
        if self.scenario == "length" or (max_tokens is not None and 0 < max_tokens < self.tokens):
            return "length"
        if self.scenario == "refusal":
            return "refusal"
        return "stop"

    def text_tokens(self, max_tokens: int | None = None) -> Iterator[str]:
        """The reply's tokens, made lazily (timestamped ones at send time)."""
        for index in range(self.token_count(max_tokens)):
            if self.scenario == "timestamped":
                yield STAMP
            elif self.scenario == "markdown":
                yield MARKDOWN_TOKENS[index % len(MARKDOWN_TOKENS)]
            elif index < len(BASE_TOKENS):
                yield BASE_TOKENS[index]
            else:
                yield f" w{index}"

    def reasoning_tokens(self) -> tuple[str, ...]:
        return REASONING_TOKENS if self.scenario == "reasoning" else ()


def parse_model(model: object, tokens: int = 20, delay: float = 0.005, first_delay: float = 0.0) -> Plan | None:
    """The Plan for a model name, or None when it names no scenario.

    ``tokens``/``delay``/``first_delay`` are the server-wide defaults; a
    scenario's own default ("long": 500 tokens, "slow-first": 0.3 s) beats
    them, and the name's ``@`` options beat both.
    """
    if not isinstance(model, str) or not model.startswith("fake-"):
        return None
    name, _, options = model[len("fake-") :].partition("@")
    if name not in SCENARIOS:
        return None
    plan = Plan(name, tokens, delay, first_delay)
    if name == "long":
        plan = replace(plan, tokens=500)
    elif name == "slow-first":
        plan = replace(plan, first_delay=0.3)
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        try:
            if key == "tokens":
                plan = replace(plan, tokens=int(value))
            elif key in ("delay", "first_delay"):
                plan = replace(plan, **{key: float(value)})
            elif key == "fails":
                plan = replace(plan, fails=int(value))
            elif key == "error":
                plan = replace(plan, error=value)
            elif key == "message" and value in ERROR_MESSAGES:
                plan = replace(plan, message=ERROR_MESSAGES[value])
            else:
                return None
        except ValueError:
            return None
    return plan


def expected_text(model_name: str, tokens: int | None = None, max_tokens: int | None = None) -> str:
    """The exact reply text the server sends for ``model_name``.

    ``tokens`` is the server-wide default the server was started with (20
    unless you chose otherwise); ``max_tokens`` the request's limit.  For
    partial scenarios it is the text sent before the failure.
    """
    plan = parse_model(model_name, tokens=20 if tokens is None else tokens)
    if plan is None or plan.scenario in ("timestamped", "markdown"):
        raise ValueError(f"no deterministic text for {model_name!r}")
    if plan.scenario.startswith("error-") or plan.scenario in ("no-body", "no-headers"):  # nothing sent
        return ""
    return "".join(plan.text_tokens(max_tokens))


def expected_reasoning(model_name: str) -> str:
    """The exact reasoning text the server sends for ``model_name`` ("" for most)."""
    plan = parse_model(model_name)
    if plan is None:
        raise ValueError(f"not a fake model: {model_name!r}")
    return "".join(plan.reasoning_tokens())


def count_words(body: dict) -> int:
    """The fake's input token count: whitespace-separated words in the prompt."""
    words = 0
    system = body.get("system")
    parts = [system] if system is not None else []
    parts += [message.get("content") for message in body.get("messages") or [] if isinstance(message, dict)]
    for part in parts:
        if isinstance(part, str):
            words += len(part.split())
        elif isinstance(part, list):
            words += sum(len(str(block.get("text", "")).split()) for block in part if isinstance(block, dict))
    return words


# --- playing a scenario out ---------------------------------------------------


async def wait_whole(conn: Connection, plan: Plan, max_tokens: int | None) -> bool:
    """Pace a non-streaming reply; False when the scenario ends the connection."""
    await conn.pause(plan.first_delay + plan.delay * plan.token_count(max_tokens))
    if plan.scenario in ("midstream-error", "truncated"):
        return False  # nothing sensible to send half-way: behave like a dropped connection
    if plan.partial:
        return await end_partial(conn, plan, "")
    return True


async def end_partial(conn: Connection, plan: Plan, error_frame: str) -> bool:
    """End a partial scenario after its tokens; False: close the connection."""
    if plan.scenario == "midstream-error":
        await conn.chunk(error_frame)
        await conn.end_stream()
        return True
    if plan.scenario == "truncated":
        await conn.end_stream()  # a clean end of the body, without the format's terminator
        return True
    if plan.scenario == "stall":
        # Silence until the client gives up (or the server stops).
        await conn.pause(3600)
    return False  # "disconnect": leave the chunked body unfinished and close.
