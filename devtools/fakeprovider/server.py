"""The fake provider server: ``FakeProvider`` (see the package docstring).

It listens on its own event loop in its own thread, records every request,
counts disconnects, routes ``/v1/chat/completions`` to ``openai_format`` and
``/v1/messages`` to ``anthropic_format``, lists its models at ``GET /v1/models``
(in Anthropic's shape when the request has an ``anthropic-version`` header), and answers the errors that come
before any streaming (auth, routes, unknown models, ``error-<status>``,
``flaky-429``) and the hung servers (``no-headers``, ``no-body``) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass

from devtools.fakeprovider import anthropic_format, openai_format
from devtools.fakeprovider.connection import BadRequest, ClientGone, Connection, Request
from devtools.fakeprovider.scenarios import SCENARIOS, Plan, parse_model

_WIRE_FORMATS = {"openai": openai_format, "anthropic": anthropic_format}


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: object = None
    client_port: int = 0  # the client's TCP port: equal ports mean a reused connection


class FakeProvider:
    """The fake provider server; see the package docstring (``devtools.fakeprovider``).

    ``api_key``: the key clients must present (``Authorization: Bearer`` or
    ``x-api-key``); None accepts any non-empty key.  ``key_header``: read the
    key from this header alone ("x-api-key" or "authorization"), as some
    Anthropic-compatible endpoints do.  Thread-safe: tests read ``requests``
    and ``disconnects`` from their own thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: int = 20,
        delay: float = 0.005,
        first_delay: float = 0.0,
        api_key: str | None = None,
        key_header: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tokens, self.delay, self.first_delay = tokens, delay, first_delay
        self.api_key = api_key
        self.key_header = key_header
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

    def wait_for_requests(self, count: int = 1, timeout: float = 1.0) -> bool:
        """Block until ``count`` requests were recorded since ``clear()``; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout)

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1
            self._lock.notify_all()

    def _record(self, request: Request, client_port: int) -> object:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        target, _, query = request.target.partition("?")
        headers = dict(request.headers)
        recorded = RecordedRequest(request.method, target, query, headers, request.body, body, client_port)
        with self._lock:
            self._requests.append(recorded)
            self._lock.notify_all()
        return body

    def _flaky_fails(self, request: Request, plan: Plan) -> bool:
        """True while this body has failed fewer than ``plan.fails`` times."""
        with self._lock:
            seen = self._flaky.get(request.body, 0)
            self._flaky[request.body] = seen + 1
            return seen < plan.fails

    # serving ------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = Connection(reader, writer, self._count_disconnect)
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
        except (ClientGone, BadRequest, ValueError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, conn: Connection, request: Request, body: object) -> bool:
        """Answer one request; False when the connection must not be reused."""
        path = request.path
        flavour = "anthropic" if path == "/v1/messages" else "openai"
        if not self._authorised(request.headers):
            await self._error(conn, flavour, 401, retry=False)
            return True
        if request.method == "GET" and path == "/v1/models":
            anthropic = "anthropic-version" in request.headers
            await conn.send_json(200, self._models_list(anthropic=anthropic))
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
            status = int(plan.scenario[len("error-") :])
            await self._error(conn, flavour, status, retry=False, message=plan.message, kind=plan.error)
            return True
        if plan.scenario == "flaky-429" and self._flaky_fails(request, plan):
            await self._error(conn, flavour, 429, retry=True)
            return True
        if flavour == "openai" and plan.scenario == "reasoning-model":
            problem = openai_format.reasoning_model_problem(body)
            if problem:
                await self._error(conn, flavour, 400, retry=False, message=problem)
                return True
        if flavour == "anthropic":
            problem = anthropic_format.problem(body)
            if problem:
                await self._error(conn, flavour, 400, retry=False, message=problem)
                return True
        async with conn.responding():
            if plan.scenario in ("no-headers", "no-body"):
                if plan.scenario == "no-body":
                    await conn.start_stream({})
                await conn.pause(3600)  # until the client gives up (or the server stops)
                return False
            return await _WIRE_FORMATS[flavour].respond(conn, plan, body)

    def _authorised(self, headers: dict[str, str]) -> bool:
        key = (headers.get("x-api-key") or "") if self.key_header in (None, "x-api-key") else ""
        authorization = headers.get("authorization", "") if self.key_header in (None, "authorization") else ""
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[len("bearer ") :].strip()
        return bool(key) and (self.api_key is None or key == self.api_key)

    def _models_list(self, *, anthropic: bool = False) -> dict:
        """OpenAI's list of models, or Anthropic's for a request with an ``anthropic-version`` header."""
        ids = [f"fake-{name}" for name in SCENARIOS]
        if anthropic:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            data = [{"type": "model", "id": id, "display_name": id, "created_at": created} for id in ids]
            return {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
        created = int(time.time())
        data = [{"id": id, "object": "model", "created": created, "owned_by": "fake"} for id in ids]
        return {"object": "list", "data": data}

    async def _error(
        self, conn: Connection, flavour: str, status: int, *, retry: bool, message: str = "", kind: str | None = None
    ) -> None:
        """An error response; ``kind`` overrides the Anthropic type / OpenAI code."""
        headers = {"retry-after-ms": "1"}
        if not retry:
            headers["x-should-retry"] = "false"
        payload, request_id = _WIRE_FORMATS[flavour].error(status, message, kind)
        await conn.send_json(status, payload, {**headers, **request_id})
