"""The provider interface: what every model provider module implements.

The streaming code sees only the types defined here, never an SDK object.
A provider turns a ``ChatRequest`` into an async stream of typed events and
raises ``ProviderError`` (and nothing else) when the call fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from django.conf import settings
from django.utils.translation import gettext


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None
    output_tokens: int | None


class FinishReason(enum.StrEnum):
    """Normalised finish reasons, stored on Message.finish_reason."""

    STOP = "stop"  # natural end (OpenAI "stop", Anthropic "end_turn"/"stop_sequence")
    LENGTH = "length"  # cut by max tokens
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    REFUSAL = "refusal"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    raw: str | None = None  # the provider's own word, kept for review


Event = TextDelta | ReasoningDelta | Usage | Finish


class ErrorKind(enum.StrEnum):
    AUTH = "auth"
    BILLING = "billing"  # HTTP 402: out of credit
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    BAD_REQUEST = "bad_request"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    CONTENT_FILTER = "content_filter"


class ProviderError(Exception):
    """The one exception a provider raises.

    ``message`` is safe to show to the user (translated, no secrets);
    ``detail`` says what failed, for logs; ``provider_message`` is the
    provider's own words from its error body (redacted, at most
    ``PROVIDER_MESSAGE_CHARS``), shown under ``message`` and stored with the
    reply, "" when there were none (a timeout, a dropped connection).
    Neither is ever trusted as HTML.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        detail: str = "",
        provider_message: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.status = status
        self.detail = detail
        self.provider_message = provider_message


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server models are reached at: a name, the wire format it speaks
    (``kind``, the Provider plug-in), where it is and how to authenticate.

    Holds no secret: ``key_env`` is the *name* of the environment variable
    with the key, and header values may say ``${NAME}`` for one; both are
    read at call time (``api_key()``, ``http_headers()``).
    """

    name: str  # "openai", "deepseek", ...: the first half of a model key
    kind: str  # "openai" (every OpenAI-compatible server), "anthropic", "demo"
    base_url: str | None = None  # None: the SDK's own default
    key_env: str = ""  # "": a server that wants no key (Ollama, llama.cpp)
    headers: tuple[tuple[str, str], ...] = ()  # extra HTTP headers

    def api_key(self) -> str:
        return os.environ.get(self.key_env, "") if self.key_env else ""

    def required_key(self) -> str:
        """The key from the environment ("" for a keyless endpoint); an AUTH ProviderError when it is unset."""
        api_key = self.api_key()
        if self.key_env and not api_key:
            raise provider_error(ErrorKind.AUTH, key_env=self.key_env, detail=f"{self.key_env} is not set")
        return api_key

    def is_available(self) -> bool:
        """True while the key is in the environment, or none is needed."""
        return not self.key_env or bool(self.api_key())

    def http_headers(self) -> dict[str, str]:
        """The extra headers, ``${NAME}`` replaced by that variable's value (or nothing)."""
        return {
            name: _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), value) for name, value in self.headers
        }

    @property
    def key_hint(self) -> str:
        """What an auth error tells the operator to check."""
        return self.key_env or f"the key_env of endpoint {self.name!r}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One offered model and its per-model settings.

    ``provider`` is the kind (which Provider plug-in speaks to it); the key
    is "endpoint:model".  ``endpoint`` None means the provider's built-in
    endpoint (``Provider.default_endpoint()``, OPENAI_* / ANTHROPIC_*).
    """

    provider: str  # "openai", "anthropic", "demo"
    name: str  # the provider's model id, e.g. "gpt-4.1-mini"
    label: str  # shown in the picker
    max_tokens: int | None = None  # default when the conversation sets none
    thinking: bool = False  # ask for / surface reasoning
    thinking_budget: int | None = None  # Anthropic thinking budget_tokens
    streaming: bool = True
    price_in: Decimal | None = None  # per million input tokens
    price_out: Decimal | None = None  # per million output tokens
    # How an OpenAI-compatible server is asked to think (see providers/openai.py): "" nothing
    # (DeepSeek's reasoner thinks unasked), "enable_thinking" (Qwen), "thinking_type" (Kimi, GLM).
    thinking_style: str = ""
    reasoning_model: bool | None = None  # OpenAI o-series: None guesses from the name
    reasoning_effort: str | None = None  # OpenAI reasoning models' "low" / "medium" / "high"
    extra_body: dict | None = field(default=None, hash=False)  # merged into the request body
    endpoint: Endpoint | None = None
    max_tokens_limit: int | None = None  # the most max_tokens a user may ask for; None: CHAT_MAX_TOKENS_LIMIT
    vision: bool | None = None  # accepts images; None: guessed from the model's name (accepts_images)

    def max_tokens_allowed(self) -> int:
        return self.max_tokens_limit or settings.CHAT_MAX_TOKENS_LIMIT

    @property
    def accepts_images(self) -> bool:
        """Whether images may go to this model: its ``vision`` option, else a
        guess from the name (the vision families of OpenAI, Anthropic, Qwen,
        Llama and Mistral); the demo and the fake never take them unasked."""
        if self.vision is not None:
            return self.vision
        return self.provider != "demo" and bool(VISION_MODEL.search(self.name))

    @property
    def endpoint_name(self) -> str:
        """The endpoint's name, stored on each reply (Message.provider)."""
        return self.endpoint.name if self.endpoint else self.provider

    @property
    def key(self) -> str:
        return f"{self.endpoint_name}:{self.name}"


