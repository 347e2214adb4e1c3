"""The HTTP API, ``/api/v1/``: transport only, as ``consumers`` is for the
websocket.  Every write goes through ``actions`` (so a run started here shows
live in the conversation's open tabs, and Stop there ends it here), every
event comes from ``runs``; this module parses, authenticates, and frames.

Authentication: ``Authorization: Bearer <key>``, a key from the user's
settings page (``ApiKey``).  A run's events go out as Server-Sent Events
(``sse``, the one place they are framed), each with an ``id``: a client that
reconnects with ``Last-Event-ID`` gets every event after it.  The schema is
served at ``/api/v1/openapi.json``, browsable at ``/api/v1/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Literal
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer

from conversations import actions, providers, runs
from conversations.eventstream import sse, sse_response
from conversations.generation import Generation, reply_result
from conversations.models import ApiKey, Conversation, Message
from conversations.providers.base import ChatMessage

logger = logging.getLogger(__name__)

STREAM_MODES = ("events", "messages", "values", "updates")
MESSAGE_EVENTS = frozenset({"text_delta", "reasoning_delta"})
UPDATE_EVENTS = frozenset({"run_start", "usage", "finish", "error", "run_end"})
MAX_RUNS_PER_BATCH = 8
MAX_METADATA_CHARS = 4000


class ApiKeyAuth(HttpBearer):
    """``Authorization: Bearer <key>``: the key's owner, or nobody."""

    def authenticate(self, request: HttpRequest, token: str):
        key = ApiKey.authenticate(token)
        if key is None:
            return None
        request.user = key.owner
        return key.owner


api = NinjaAPI(
    title="chatsite API",
    version="1",
    urls_namespace="api_v1",
    auth=ApiKeyAuth(),
    description="Conversations and server-owned runs: invoke, stream (SSE), stateless, batch, join with replay.",
)


# --- errors ------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@api.exception_handler(Refused)
def _refused(request, exc: Refused):
    return api.create_response(request, {"detail": exc.detail}, status=exc.status)


@api.exception_handler(actions.ReplyRefused)
def _reply_refused(request, exc: actions.ReplyRefused):
    return api.create_response(request, {"detail": exc.message}, status=429)


@api.exception_handler(runs.RunNotFound)
@api.exception_handler(Conversation.DoesNotExist)
def _not_found(request, exc):
    return api.create_response(request, {"detail": _("Not found.")}, status=404)


# --- schemas -------------------------------------------------------------------

StreamMode = Literal["events", "messages", "values", "updates"]


class RunOptions(Schema):
    stream: bool = Field(False, description="Server-Sent Events (stream) instead of one JSON reply (invoke)")
    stream_mode: list[StreamMode] = Field(["events"], description="which events to stream; several at once")
    on_disconnect: Literal["continue", "cancel"] = Field(
        "continue", description="continue: the run is the server's and can be joined; cancel: stop it"
    )
    tags: list[str] = Field([], max_length=16)
    metadata: dict = Field({}, description="given back in run_start")


class ConversationIn(Schema):
    model: str
    title: str = Field("", max_length=200)
    system_prompt: str = ""


class ConversationOut(Schema):
    id: UUID
    title: str
    model: str
    created_at: str
    updated_at: str
    url: str


class RunIn(RunOptions):
    input: str = Field(..., description="the user's message")
    models: list[str] = Field(
        [], description="two to four models to compare: one reply each, siblings in the conversation, one stream"
    )


class MessageIn(Schema):
    role: Literal["user", "assistant"]
    content: str


class StatelessIn(RunOptions):
    model: str
    messages: list[MessageIn] = Field(..., min_length=1)
    system: str = ""
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)


class BatchItem(Schema):
    model: str | None = None
    input: str | None = None
    messages: list[MessageIn] | None = None
    tags: list[str] = Field([], max_length=16)
    metadata: dict = {}


class BatchIn(RunOptions):
    """Several inputs (``inputs``), one input to several models (``models``
    with ``input`` or ``messages``), or both: every pair is a stateless run."""

    model: str | None = None
    models: list[str] = []
    input: str | None = None
    messages: list[MessageIn] | None = None
    inputs: list[BatchItem] = []
    system: str = ""
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)


