"""The provider interface: what every model provider module implements.

The streaming code sees only the types defined here, never an SDK object.
A provider turns a ``ChatRequest`` into an async stream of typed events and
raises ``ProviderError`` (and nothing else) when the call fails.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal


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
    ``detail`` is the provider's own text, for logs and staff review.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One offered model and its per-model settings."""

    provider: str  # "openai", "anthropic", "demo"
    name: str  # the provider's model id, e.g. "gpt-4.1-mini"
    label: str  # shown in the picker
    max_tokens: int | None = None  # default when the conversation sets none
    thinking: bool = False  # ask for / surface reasoning
    thinking_budget: int | None = None  # Anthropic thinking budget_tokens
    streaming: bool = True
    price_in: Decimal | None = None  # per million input tokens
    price_out: Decimal | None = None  # per million output tokens

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.name}"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of history in our neutral form.

    Reasoning is deliberately absent: one model's thinking is never replayed
    to another model (Anthropic rejects foreign thinking signatures).
    """

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: ModelSpec
    messages: list[ChatMessage]
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None  # None: the model's default, then the provider's
    extra: dict = field(default_factory=dict)  # reserved; providers ignore unknown keys


class Provider:
    """Base class: one subclass per provider module.

    Subclasses implement ``stream_events`` (streaming call) and ``complete``
    (non-streaming call).  Callers use ``events()``, which picks one by the
    model's ``streaming`` flag so the UI path is the same for both.

    Contract for ``events()``: yields zero or more TextDelta/ReasoningDelta in
    order, then at most one Usage and exactly one Finish (Usage may come before
    or after Finish), or raises ProviderError.  Cancelling the consuming task
    closes the upstream HTTP connection promptly.
    """

    name: str = ""

    def is_configured(self) -> bool:
        """True when the environment holds what this provider needs (a key)."""
        raise NotImplementedError

    def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> list[Event]:
        """Non-streaming call; returns the whole reply's events."""
        raise NotImplementedError

    async def events(self, request: ChatRequest) -> AsyncIterator[Event]:
        if request.model.streaming:
            async for event in self.stream_events(request):
                yield event
        else:
            for event in await self.complete(request):
                yield event