# Model names that take images unless CHAT_MODEL_OPTIONS says otherwise ("vision").
VISION_MODEL = re.compile(
    r"^(gpt-4o|gpt-4\.1|gpt-4-turbo|gpt-5|o[134](-|$)|chatgpt-4o|claude-|gemini|qwen[\w.-]*-vl|qwen-vl|"
    r"llava|llama-?3\.2-vision|llama-4|pixtral|mistral-(small|medium)-3|glm-4\.?\dv|kimi-vl)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image that goes with a turn: already decoded, bounded and re-encoded
    (``conversations.attachments``), so a provider only wraps its bytes."""

    media_type: str  # image/png, image/jpeg, image/webp or image/gif
    data: bytes

    def base64(self) -> str:
        import base64

        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.base64()}"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of history in our neutral form.

    Reasoning is deliberately absent: one model's thinking is never replayed
    to another model (Anthropic rejects foreign thinking signatures).
    """

    role: Literal["user", "assistant"]
    content: str
    images: tuple[ImagePart, ...] = ()  # for models that accept images (ModelSpec.accepts_images)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: ModelSpec
    messages: list[ChatMessage]
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None  # None: the model's default, then the provider's
    # Hints; "continuation": the last assistant message is a cut reply to go on from. Unknown keys are ignored.
    extra: dict = field(default_factory=dict)
    # What the call is for ("chat", "title"): a caller keeps each call's events
    # to its own consumer, so a title never reaches the chat's stream.
    tags: tuple[str, ...] = ("chat",)


class Provider:
    """Base class: one subclass per provider module.

    Subclasses implement ``stream_events`` (streaming call) and ``complete``
    (non-streaming call).  Callers use ``events()``, which picks one by the
    model's ``streaming`` flag so the UI path is the same for both.

    Contract for ``events()``: yields zero or more TextDelta/ReasoningDelta in
    order, then at most one Usage and exactly one Finish (Usage may come before
    or after Finish), or raises ProviderError.  Cancelling the consuming task
    closes the upstream HTTP connection promptly.  A stream's first event
    comes within the first-event deadline (see ``first_event_deadline``) or
    the call is made again, while time is left; then it is a TIMEOUT error.

    Finish comes only for a reply that arrived whole (the stream's terminator
    or its finish reason, or one JSON body, even one answering a streaming
    request); a stream that was cut short or held nothing of the wire format
    raises ProviderError after the deltas it did carry, so a broken stream is
    never an empty complete reply.  A reply with no finish reason is STOP.
    Usage comes only with counts the provider reported (never made-up zeros):
    a server that sends none yields no Usage.
    """

    name: str = ""

    def default_endpoint(self) -> Endpoint:
        """The built-in endpoint of this kind, from today's environment."""
        return Endpoint(self.name, self.name)

    def is_configured(self) -> bool:
        """True when the built-in endpoint's key is in the environment."""
        return self.default_endpoint().is_available()

    def warm_up(self, endpoint: Endpoint | None = None) -> None:
        """Build what the first request to ``endpoint`` would otherwise build
        (an SDK client); called on the server's running loop at start-up."""

    def list_models(self, endpoint: Endpoint) -> list[str]:
        """The model ids ``endpoint`` lists (``GET {base_url}/models``): a
        blocking call, for ``checkproviders`` and model discovery, never on
        the event loop.  Raises ProviderError."""
        raise NotImplementedError

    def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> list[Event]:
        """Non-streaming call; returns the whole reply's events."""
        raise NotImplementedError

    async def events(self, request: ChatRequest) -> AsyncIterator[Event]:
        try:
            if request.model.streaming:
                # aclosing: closing this generator closes the provider's at once
                # (and with it the HTTP response), not whenever GC finalises it.
                stream_events = first_event_deadline(lambda: self.stream_events(request))
                async with contextlib.aclosing(stream_events) as stream:
                    async for event in stream:
                        yield event
            else:
                for event in await self.complete(request):
                    yield event
        except ProviderError as exc:
            endpoint = request.model.endpoint
            if exc.kind is not ErrorKind.AUTH or endpoint is None:
                raise
            # The auth message names this endpoint's key variable, not the kind's built-in one.
            raise provider_error(
                ErrorKind.AUTH,
                key_env=endpoint.key_hint,
                status=exc.status,
                detail=exc.detail,
                provider_message=exc.provider_message,
            ) from exc


# --- Helpers shared by the provider modules ---------------------------------

RETRYABLE_KINDS = frozenset(
    {ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


# What an error body's type/code may make of the kind its status gave: a
# generic status narrowed, never a specific one overruled (a server that
# labels every error "api_error" still gets 401 and 429 right).
REFINEMENTS = {
    ErrorKind.BAD_REQUEST: frozenset({ErrorKind.CONTENT_FILTER, ErrorKind.BILLING}),
    ErrorKind.RATE_LIMIT: frozenset({ErrorKind.BILLING}),  # OpenAI's 429 insufficient_quota
    ErrorKind.SERVER: frozenset({ErrorKind.OVERLOADED, ErrorKind.TIMEOUT}),
}


def kind_for_status(status: int, hint: ErrorKind | None = None) -> ErrorKind:
    """The error kind an HTTP error status means, the same for every provider;
    ``hint``, the kind the body's type names, only narrows a generic one (see REFINEMENTS)."""
    kind = _status_kind(status)
    return hint if hint in REFINEMENTS.get(kind, ()) else kind


def _status_kind(status: int) -> ErrorKind:
    kinds = {
        401: ErrorKind.AUTH,
        402: ErrorKind.BILLING,
        403: ErrorKind.PERMISSION,
        404: ErrorKind.NOT_FOUND,
        408: ErrorKind.TIMEOUT,
        429: ErrorKind.RATE_LIMIT,
        503: ErrorKind.OVERLOADED,
        529: ErrorKind.OVERLOADED,
    }
    if status in kinds:
        return kinds[status]
    return ErrorKind.SERVER if status >= 500 else ErrorKind.BAD_REQUEST


def _user_message(kind: ErrorKind, key_env: str) -> str:
    messages = {
        ErrorKind.AUTH: gettext("The model provider rejected the API key. Check %(env)s.") % {"env": key_env},
        ErrorKind.BILLING: gettext("The account with the model provider is out of credit."),
        ErrorKind.PERMISSION: gettext("The API key is not allowed to use this model."),
        ErrorKind.NOT_FOUND: gettext("The model provider does not know this model."),
        ErrorKind.RATE_LIMIT: gettext("The model provider's rate limit was reached. Try again in a moment."),
        ErrorKind.OVERLOADED: gettext("The model provider is overloaded. Try again in a moment."),
        ErrorKind.BAD_REQUEST: gettext("The model provider rejected the request."),
        ErrorKind.SERVER: gettext("The model provider had an internal error. Try again."),
        ErrorKind.TIMEOUT: gettext("The model provider took too long to respond."),
        ErrorKind.CONNECTION: gettext("The connection to the model provider failed."),
        ErrorKind.CONTENT_FILTER: gettext("The model provider refused this request under its content policy."),
    }
    return messages[kind]


def provider_error(
    kind: ErrorKind,
    *,
    key_env: str,
    status: int | None = None,
    detail: str = "",
    secret: str = "",
    provider_message: str | None = None,
) -> ProviderError:
    """A ProviderError with the standard user-facing message for ``kind``.

    ``key_env`` names the environment variable holding the key (named in the
    auth message; its value never is).  ``detail`` and ``provider_message``
    (the error body's own words) are redacted (see ``redact``: ``secret``,
    the key, and anything that looks like one); the latter is also trimmed.
    """
    return ProviderError(
        kind,
        _user_message(kind, key_env),
        retryable=kind in RETRYABLE_KINDS,
        status=status,
        detail=redact(detail, secret),
        provider_message=trim(redact(provider_message or "", secret)),
    )


PROVIDER_MESSAGE_CHARS = 300
# Things that look like credentials, whoever's: OpenAI/Anthropic/DeepSeek keys
# (sk-…, sk-ant-…, sk-proj-…), an echoed Authorization header, and long
# hex or base64 tokens (other providers' keys, session tokens); a model's
# name (lower case, words and dates) is not one.
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}|\bBearer\s+[^\s\"',;]+|[A-Za-z0-9+/_\-]{32,}=*", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-fA-F]+")


def _looks_like_key(token: str) -> bool:
    if token[:3].lower() == "sk-" or token[:6].lower() == "bearer":
        return True
    token = token.rstrip("=")
    if _HEX.fullmatch(token):
        return True
    mixed = any(c.isupper() for c in token) and any(c.islower() for c in token)
    return mixed and any(c.isdigit() for c in token) and "/" not in token.strip("/")


def redact(text: str, secret: str = "") -> str:
    """``text`` with ``secret`` and anything key-like replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")

    def hide(match: re.Match) -> str:
        if not _looks_like_key(match[0]):
            return match[0]
        return "Bearer ***" if match[0][:6].lower() == "bearer" else "***"

    return _KEY_LIKE.sub(hide, text)


def trim(text: str, limit: int = PROVIDER_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to at most ``limit`` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


async def first_event_deadline(open_stream: Callable[[], AsyncIterator[Event]]) -> AsyncIterator[Event]:
    """The events of ``open_stream()``, its first within
    ``CHAT_PROVIDER_FIRST_BYTE_TIMEOUT`` seconds, else the call is made anew
    (up to ``CHAT_PROVIDER_MAX_RETRIES`` times) while
    ``CHAT_PROVIDER_TOTAL_TIMEOUT`` has time left, then a TIMEOUT error.

    The SDKs' own timeout is per read and per attempt (60 s, three attempts:
    three minutes on a hung server); this bounds what the person waits for.
    The deadlines end with the first event: a reply that has begun is bounded
    only by the read timeout between its chunks.  0 turns a deadline off.
    """
    loop = asyncio.get_running_loop()
    first, total = settings.CHAT_PROVIDER_FIRST_BYTE_TIMEOUT, settings.CHAT_PROVIDER_TOTAL_TIMEOUT
    ends = loop.time() + total if total > 0 else None
    attempts = max(settings.CHAT_PROVIDER_MAX_RETRIES, 0) + 1
    for attempt in range(1, attempts + 1):
        deadlines = [loop.time() + first] if first > 0 else []
        deadline = min(deadlines + ([ends] if ends is not None else []), default=None)
        async with contextlib.aclosing(open_stream()) as stream:
            try:
                async with asyncio.timeout_at(deadline) as waiting:
                    event = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not waiting.expired():
                    raise
                if attempt < attempts and (ends is None or loop.time() < ends):
                    continue
                waited = total if deadline == ends else first
                detail = f"no event within {waited:g} s (attempt {attempt} of {attempts})"
                raise provider_error(ErrorKind.TIMEOUT, key_env="", detail=detail) from None
            yield event
            async for event in stream:
                yield event
            return


class ClientCache:
    """One SDK client per (running event loop, settings key).

    Building a client costs tens of milliseconds (an SSL context) and a new
    client has no pooled connections, so clients are reused.  They are bound
    to the loop they were first used on (their pooled sockets are), so the
    loop is part of the key; entries for loops that have closed are dropped
    on the next miss, since a closed loop can no longer close its sockets.
    (A weak key would not do: the pooled sockets refer to their loop, so it
    would never be collected.)  Production has one loop; tests have one per
    test and call ``aclose()`` at teardown.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Hashable, ...], factory: Callable[[], Any]) -> Any:
        full_key = (asyncio.get_running_loop(), *key)
        with self._lock:
            client = self._clients.get(full_key)
            if client is None:
                for stale in [k for k in self._clients if k[0].is_closed()]:
                    del self._clients[stale]
                client = self._clients[full_key] = factory()
            return client

    async def aclose(self) -> None:
        """Close the clients bound to the running loop (e.g. at shutdown, in tests)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            keys = [k for k in self._clients if k[0] is loop]
            clients = [self._clients.pop(k) for k in keys]
        for client in clients:
            await client.close()