class _Shown:
    """Which of a run's events a client asked for (``stream_mode``), and the
    ``values`` event (the whole reply so far) after each batch that changed it."""

    def __init__(self, modes: list[str]) -> None:
        self.modes = set(modes) or {"events"}
        self.text: dict[str, list[str]] = {}
        self.reasoning: dict[str, list[str]] = {}

    def wants(self, kind: str) -> bool:
        return (
            "events" in self.modes
            or ("messages" in self.modes and kind in MESSAGE_EVENTS)
            or ("updates" in self.modes and kind in UPDATE_EVENTS)
        )

    def pick(self, batch: list[dict], after: int = 0) -> tuple[list[dict], dict | None]:
        """The events of ``batch`` to send (those after ``after``), and the ``values`` event, if any."""
        run = batch[0]["run_id"]
        text, reasoning = self.text.setdefault(run, []), self.reasoning.setdefault(run, [])
        changed = False
        for event in batch:
            if event["event"] == "text_delta":
                text.append(event["data"]["text"])
                changed = changed or event["id"] > after
            elif event["event"] == "reasoning_delta":
                reasoning.append(event["data"]["text"])
                changed = changed or event["id"] > after
        shown = [event for event in batch if event["id"] > after and self.wants(event["event"])]
        values = None
        if "values" in self.modes and changed:
            last = batch[-1]
            values = {
                **{k: last[k] for k in ("id", "run_id", "model", "tags")},
                "event": "values",
                "data": {"text": "".join(text), "reasoning": "".join(reasoning)},
            }
        return shown, values

    @property
    def needs_start(self) -> bool:
        """``values`` needs the whole text: read from the run's first event."""
        return "values" in self.modes


async def _stream_run(
    run_id, user, after: int, modes: list[str], on_disconnect: str = "continue"
) -> AsyncIterator[str]:
    shown = _Shown(modes)
    finished, position = False, after
    try:
        async for batch in runs.listen(run_id, user, 0 if shown.needs_start else after):
            events, values = shown.pick(batch, after)
            chunk = "".join(sse(event) for event in events)
            if values is not None:
                chunk += sse(values)
            if chunk:
                position = max(position, batch[-1]["id"])
                yield chunk
        finished = True
    except Exception as exc:
        if position == after and isinstance(exc, runs.RunNotFound):
            raise  # nothing sent yet: a 404
        # The stream has begun: it ends with an error event instead of breaking off.
        logger.exception("the events of run %s broke off", run_id)
        yield sse(_broken(run_id, position + 1))
        finished = True
    finally:
        if not finished and on_disconnect == "cancel":
            await _cancel([run_id], user)


def _broken(run_id, number: int) -> dict:
    return {
        "id": number,
        "event": "error",
        "run_id": str(run_id),
        "model": "",
        "tags": [],
        "data": {"kind": "internal", "message": _("The run's events could not be read. Join it again.")},
    }


async def _cancel(run_ids, user) -> None:
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            await runs.stop(run_id, user)


