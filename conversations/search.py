"""Finding text in a user's own conversations: titles and message text.

Substring search (not words), so that Chinese and Japanese, written without
spaces, are found as typed; see ``MessageQuerySet.containing`` for how each
database answers.  Each message is searched on its own: a term split across
two messages is no match.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from conversations.models import Conversation, Message, search_is_indexed

MAX_QUERY_CHARS = 200
MESSAGE_RESULTS = 50
TITLE_RESULTS = 10
# A query the trigram indexes cannot answer (too short; on PostgreSQL, without
# 3 letters or digits in a row) scans text: only in this many of the user's
# most recently active conversations.
SHORT_QUERY_CONVERSATIONS = 500
SNIPPET_CHARS = 40  # either side of the match


@dataclass(frozen=True)
class Hit:
    """One result: a conversation whose title matched (``message`` None), or
    one message in it, with the text around the first match.  ``before``,
    ``match`` and ``after`` are plain text, for the template to escape."""

    conversation: Conversation
    message: Message | None
    before: str
    match: str
    after: str

    @property
    def url(self) -> str:
        """The conversation, on the branch of the message, scrolled to it."""
        if self.message is None:
            return self.conversation.get_absolute_url()
        return f"{self.conversation.get_absolute_url()}?m={self.message.id}#msg-{self.message.id}"


@dataclass(frozen=True)
class Results:
    query: str
    titles: list[Hit]
    messages: list[Hit]
    # When no index could answer the query: how many of the newest conversations were read (else 0).
    bounded: int

    def __bool__(self) -> bool:
        return bool(self.titles or self.messages)


def clean_query(text: str) -> str:
    return text.strip()[:MAX_QUERY_CHARS]


def search(user, text: str) -> Results:
    """What ``user`` can find for ``text`` in their own conversations (never
    anyone else's): matching titles, then matching messages of every branch,
    the most recently active conversations first."""
    query = clean_query(text)
    if not query:
        return Results(query, [], [], bounded=0)
    own = Conversation.objects.for_user(user)
    bounded = not search_is_indexed(query)
    if bounded:
        own = own.filter(pk__in=own.by_activity().values("pk")[:SHORT_QUERY_CONVERSATIONS])
    titles = own.titled(query).by_activity().only("id", "title")[:TITLE_RESULTS]
    messages = (
        Message.objects.in_newest_conversations_containing(query, own, MESSAGE_RESULTS)
        .select_related("conversation")
        .only("id", "content", "conversation_id", "created_at", "conversation__title", "conversation__updated_at")
        .order_by("-conversation__updated_at", "conversation_id", "created_at")[:MESSAGE_RESULTS]
    )
    return Results(
        query,
        [Hit(c, None, *snippet(c.display_title, query)) for c in titles],
        [Hit(m.conversation, m, *snippet(m.content, query)) for m in messages],
        bounded=SHORT_QUERY_CONVERSATIONS if bounded else 0,
    )


def snippet(text: str, query: str, chars: int = SNIPPET_CHARS) -> tuple[str, str, str]:
    """(before, match, after): about ``chars`` characters either side of the
    first case-insensitive match of ``query`` in ``text``, cut between
    grapheme clusters (never inside an emoji sequence or an accented letter),
    with "…" where text was left out.  No match (the database folds case in
    ways Python does not): the text's start, and an empty match."""
    found = regex.search(regex.escape(query), text, regex.IGNORECASE | regex.V1)
    if found is None:
        head = _clip(text, 0, 2 * chars)
        return head, "", "…" if len(head) < len(text) else ""
    start, end = found.span()
    before_start = _grapheme_start(text, max(0, start - chars))
    after_end = _grapheme_end(text, min(len(text), end + chars))
    before = ("…" if before_start > 0 else "") + _flat(text[before_start:start])
    after = _flat(text[end:after_end]) + ("…" if after_end < len(text) else "")
    return before, text[start:end], after


_SPACES = regex.compile(r"\s+")


def _flat(text: str) -> str:
    """Line breaks and runs of spaces as one space: a snippet is one line."""
    return _SPACES.sub(" ", text)


def _clip(text: str, start: int, end: int) -> str:
    return _flat(text[start : _grapheme_end(text, min(len(text), end))])


_GRAPHEMES = regex.compile(r"\X")


def _grapheme_start(text: str, index: int) -> int:
    """The start of the grapheme cluster ``index`` falls in."""
    begin = max(0, index - 32)  # no cluster in real text is longer
    for cluster in _GRAPHEMES.finditer(text, begin, min(len(text), index + 32)):
        if cluster.end() > index:
            return cluster.start()
    return index


def _grapheme_end(text: str, index: int) -> int:
    """The end of the grapheme cluster ``index`` falls in (``index`` if it is a boundary)."""
    begin = max(0, index - 32)
    for cluster in _GRAPHEMES.finditer(text, begin, min(len(text), index + 32)):
        if cluster.start() >= index:
            return cluster.start()
        if cluster.end() > index:
            return cluster.end()
    return index
