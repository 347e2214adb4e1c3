"""The offline demo model: a canned markdown reply, streamed like a real one.

It needs no key and no network, so a fresh install can be tried at once.
The reply quotes the user's last message in its first paragraph, then shows
a table, a fenced Python block and a little Chinese, token by token with
``settings.CHAT_DEMO_TOKEN_DELAY_MS`` between tokens.  Continuing a reply
(``extra["continuation"]``) sends only the rest of it.  Tokens are word-ish
pieces that keep their leading whitespace, so they join back exactly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from django.conf import settings
from django.utils.translation import gettext

from conversations.providers.base import ChatRequest, Event, Finish, FinishReason, Provider, TextDelta, Usage

QUOTE_LIMIT = 200  # characters of the user's message quoted back
TITLE_WORDS = 5
_TOKEN = re.compile(r"\s*\S+|\s+")

_TABLE = """| Feature | Demo |
|---|---|
| Streaming | ✓ |
| Markdown tables | ✓ |
| Code blocks | ✓ |"""

_CODE = """```python
def greet(name: str) -> str:
    return f"Hello, {name}! 你好"
```"""


def reply_text(last_user_message: str) -> str:
    """The demo's whole reply to ``last_user_message``."""
    # One line, so the quote stays inside the paragraph whatever was typed.
    quoted = " ".join(last_user_message.split())
    if len(quoted) > QUOTE_LIMIT:
        quoted = quoted[:QUOTE_LIMIT].rstrip() + "…"
    intro = gettext("You wrote: “%(message)s”. I am the offline demo model, so this reply is canned.") % {
        "message": quoted or gettext("(nothing)")
    }
    middle = gettext("Here is a table and some code:")
    closing = "你好! " + gettext("Set OPENAI_API_KEY or ANTHROPIC_API_KEY to talk to a real model.")
    return f"{intro}\n\n{middle}\n\n{_TABLE}\n\n{_CODE}\n\n{closing}"


def continuation_text(whole: str, written: str) -> str:
    """What the demo adds to ``written``, a reply cut short, when asked to
    continue it: the rest of ``whole`` (its reply to the same message), so
    that the two read as one reply.  Text it did not write gets a closing line."""
    if whole.startswith(written) and len(whole) > len(written):
        return whole[len(written) :]
    return "\n\n" + gettext("That is all the offline demo model has to add.")


def tokens(text: str) -> list[str]:
    """Word-ish tokens with their leading whitespace; ``"".join(tokens(t)) == t``."""
    return _TOKEN.findall(text)


class DemoProvider(Provider):
    name = "demo"

    def is_configured(self) -> bool:
        return True

    async def stream_events(self, request: ChatRequest) -> AsyncIterator[Event]:
        delay = settings.CHAT_DEMO_TOKEN_DELAY_MS / 1000
        pieces, finish = self._pieces(request)
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(delay)
            yield TextDelta(piece)
        yield Usage(_count_words(request), len(pieces))
        yield finish

    async def complete(self, request: ChatRequest) -> list[Event]:
        pieces, finish = self._pieces(request)
        return [TextDelta("".join(pieces)), Usage(_count_words(request), len(pieces)), finish]

    def _pieces(self, request: ChatRequest) -> tuple[list[str], Finish]:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if "title" in request.tags:
            # A title call: the first few words of what the user first wrote.
            first_user = next((m.content for m in request.messages if m.role == "user"), "")
            return tokens(" ".join(first_user.split()[:TITLE_WORDS])), Finish(FinishReason.STOP, "stop")
        text = reply_text(last_user)
        last = request.messages[-1] if request.messages else None
        if request.extra.get("continuation") and last is not None and last.role == "assistant":
            text = continuation_text(text, last.content)
        pieces = tokens(text)
        limit = request.max_tokens or request.model.max_tokens
        if limit and len(pieces) > limit:
            return pieces[:limit], Finish(FinishReason.LENGTH, "length")
        return pieces, Finish(FinishReason.STOP, "stop")


def _count_words(request: ChatRequest) -> int:
    return len(request.system.split()) + sum(len(m.content.split()) for m in request.messages)