async def _first_events(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """``stream`` with its first chunk read already: a RunNotFound is a 404, not a broken stream."""
    first = await anext(stream, None)

    async def chunks():
        if first is not None:
            yield first
        async for chunk in stream:
            yield chunk

    return chunks()


async def _answer(request, running: list[Generation], options: RunOptions, user, *, batch: bool = False):
    """The run(s) just started: their events as SSE, or (invoke) their results when they end."""
    if options.stream:
        if batch:
            return sse_response(_stream_batch([r.message.id for r in running], user, [0] * len(running), options))
        stream = _stream_run(running[0].message.id, user, 0, options.stream_mode, options.on_disconnect)
        return sse_response(stream)
    try:
        await asyncio.gather(*(r.done.wait() for r in running))
    except asyncio.CancelledError:
        if options.on_disconnect == "cancel":
            for r in running:
                r.stop()
        raise
    results = [reply_result(r.message) for r in running]
    return {"runs": results} if batch else results[0]


def _last_event_id(request: HttpRequest, after: str | None) -> str:
    return request.headers.get("Last-Event-ID") or after or ""


# --- conversations --------------------------------------------------------------


def _conversation_out(conversation: Conversation) -> dict:
    return {
        "id": conversation.id,
        "title": conversation.display_title,
        "model": conversation.model_key,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "url": conversation.get_absolute_url(),
    }


def _message_out(message: Message, shown: set) -> dict:
    return {
        "id": str(message.id),
        "parent_id": str(message.parent_id) if message.parent_id else None,
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "status": message.status,
        "model": message.model_key if message.role == Message.Role.ASSISTANT else None,
        "on_shown_branch": message.id in shown,
        "created_at": message.created_at.isoformat(),
        "finish_reason": message.finish_reason or None,
        "usage": {"input_tokens": message.input_tokens, "output_tokens": message.output_tokens}
        if message.role == Message.Role.ASSISTANT
        else None,
    }


def _offered(model_key: str):
    spec = providers.get_model(model_key or "")
    if spec is None:
        raise Refused(400, _("That model is not offered here."))
    return spec


@api.post("/conversations", response={201: ConversationOut}, summary="Create a conversation")
def create_conversation(request, body: ConversationIn):
    _offered(body.model)
    if len(body.system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise Refused(400, _("The system prompt is too long."))
    conversation = Conversation.objects.create(
        owner=request.auth,
        model_key=body.model,
        title=body.title,
        title_source=Conversation.TitleSource.USER if body.title else "",
        system_prompt=body.system_prompt,
    )
    return Status(201, _conversation_out(conversation))


@api.get("/conversations", response=list[ConversationOut], summary="List conversations, newest activity first")
def list_conversations(request, limit: int = 50, offset: int = 0):
    limit = max(1, min(limit, 200))
    owned = Conversation.objects.for_user(request.auth).order_by("-updated_at")[max(0, offset) : offset + limit]
    return [_conversation_out(conversation) for conversation in owned]


@api.get("/conversations/{conversation_id}", summary="A conversation with every message of every branch")
def read_conversation(request, conversation_id: UUID):
    conversation = Conversation.objects.for_user(request.auth).get(pk=conversation_id)
    shown = {message.id for message in conversation.transcript()}
    messages = conversation.messages.order_by("created_at", "id")
    return {
        **_conversation_out(conversation),
        "system_prompt": conversation.system_prompt,
        "branch": [str(m.id) for m in conversation.transcript()],
        "messages": [_message_out(m, shown) for m in messages],
    }


@api.delete("/conversations/{conversation_id}", response={204: None}, summary="Delete a conversation")
def delete_conversation(request, conversation_id: UUID):
    if not actions.delete_conversations(request.auth, [conversation_id]):
        raise Conversation.DoesNotExist
    return Status(204, None)


# --- runs -------------------------------------------------------------------------


@api.post("/conversations/{conversation_id}/runs", summary="Send a message and run the reply (invoke or stream)")
async def start_run(request, conversation_id: UUID, body: RunIn):
    user = request.auth
    text = body.input.strip()
    if not text or len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise Refused(400, _("The message is empty or too long."))
    _check_metadata(body.metadata)
    if body.models:
        if not 2 <= len(set(body.models)) == len(body.models) <= 4:
            raise Refused(400, _("Compare two to four different models."))
        for model in body.models:
            _offered(model)
        compared = await actions.start_comparison(
            conversation_id, user, text, body.models, tags=tuple(body.tags), metadata=body.metadata
        )
        for running in compared:
            runs.keep(running)
        return await _answer(request, compared, body, user, batch=True)
    running = await actions.start_reply(conversation_id, user, text, tags=tuple(body.tags), metadata=body.metadata)
    runs.keep(running)
    return await _answer(request, [running], body, user)


@api.post("/runs", summary="A stateless run: a model call that persists nothing")
async def stateless_run(request, body: StatelessIn):
    user = request.auth
    _offered(body.model)
    _check_metadata(body.metadata)
    run = actions.StatelessRun(
        body.model,
        _messages(body.messages),
        system=body.system,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        tags=tuple(body.tags),
        metadata=body.metadata,
    )
    running = await actions.start_stateless(user, [run])
    runs.keep(running[0])
    return await _answer(request, running, body, user)


@api.post("/batch", summary="Several inputs, or one input to several models, answered together")
async def batch(request, body: BatchIn):
    user = request.auth
    items = _batch_items(body)
    running = await actions.start_stateless(user, items)
    for r in running:
        runs.keep(r)
    return await _answer(request, running, body, user, batch=True)


@api.get("/runs/{run_id}", summary="A run's state: its result, or its reply so far while it runs")
async def read_run(request, run_id: UUID):
    return await runs.state(run_id, request.auth)


@api.get("/runs/{run_id}/events", summary="Join a run: its events after Last-Event-ID, then the live ones")
async def join_run(request, run_id: UUID, after: int = 0, stream_mode: str = "events", on_disconnect: str = "continue"):
    position = _last_event_id(request, str(after))
    try:
        after = int(position or 0)
    except ValueError:
        raise Refused(400, _("Last-Event-ID is not one of this run's event ids.")) from None
    modes = _modes(stream_mode)
    stream = await _first_events(_stream_run(run_id, request.auth, after, modes, on_disconnect))
    return sse_response(stream)


@api.get("/runs/events/batch", summary="Join several runs at once (a batch): ids are one position per run")
async def join_batch(
    request, runs: str = Query(..., description="the runs' ids, comma-separated"), stream_mode: str = "events"
):
    run_ids = [UUID(part) for part in runs.split(",") if part][:MAX_RUNS_PER_BATCH]
    position = _last_event_id(request, None)
    try:
        after = [int(part) for part in position.split(".")] if position else [0] * len(run_ids)
    except ValueError:
        after = []
    if len(after) != len(run_ids):
        raise Refused(400, _("Last-Event-ID is not one of this batch's event ids."))
    options = RunOptions(stream=True, stream_mode=_modes(stream_mode))
    return sse_response(await _first_events(_stream_batch(run_ids, request.auth, after, options)))


@api.post("/runs/{run_id}/cancel", response={202: None}, summary="Stop a run, wherever it is being written")
async def cancel_run(request, run_id: UUID):
    await runs.stop(run_id, request.auth)
    return Status(202, None)


async def _stream_batch(run_ids, user, after: list[int], options: RunOptions) -> AsyncIterator[str]:
    """Several runs' events as one stream: each event says its run and model;
    each SSE id is every run's position (``3.0.7``), so that one
    ``Last-Event-ID`` resumes them all."""
    positions, shown = list(after), _Shown(options.stream_mode)
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, run_id) -> None:
        try:
            async for batch_ in runs.listen(run_id, user, 0 if shown.needs_start else after[index]):
                await queue.put((index, batch_))
        except Exception as exc:
            await queue.put((index, exc))
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, run_id)) for i, run_id in enumerate(run_ids)]
    finished = False
    try:
        open_runs = len(tasks)
        while open_runs:
            index, batch_ = await queue.get()
            if batch_ is None:
                open_runs -= 1
                continue
            if isinstance(batch_, Exception):
                # One run's events could not be read (not the user's, lost): the others go on.
                broken = _broken(run_ids[index], positions[index] + 1)
                yield sse(broken, ".".join(map(str, positions)))
                continue
            events, values = shown.pick(batch_, after[index])
            chunk = []
            for event in events:
                positions[index] = event["id"]
                chunk.append(sse(event, ".".join(map(str, positions))))
            positions[index] = max(positions[index], batch_[-1]["id"])
            if values is not None:
                chunk.append(sse(values, ".".join(map(str, positions))))
            if chunk:
                yield "".join(chunk)
        finished = True
    finally:
        for task in tasks:
            task.cancel()
        if not finished and options.on_disconnect == "cancel":
            await _cancel(run_ids, user)


