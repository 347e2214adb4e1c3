"""A fake model provider: one local HTTP server speaking both wire formats.

It answers the OpenAI Chat Completions API (``POST /v1/chat/completions``,
``GET /v1/models``) and the Anthropic Messages API (``POST /v1/messages``),
streaming and non-streaming, exactly as the real SDKs expect them, so the
provider code is tested through the real SDKs over real HTTP.  Standard
library only; it runs on its own event loop in its own thread::

    with FakeProvider(tokens=20, delay=0.005) as server:
        os.environ["OPENAI_BASE_URL"] = server.openai_base_url
        os.environ["ANTHROPIC_BASE_URL"] = server.anthropic_base_url
        ...
        server.requests          # what the clients sent (method, path, headers, json)
        server.wait_for_disconnect(1.0)  # True once a client hung up mid-response

Scenarios are chosen per request by the model name::

    model   := "fake-" scenario [ "@" option { "," option } ]
    option  := name "=" value

    options: tokens=<int>        reply length in tokens
             delay=<seconds>     pause between tokens
             first_delay=<seconds> pause before the first token
             fails=<int>         flaky-429: failures before success (default 1)
             error=<type>        midstream-error and error-<status>: the error
                                 type (Anthropic) / code (OpenAI) sent

    e.g. "fake-long@tokens=500,delay=0.002", "fake-normal@first_delay=0.5"

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
flaky-429        429 for the first ``fails`` requests with the same body, then normal
timestamped      every token is ``t<time.time_ns()> `` (its send time), for benchmarks
error-<status>   that HTTP error before any streaming: 400 401 403 404 429 500 529

Every reply honours the request's ``max_tokens``: fewer tokens, finish length.
Unknown models get a 404.  ``expected_text()`` and ``expected_reasoning()``
give the exact text a scenario sends.  Pre-stream errors carry
``x-should-retry: false`` and ``retry-after-ms: 1`` so SDK retries stay out
of the way; flaky-429 carries only ``retry-after-ms: 1``, so SDKs do retry.

A "disconnect" is a client closing its connection while a response is in
progress (streaming, or waiting to send a non-streaming reply): a reader task
watches the socket for EOF during every response.  A response that ends
normally, or a connection the server closes itself, never counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

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
    "flaky-429",
    "timestamped",
    "error-400",
    "error-401",
    "error-403",
    "error-404",
    "error-429",
    "error-500",
    "error-529",
)
ERROR_STATUSES = (400, 401, 403, 404, 429, 500, 529)

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
SIGNATURE = "ZmFrZS1zaWduYXR1cmU="

OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request (fake bad request)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "model_not_allowed", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    529: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
}
ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request (fake bad request)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model not found"),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_REASONS = {
    "openai": {"stop": "stop", "length": "length", "refusal": "content_filter"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "refusal": "refusal"},
}
_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}


# --- scenarios ----------------------------------------------------------------


# The timestamped scenario's token: replaced by ``t<time.time_ns()> `` at the
# moment it is written, after any pacing pause, so benchmarks measure only
# what happens after the provider sends.
STAMP = object()


def stamped(token) -> str:
    return f"t{time.time_ns()} " if token is STAMP else token


@dataclass(frozen=True)
class Plan:
    """What one request asks for, parsed from its model name."""

    scenario: str
    tokens: int
    delay: float
    first_delay: float
    fails: int = 1
    error: str | None = None

    @property
    def partial(self) -> bool:
        """Scenarios that stop half-way (error, disconnect, stall)."""
        return self.scenario in ("midstream-error", "disconnect", "stall")

    def token_count(self, max_tokens: int | None = None) -> int:
        count = self.tokens
        if max_tokens is not None and max_tokens > 0:
            count = min(count, max_tokens)
        if self.partial:
            count = max(1, count // 2)
        return count

    def finish(self, max_tokens: int | None = None) -> str:
        """Our neutral finish: "stop", "length" or "refusal"."""
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
    if plan is None or plan.scenario == "timestamped":
        raise ValueError(f"no deterministic text for {model_name!r}")
    if plan.scenario.startswith("error-"):
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


# --- recording ----------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: object = None
    client_port: int = 0  # the client's TCP port: equal ports mean a reused connection


@dataclass
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


class _ClientGone(Exception):
    """The client closed its connection while we were responding."""


class _BadRequest(Exception):
    pass


# --- the connection -------------------------------------------------------------


@dataclass
class _Connection:
    """One client connection: a buffered reader, a writer, and EOF watching."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    on_disconnect: Callable[[], None]
    buf: bytearray = field(default_factory=bytearray)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        self.buf += data
        return bool(data)

    async def read_request(self) -> _Request | None:
        """The next request, or None when the client closed an idle connection."""
        while b"\r\n\r\n" not in self.buf:
            if not await self._fill():
                if self.buf.strip():
                    raise _BadRequest("truncated request head")
                return None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError as exc:
            raise _BadRequest(lines[0]) from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        self.buf[:] = rest
        while len(self.buf) < length:
            if not await self._fill():
                raise _BadRequest("truncated body")
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return _Request(method, target, headers, body)

    @contextlib.asynccontextmanager
    async def responding(self):
        """While inside, a client EOF counts as a disconnect (once)."""
        watcher = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        # Bytes arriving now (a pipelined request) stay in buf for the parser.
        with contextlib.suppress(ConnectionError):
            while await self._fill():
                pass
        self.gone.set()
        self.on_disconnect()

    async def write(self, data: bytes) -> None:
        if self.gone.is_set():
            raise _ClientGone
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError as exc:
            raise _ClientGone from exc

    async def pause(self, seconds: float) -> None:
        """Sleep, but notice at once when the client hangs up meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)
        if self.gone.is_set():
            raise _ClientGone

    async def send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
        await self.write(_head(status, head) + body)

    async def start_stream(self, headers: dict[str, str]) -> None:
        head = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **headers,
        }
        await self.write(_head(200, head))

    async def chunk(self, data: str) -> None:
        raw = data.encode()
        await self.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    async def end_stream(self) -> None:
        await self.write(b"0\r\n\r\n")


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Status')}", "connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _sse(data: object, event: str | None = None) -> str:
    line = "data: " + (data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)) + "\n\n"
    return f"event: {event}\n{line}" if event else line


# --- the server ---------------------------------------------------------------


class FakeProvider:
    """The fake provider server; see the module docstring.

    ``api_key``: the key clients must present (``Authorization: Bearer`` or
    ``x-api-key``); None accepts any non-empty key.  Thread-safe: tests read
    ``requests`` and ``disconnects`` from their own thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: int = 20,
        delay: float = 0.005,
        first_delay: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tokens, self.delay, self.first_delay = tokens, delay, first_delay
        self.api_key = api_key
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._flaky: dict[bytes, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._start_error: OSError | None = None
        self._tasks: set[asyncio.Task] = set()

    # lifecycle ----------------------------------------------------------
    def start(self) -> FakeProvider:
        """Start serving in a background thread; returns once listening."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fakeprovider", daemon=True)
        self._thread.start()
        ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._loop = self._thread = None
            raise self._start_error
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:  # e.g. the port is taken: start() re-raises it
            self._start_error = exc
        finally:
            ready.set()
        if self._start_error is None:
            loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # recording ----------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        with self._lock:
            return self._disconnects

    def clear(self) -> None:
        """Forget recorded requests, disconnects and flaky-429 counts."""
        with self._lock:
            self._requests.clear()
            self._disconnects = 0
            self._flaky.clear()

    def wait_for_disconnect(self, timeout: float = 1.0, count: int = 1) -> bool:
        """Block until ``count`` disconnects were seen since ``clear()``; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._disconnects >= count, timeout)

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1
            self._lock.notify_all()

    def _record(self, request: _Request, client_port: int) -> object:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        target, _, query = request.target.partition("?")
        headers = dict(request.headers)
        recorded = RecordedRequest(request.method, target, query, headers, request.body, body, client_port)
        with self._lock:
            self._requests.append(recorded)
        return body

    def _flaky_fails(self, request: _Request, plan: Plan) -> bool:
        """True while this body has failed fewer than ``plan.fails`` times."""
        with self._lock:
            seen = self._flaky.get(request.body, 0)
            self._flaky[request.body] = seen + 1
            return seen < plan.fails

    # serving ------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = _Connection(reader, writer, self._count_disconnect)
        client_port = (writer.get_extra_info("peername") or ("", 0))[1]
        try:
            while not conn.gone.is_set():
                request = await conn.read_request()
                if request is None:
                    break
                body = self._record(request, client_port)
                if not await self._respond(conn, request, body):
                    break
                if request.headers.get("connection", "").lower() == "close":
                    break
        except (_ClientGone, _BadRequest, ValueError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, conn: _Connection, request: _Request, body: object) -> bool:
        """Answer one request; False when the connection must not be reused."""
        path = request.path
        flavour = "anthropic" if path == "/v1/messages" else "openai"
        if not self._authorised(request.headers):
            await self._error(conn, flavour, 401, retry=False)
            return True
        if request.method == "GET" and path == "/v1/models":
            await conn.send_json(200, self._models_list())
            return True
        if request.method != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            await self._error(conn, flavour, 404, retry=False, message=f"Unknown route {request.method} {path}")
            return True
        if not isinstance(body, dict):
            await self._error(conn, flavour, 400, retry=False, message="Body must be a JSON object.")
            return True
        plan = parse_model(body.get("model"), self.tokens, self.delay, self.first_delay)
        if plan is None:
            await self._error(conn, flavour, 404, retry=False, message=f"model: {body.get('model')}")
            return True
        if plan.scenario.startswith("error-"):
            await self._error(conn, flavour, int(plan.scenario[len("error-") :]), retry=False, kind=plan.error)
            return True
        if plan.scenario == "flaky-429" and self._flaky_fails(request, plan):
            await self._error(conn, flavour, 429, retry=True)
            return True
        if flavour == "anthropic":
            problem = _anthropic_problem(body)
            if problem:
                await self._error(conn, flavour, 400, retry=False, message=problem)
                return True
        async with conn.responding():
            if flavour == "openai":
                return await self._openai(conn, plan, body)
            return await self._anthropic(conn, plan, body)

    def _authorised(self, headers: dict[str, str]) -> bool:
        key = headers.get("x-api-key") or ""
        authorization = headers.get("authorization", "")
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[len("bearer ") :].strip()
        return bool(key) and (self.api_key is None or key == self.api_key)

    def _models_list(self) -> dict:
        created = int(time.time())
        data = [{"id": f"fake-{name}", "object": "model", "created": created, "owned_by": "fake"} for name in SCENARIOS]
        return {"object": "list", "data": data}

    async def _error(
        self, conn: _Connection, flavour: str, status: int, *, retry: bool, message: str = "", kind: str | None = None
    ) -> None:
        """An error response; ``kind`` overrides the Anthropic type / OpenAI code."""
        headers = {"retry-after-ms": "1"}
        if not retry:
            headers["x-should-retry"] = "false"
        if flavour == "anthropic":
            error_type, default = ANTHROPIC_ERRORS.get(status, ("api_error", "Error"))
            payload = {
                "type": "error",
                "error": {"type": kind or error_type, "message": message or default},
                "request_id": _id("req_"),
            }
            headers["request-id"] = payload["request_id"]
        else:
            error_type, code, default = OPENAI_ERRORS.get(status, ("server_error", None, "Error"))
            payload = {
                "error": {"message": message or default, "type": error_type, "param": None, "code": kind or code}
            }
            headers["x-request-id"] = _id("req_")
        await conn.send_json(status, payload, headers)

    async def _failure(self, conn: _Connection, plan: Plan, error_frame: str) -> bool:
        """End a partial scenario after its tokens; False: close the connection."""
        if plan.scenario == "midstream-error":
            await conn.chunk(error_frame)
            await conn.end_stream()
            return True
        if plan.scenario == "stall":
            # Silence until the client gives up (or the server stops).
            await conn.pause(3600)
        return False  # "disconnect": leave the chunked body unfinished and close.

    # OpenAI -------------------------------------------------------------
    async def _openai(self, conn: _Connection, plan: Plan, body: dict) -> bool:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if not body.get("stream"):
            return await self._openai_whole(conn, plan, body, max_tokens)
        completion_id, created, model = _id("chatcmpl-"), int(time.time()), body["model"]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

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
            return _sse(data)

        await conn.start_stream({"x-request-id": _id("req_")})
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
        if plan.partial:
            error = {
                "message": "The server had an error while processing your request.",
                "type": plan.error or "server_error",
                "param": None,
                "code": None,
            }
            return await self._failure(conn, plan, _sse({"error": error}))
        await conn.chunk(chunk({}, _REASONS["openai"][plan.finish(max_tokens)]))
        if include_usage:
            prompt = count_words(body)
            usage = {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent}
            await conn.chunk(chunk({}, choices=False, usage=usage))
        await conn.chunk(_sse("[DONE]"))
        await conn.end_stream()
        return True

    async def _openai_whole(self, conn: _Connection, plan: Plan, body: dict, max_tokens: int | None) -> bool:
        if not await self._wait_whole(conn, plan, max_tokens):
            return False
        text = "".join(map(stamped, plan.text_tokens(max_tokens)))
        reasoning = "".join(plan.reasoning_tokens())
        message = {"role": "assistant", "content": text, "refusal": None}
        if reasoning:
            message["reasoning_content"] = reasoning
        prompt = count_words(body)
        completion = plan.token_count(max_tokens) + len(plan.reasoning_tokens())
        payload = {
            "id": _id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _REASONS["openai"][plan.finish(max_tokens)],
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        await conn.send_json(200, payload, {"x-request-id": _id("req_")})
        return True

    async def _wait_whole(self, conn: _Connection, plan: Plan, max_tokens: int | None) -> bool:
        """Pace a non-streaming reply; False when the scenario ends the connection."""
        await conn.pause(plan.first_delay + plan.delay * plan.token_count(max_tokens))
        if plan.scenario == "midstream-error":
            return False  # nothing sensible to send half-way: behave like a dropped connection
        if plan.partial:
            return await self._failure(conn, plan, "")
        return True

    # Anthropic ----------------------------------------------------------
    async def _anthropic(self, conn: _Connection, plan: Plan, body: dict) -> bool:
        max_tokens = body.get("max_tokens")
        if not body.get("stream"):
            return await self._anthropic_whole(conn, plan, body, max_tokens)
        model = body["model"]

        async def event(kind: str, data: dict) -> None:
            await conn.chunk(_sse({"type": kind, **data}, event=kind))

        await conn.start_stream({"request-id": _id("req_")})
        message = {
            "id": _id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": count_words(body), "output_tokens": 1},
        }
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
            await event(
                "content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": SIGNATURE}}
            )
            await event("content_block_stop", {"index": 0})
            index = 1
        await event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        for token in plan.text_tokens(max_tokens):
            await conn.pause(plan.delay if sent else 0)
            await event(
                "content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": stamped(token)}}
            )
            sent += 1
        if plan.partial:
            error = {"type": "error", "error": {"type": plan.error or "overloaded_error", "message": "Overloaded"}}
            return await self._failure(conn, plan, _sse(error, event="error"))
        await event("content_block_stop", {"index": index})
        stop_reason = _REASONS["anthropic"][plan.finish(max_tokens)]
        await event(
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": sent}},
        )
        await event("message_stop", {})
        await conn.end_stream()
        return True

    async def _anthropic_whole(self, conn: _Connection, plan: Plan, body: dict, max_tokens: int | None) -> bool:
        if not await self._wait_whole(conn, plan, max_tokens):
            return False
        content = []
        if plan.reasoning_tokens():
            content.append({"type": "thinking", "thinking": "".join(plan.reasoning_tokens()), "signature": SIGNATURE})
        content.append({"type": "text", "text": "".join(map(stamped, plan.text_tokens(max_tokens)))})
        payload = {
            "id": _id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": _REASONS["anthropic"][plan.finish(max_tokens)],
            "stop_sequence": None,
            "usage": {
                "input_tokens": count_words(body),
                "output_tokens": plan.token_count(max_tokens) + len(plan.reasoning_tokens()),
            },
        }
        await conn.send_json(200, payload, {"request-id": _id("req_")})
        return True


def _anthropic_problem(body: dict) -> str:
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


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