# --- parsing ------------------------------------------------------------------------


def _modes(value: str) -> list[str]:
    modes = [part.strip() for part in value.split(",") if part.strip()]
    if not modes or any(mode not in STREAM_MODES for mode in modes):
        raise Refused(400, _("stream_mode is one or more of: %(modes)s.") % {"modes": ", ".join(STREAM_MODES)})
    return modes


def _check_metadata(metadata: dict) -> None:
    if len(json.dumps(metadata)) > MAX_METADATA_CHARS:
        raise Refused(400, _("metadata is too large."))


def _messages(messages: list[MessageIn]) -> list[ChatMessage]:
    total = sum(len(m.content) for m in messages)
    if total > settings.CHAT_MAX_MESSAGE_CHARS * 4 or not messages[-1].content.strip():
        raise Refused(400, _("The messages are empty or too long."))
    return [ChatMessage(role=m.role, content=m.content) for m in messages]


def _batch_items(body: BatchIn) -> list[actions.StatelessRun]:
    shared = {"system": body.system, "temperature": body.temperature, "max_tokens": body.max_tokens}
    _check_metadata(body.metadata)

    def messages_of(item_input, item_messages):
        if item_messages:
            return _messages(item_messages)
        if item_input and item_input.strip():
            return _messages([MessageIn(role="user", content=item_input)])
        raise Refused(400, _("Each run of a batch needs an input or messages."))

    items = []
    for model in body.models or ([] if body.inputs else [body.model]):
        _offered(model)
        items.append(
            actions.StatelessRun(
                model,
                messages_of(body.input, body.messages),
                tags=(*body.tags, model),
                metadata=body.metadata,
                **shared,
            )
        )
    for item in body.inputs:
        model = item.model or body.model
        _offered(model)
        items.append(
            actions.StatelessRun(
                model,
                messages_of(item.input, item.messages),
                tags=(*body.tags, *item.tags),
                metadata=item.metadata or body.metadata,
                **shared,
            )
        )
    if not items or len(items) > MAX_RUNS_PER_BATCH:
        raise Refused(400, _("A batch has from 1 to %(most)d runs.") % {"most": MAX_RUNS_PER_BATCH})
    return items


@api.exception_handler(NinjaValidationError)
def _invalid(request, exc: NinjaValidationError):
    return api.create_response(request, {"detail": exc.errors}, status=422)


def open_urls(ninja_api: NinjaAPI):
    """``ninja_api``'s URL patterns.  Each authenticates by its key (or
    answers 401), so the site's login redirect does not apply to them."""
    patterns, app_name, namespace = ninja_api.urls
    for pattern in patterns:
        pattern.callback.login_required = False
    return patterns, app_name, namespace


def urls():
    return open_urls(api)
