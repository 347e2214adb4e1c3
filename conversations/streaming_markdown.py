"""Render a growing Markdown reply incrementally while it streams.

:class:`StreamingMarkdown` keeps the text in two parts split at a line
boundary, the *stable offset*. Everything before it is finished: it was
rendered once, with :func:`conversations.markdown.render_markdown`, and handed
out as ``append_html``. Everything after it is the *open tail*: it is
block-parsed with :func:`conversations.markdown.parse_blocks` (the renderer's
own parser, block rules only) and rendered again on every feed, as
``open_html``. Neither step ever looks at the finished part again, so a feed
costs in proportion to the open tail, not to the whole reply.

When a block is finished
------------------------
After each feed the offset moves to the furthest line ``c`` such that every
line before ``c`` is complete (ends in ``\\n``) and no later text can change
how those lines parse. That holds where some top-level block ``B`` ends and:

1. ``B`` is a heading (ATX, or setext with its underline), a thematic break,
   or a fenced code block whose closing fence line has arrived; ``c`` is the
   line after ``B``.
2. ``B`` is a paragraph, a table or a block quote and the line after it is
   blank; ``c`` is the line after that blank line. A blank line ends each of
   these for good: no setext underline, table row or lazy continuation line
   can reach back across it.
3. ``B`` is anything else (a bullet or ordered list, indented code), which a
   blank line does not end: a list takes further items or indented
   paragraphs after blank lines, and whether it is loose depends on them. So
   ``c`` is the start of the *next* top-level block, once that block follows
   a blank line and either its first line is complete or it already starts
   in column 0 with a character that can neither indent nor begin a list item
   (anything but a space, a tab, ``-``, ``+``, ``*`` or a digit).

At such a line the block parser starts afresh (no open container, no open
paragraph), so rendering the finished part piece by piece gives the same HTML
as rendering the whole text, and the open tail parses the same on its own as
it does inside the whole text.

The exception is link reference definitions (``[id]: https://...``), which
apply to the whole document: a ``[text][id]`` in a finished piece whose
definition is in another piece shows as plain text, both when the definition
comes later (the usual place) and when it was in an earlier piece. Replies
rarely use them, and :meth:`StreamingMarkdown.final`, which renders the whole
text at once, shows the links.

How the open tail is shown
--------------------------
The open tail is shown as its closed form, so that markup that is still
being written never shows as literal characters:

- an unterminated fence is a code block (CommonMark closes a fence at the
  end of the document, so nothing needs to be appended); a fence's opening
  line is held back until it is complete (its language label may be half
  written), and so is a line inside code that may become the closing fence;
- the line being written is held back while it consists only of ``-``,
  ``=``, ``|``, ``:`` and blanks (a table's delimiter row, a setext
  underline, a rule or a list marker, all still ambiguous) or starts like a
  fence;
- a table is a ``<table>`` as soon as its header and delimiter rows have
  arrived; until then a paragraph's last line that starts with ``|`` is held
  back, as a header row waiting for its delimiter row (a table written
  without a leading pipe shows as plain text until its delimiter row arrives);
- in the inline text on the tail's last line, an emphasis, strong or
  strikethrough opener (``*``, ``**``, ``_``, ``__``, ``~~``) without its
  closer, a ``[`` or ``![`` without its ``]``, and a ``](`` without its
  ``)`` are left out, so ``**bol`` shows ``bol`` and ``[x](https://exa``
  shows ``x``; a run of ``*``, ``_`` or ``~`` that ends the text and does not
  close a span completely is left out too, as it may be half of a closer.
  Which delimiters match follows CommonMark (flanking, the rule of three),
  ported from markdown-it. Unmatched ``**`` and ``~~`` are left out even
  where they cannot open (``5 ** 2``) until the block is finished, while a
  lone ``*`` or ``_`` that cannot open (``2*3``, ``snake_case``) stays. A code
  span being written is closed with its own backticks, i.e. shown as code,
  since its content is literal (``**`` in it is not emphasis).

Every piece of HTML comes from :func:`render_markdown`, so it is sanitised by
the same markdown-it options and nh3 allow-list as a finished reply; the
display rules above only remove characters from the source, or add the
backticks that close a code span.

The finished pieces plus the last ``open_html`` equal ``final()`` for the
usual reply. They can differ (and ``final()`` is right) when reference
definitions cross pieces, or when the reply ends in a state the display rules
hide: an unclosed marker, backtick or ``[`` that was meant literally, a last
paragraph line starting with ``|``, or a last line without a newline that
consists of rule characters (``---``) or opens a fence. Loose and tight lists
do not differ: a list stays in the open tail until it has certainly ended.

Cost
----
A feed block-parses the open tail once (again after a cut, and after holding
a line back), renders the displayed tail once, and renders a newly finished
piece once; the finished part is never parsed or rendered again. A block that
never finishes while it streams (one long list, a growing table) is
re-rendered on each feed, as the open block must be.
"""

from __future__ import annotations

import bisect
import html
import re
from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe
from markdown_it.common.utils import isMdAsciiPunct, isPunctChar, isWhiteSpace
from markdown_it.token import Token

from conversations.markdown import parse_blocks, render_markdown

__all__ = ["StreamUpdate", "StreamingMarkdown"]

_NEWLINES = re.compile(r"\r\n?")


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """What a client does after one :meth:`StreamingMarkdown.feed`.

    ``append_html``: sanitised HTML of the blocks that have just become
    finished, to be appended once to the bubble's finished part (empty if
    none did). ``open_html``: sanitised HTML of the open tail, which replaces
    the bubble's open part. ``changed``: whether there is anything to do at all
    (something to append, or an ``open_html`` different from the last one).
    ``extend``: when not empty, the open tail was and still is one plain
    paragraph (see :attr:`StreamingMarkdown.plain`) and grew by exactly this
    text, so a client may append it, escaped, to that paragraph instead of
    replacing the open part.
    """

    append_html: SafeString
    open_html: SafeString
    changed: bool
    extend: str = ""


class StreamingMarkdown:
    """Render a growing markdown text incrementally (see the module docstring).

    ``prefix`` is text the reply already has (a continued reply); its finished
    blocks come out in the first feed's ``append_html``, which may be
    ``feed("")``. Line endings are normalised as markdown-it does, so a
    ``\\r\\n`` split across two feeds is one line break.
    """

    def __init__(self, prefix: str = "") -> None:
        self._finished_text: list[str] = []
        self._finished_html: list[str] = []
        self._stable_offset = 0
        self._tail = ""
        self._pending_cr = False
        self._open_html = mark_safe("")
        self._displayed = ""  # the source of _open_html
        self._plain = False
        self._add(prefix)

    @property
    def text(self) -> str:
        """All text so far, line endings normalised."""
        return "".join(self._finished_text) + self._tail + ("\n" if self._pending_cr else "")

    @property
    def stable_offset(self) -> int:
        """How many characters of :attr:`text` are finished."""
        return self._stable_offset

    @property
    def finished_html(self) -> SafeString:
        """Every ``append_html`` so far, concatenated (for a client joining late)."""
        return mark_safe("".join(self._finished_html))

    @property
    def open_html(self) -> SafeString:
        """The last ``open_html``."""
        return self._open_html

    @property
    def plain(self) -> bool:
        """The open tail is one line of plain text (no character markdown
        could read as markup, no newline), so it is shown as one paragraph of
        escaped text, :attr:`open_text`, without parsing or rendering."""
        return self._plain

    @property
    def open_text(self) -> str:
        """The open tail's text, without the blank lines it may start with."""
        return self._tail.lstrip("\n")

    def feed(self, text: str) -> StreamUpdate:
        """Append a delta and say what the client must do about it."""
        if self._plain and _PLAIN.fullmatch(text):
            # The common case, prose without markup: no parse, no render.
            self._tail += text
            self._displayed = self._tail
            self._open_html = _plain_html(self._tail)
            return StreamUpdate(append_html=mark_safe(""), open_html=self._open_html, changed=bool(text), extend=text)
        self._add(text)
        append_html, tokens = mark_safe(""), None
        # A plain tail holds no finished block (at most blank lines before its one line), so no parse.
        if self._pending_cr or not _is_plain(self._tail):
            append_html, tokens = self._cut()
        if not self._pending_cr and _is_plain(self._tail):
            self._plain, displayed, open_html = True, self._tail, _plain_html(self._tail)
        else:
            self._plain = False
            displayed = _displayed(self._tail, self._tail.split("\n"), tokens or parse_blocks(self._tail))
            # Deltas that only add hidden characters ("*", a held-back line) change nothing shown.
            open_html = self._open_html if displayed == self._displayed else render_markdown(displayed)
        self._displayed = displayed
        changed = bool(append_html) or open_html != self._open_html
        self._open_html = open_html
        return StreamUpdate(append_html=append_html, open_html=open_html, changed=changed)

    def _cut(self) -> tuple[SafeString, list[Token] | None]:
        """Move the finished blocks at the tail's start to the finished part:
        their HTML, and the remaining tail's tokens if it was not cut."""
        lines = self._tail.split("\n")
        tokens = parse_blocks(self._tail)
        cut = _stable_lines(tokens, lines)
        if not cut:
            return mark_safe(""), tokens
        offset = sum(len(line) + 1 for line in lines[:cut])
        finished, self._tail = self._tail[:offset], self._tail[offset:]
        self._finished_text.append(finished)
        self._stable_offset += offset
        append_html = render_markdown(finished)
        self._finished_html.append(append_html)
        return append_html, None

    def final(self) -> SafeString:
        """The whole text rendered at once: ``render_markdown(prefix + all fed text)``."""
        return render_markdown(self.text)

    def _add(self, text: str) -> None:
        if self._pending_cr:
            text = "\r" + text
        # A "\r" at the end may be the first half of a "\r\n": wait for the next delta.
        self._pending_cr = text.endswith("\r")
        if self._pending_cr:
            text = text[:-1]
        self._tail += _NEWLINES.sub("\n", text)


# --- Plain text: one paragraph, escaped, no parse ----------------------------

# Characters no markdown rule reads as markup anywhere in a line (no inline
# rule starts with them; linkify and typographer are off), and neither a
# newline nor a tab: a second line could turn the first into a heading or a
# table, and tabs expand.
_PLAIN = re.compile(r"[^\\`*_~\[\]<>&|\n\r\t\x00]*")
# A line may begin a block (heading, quote, list, rule, fence, table, code)
# or be stripped if it starts with one of these.
_PLAIN_START = re.compile(r"[^\s#>\-+*=:|0-9]")


def _is_plain(tail: str) -> bool:
    line = tail.lstrip("\n")  # blank lines after a finished heading or list do not change its parse
    return bool(_PLAIN_START.match(line)) and bool(_PLAIN.fullmatch(line))


def _plain_html(tail: str) -> SafeString:
    """What render_markdown gives for a plain tail: markdown-it strips a
    paragraph's surrounding whitespace, and a plain tail has nothing to escape
    (``"`` comes out of nh3 as is); escaped all the same."""
    return mark_safe(f"<p>{html.escape(tail.strip(), quote=False)}</p>\n")


# --- Where the finished part ends ---------------------------------------------

_ENDED_BY_THEMSELVES = frozenset({"heading_open", "hr"})
_ENDED_BY_A_BLANK_LINE = frozenset({"paragraph_open", "table_open", "blockquote_open"})
_CANNOT_CONTINUE_A_LIST = re.compile(r"[^ \t\-+*0-9]")
_FENCE_LINE = re.compile(r" {0,3}(`+|~+)[ \t]*")


def _is_blank(line: str) -> bool:
    return not line.strip(" \t")


def _closes_fence(line: str, markup: str) -> bool:
    match = _FENCE_LINE.fullmatch(line)
    return bool(match) and match.group(1)[0] == markup[0] and len(match.group(1)) >= len(markup)


def _stable_lines(tokens: list[Token], lines: list[str]) -> int:
    """Return how many leading lines of the tail are finished (the module's rule)."""
    complete = len(lines) - 1  # lines[-1] is the line being written, maybe ""
    blocks = [token for token in tokens if token.level == 0 and token.nesting >= 0 and token.map]
    cut = 0
    for index, block in enumerate(blocks):
        start, end = block.map  # type: ignore[misc]
        if end > complete:
            break
        if block.type in _ENDED_BY_THEMSELVES:
            cut = end
        elif block.type == "fence":
            if end - start >= 2 and _closes_fence(lines[end - 1], block.markup):
                cut = end
        elif block.type in _ENDED_BY_A_BLANK_LINE:
            if end < complete and _is_blank(lines[end]):
                cut = end + 1
        elif index + 1 < len(blocks):
            following = blocks[index + 1].map[0]  # type: ignore[index]
            if _is_blank(lines[following - 1]) and (
                following < complete or _CANNOT_CONTINUE_A_LIST.match(lines[following])
            ):
                cut = following
    return cut


# --- What the open tail shows -------------------------------------------------

_PIPE_ROW = re.compile(r" {0,3}\|")
_RULE_LIKE = re.compile(r"[ \t]*[-=|:][-=|: \t]*")
_FENCE_OPENING = re.compile(r" {0,3}(?:`{3,}[^`]*|~{3,}.*)")
_CODE_TYPES = frozenset({"fence", "code_block"})


def _innermost(tokens: list[Token], line: int) -> Token | None:
    """The deepest block token whose lines include ``line``."""
    found: Token | None = None
    for token in tokens:
        if token.map and token.nesting >= 0 and token.type != "inline" and token.map[0] <= line < token.map[1]:
            if found is None or token.level > found.level:
                found = token
    return found


def _holds_line_being_written(line: str, index: int, tokens: list[Token]) -> tuple[bool, bool]:
    """(hold it back, it is rule-like) for the incomplete last line."""
    block = _innermost(tokens, index)
    if block is not None and block.type in _CODE_TYPES:
        # A fence's opening line (its info string may be half written) or a closing fence in the making.
        opening = block.type == "fence" and block.map is not None and block.map[0] == index
        return opening or bool(_FENCE_LINE.fullmatch(line)), False
    if _RULE_LIKE.fullmatch(line):
        return True, True
    in_paragraph = block is not None and block.type == "paragraph_open"
    return bool(_FENCE_OPENING.fullmatch(line)) or (in_paragraph and bool(_PIPE_ROW.match(line))), False


def _displayed(tail: str, lines: list[str], tokens: list[Token]) -> str:
    """The open tail as it is shown: held-back lines and unclosed markers left out."""
    complete = len(lines) - 1
    writing = lines[-1]
    if writing:
        hold, rule_like = _holds_line_being_written(writing, complete, tokens)
        if not hold:
            return _without_unclosed_markers(tail, tokens)
        tail = tail[: len(tail) - len(writing)]
        tokens = parse_blocks(tail)
        if not rule_like:
            return _without_unclosed_markers(tail, tokens)
    # Now every line is complete. A last paragraph line starting with "|" may
    # be a table's header row whose delimiter row is still to come.
    if complete and _PIPE_ROW.match(lines[complete - 1]):
        block = _innermost(tokens, complete - 1)
        if block is not None and block.type == "paragraph_open":
            tail = tail[: len(tail) - len(lines[complete - 1]) - 1]
            tokens = parse_blocks(tail)
    return _without_unclosed_markers(tail, tokens)


def _without_unclosed_markers(text: str, tokens: list[Token]) -> str:
    """Apply :func:`_unclosed_markers` to each inline span on the text's last line."""
    lines = text.split("\n")
    line_count = len(lines) - (lines[-1] == "")
    inlines = [token for token in tokens if token.type == "inline" and token.map and token.map[1] >= line_count]
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    limits: dict[int, int] = {}
    drop: set[int] = set()
    insert: dict[int, str] = {}
    # Right to left, so that the cells of a table row are found in order.
    for token in reversed(inlines):
        content = token.content
        content_lines = content.split("\n")
        first = token.map[0]  # type: ignore[index]
        offsets = []
        for index, content_line in enumerate(content_lines):
            line = first + index
            if line >= len(lines):
                break
            found = lines[line].rfind(content_line, 0, limits.get(line, len(lines[line])))
            if found < 0:
                break
            limits[line] = found
            offsets.append(starts[line] + found)
        if len(offsets) != len(content_lines) or not _MARKER_CHARS.search(content):
            continue  # not where expected (e.g. tabs expanded), or nothing to do: show as is
        end = offsets[-1] + len(content_lines[-1])
        at_end = not text[end:].strip(" \t")
        content_starts = [0]
        for content_line in content_lines[:-1]:
            content_starts.append(content_starts[-1] + len(content_line) + 1)
        hidden, closing = _unclosed_markers(content, at_end)
        for position in hidden:
            index = bisect.bisect_right(content_starts, position) - 1
            drop.add(offsets[index] + position - content_starts[index])
        if closing:
            insert[end] = closing
    if not drop and not insert:
        return text
    shown = [insert.get(index, "") + ("" if index in drop else char) for index, char in enumerate(text)]
    return "".join(shown) + insert.get(len(text), "")


# --- Unclosed inline markers ------------------------------------------------------

_MARKER_CHARS = re.compile(r"[*_~`\[\]]")
_AUTOLINK = re.compile(
    r"<(?:[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^<>\x00-\x20]*"
    r"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)>"
)


@dataclass(slots=True)
class _Delimiter:
    """One emphasis delimiter, as markdown-it's ``Delimiter`` plus where it is."""

    position: int
    width: int  # characters it covers: 1 for * and _, 2 for a ~~ pair
    run: int
    marker: str
    length: int  # run length for the rule of three; 0 for ~~ as in markdown-it
    token: int  # consecutive within a run, as markdown-it's token indices
    open: bool
    close: bool
    could_open: bool
    could_close: bool
    end: int = -1
    matched: bool = False


def _flanking(text: str, start: int, stop: int) -> tuple[bool, bool]:
    """(left-flanking, right-flanking) for the run text[start:stop], as markdown-it's scanDelims."""
    last = text[start - 1] if start > 0 else " "
    following = text[stop] if stop < len(text) else " "
    last_punct = isMdAsciiPunct(ord(last)) or isPunctChar(last)
    next_punct = isMdAsciiPunct(ord(following)) or isPunctChar(following)
    last_space = isWhiteSpace(ord(last))
    next_space = isWhiteSpace(ord(following))
    left = not (next_space or (next_punct and not (last_space or last_punct)))
    right = not (last_space or (last_punct and not (next_space or next_punct)))
    return left, right


def _delimiters_of_run(text: str, start: int, stop: int, run: int, token: int) -> list[_Delimiter]:
    marker = text[start]
    left, right = _flanking(text, start, stop)
    last = text[start - 1] if start > 0 else " "
    following = text[stop] if stop < len(text) else " "
    if marker == "_":
        can_open = left and (not right or isMdAsciiPunct(ord(last)) or isPunctChar(last))
        can_close = right and (not left or isMdAsciiPunct(ord(following)) or isPunctChar(following))
    else:
        can_open, can_close = left, right
    if marker == "~":
        # markdown-it: runs of one tilde are text; an odd run's first tilde is text.
        if stop - start < 2:
            return []
        first = start + (stop - start) % 2
        positions, width, length = range(first, stop, 2), 2, 0
    else:
        positions, width, length = range(start, stop), 1, stop - start
    return [
        _Delimiter(p, width, run, marker, length, token + i, can_open, can_close, can_open, can_close)
        for i, p in enumerate(positions)
    ]


def _balance(delimiters: list[_Delimiter]) -> None:
    """Match openers to closers: markdown-it's balance_pairs.processDelimiters."""
    openers_bottom: dict[str, list[int]] = {}
    header = 0
    last_token = -2
    jumps: list[int] = []
    for closer_index, closer in enumerate(delimiters):
        jumps.append(0)
        if delimiters[header].marker != closer.marker or last_token != closer.token - 1:
            header = closer_index
        last_token = closer.token
        if not closer.close:
            continue
        bottoms = openers_bottom.setdefault(closer.marker, [-1] * 6)
        slot = (3 if closer.open else 0) + closer.length % 3
        opener_index = header - jumps[header] - 1
        new_bottom = opener_index
        while opener_index > bottoms[slot]:
            opener = delimiters[opener_index]
            if opener.marker == closer.marker and opener.open and opener.end < 0:
                odd_match = (
                    (opener.close or closer.open)
                    and (opener.length + closer.length) % 3 == 0
                    and (opener.length % 3 != 0 or closer.length % 3 != 0)
                )
                if not odd_match:
                    last_jump = (
                        jumps[opener_index - 1] + 1 if opener_index > 0 and not delimiters[opener_index - 1].open else 0
                    )
                    jumps[closer_index] = closer_index - opener_index + last_jump
                    jumps[opener_index] = last_jump
                    closer.open = False
                    opener.end = closer_index
                    opener.close = False
                    opener.matched = closer.matched = True
                    new_bottom = -1
                    last_token = -2
                    break
            opener_index -= jumps[opener_index] + 1
        if new_bottom != -1:
            bottoms[slot] = new_bottom


def _closing_backticks(text: str, start: int, length: int) -> int:
    """End of the run of exactly ``length`` backticks that closes a code span, or -1."""
    index = start
    while True:
        index = text.find("`", index)
        if index < 0:
            return -1
        stop = index
        while stop < len(text) and text[stop] == "`":
            stop += 1
        if stop - index == length:
            return stop
        index = stop


def _link_destination_end(text: str, start: int) -> int:
    """After ``](``: the index past the closing ``)``; -1 if the text ends first, -2 if the line does."""
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "\n":
            return -2
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                return index + 1
            depth -= 1
        index += 1
    return -1


def _scan(text: str) -> tuple[list[int], list[_Delimiter], str]:
    """Scan one inline span's source like markdown-it's inline rules do.

    Returns the positions of unclosed link markers and unmatched emphasis
    openers, the balanced emphasis delimiters, and the backticks that close a
    code span left open (everything after its opening run is its content, so
    it is shown as code; "" if none).
    """
    hidden: list[int] = []
    closing = ""
    delimiters: list[_Delimiter] = []
    brackets: list[int] = []
    run = token = 0
    index = 0
    size = len(text)

    def hide_bracket(position: int) -> None:
        hidden.append(position)
        if position > 0 and text[position - 1] == "!":
            hidden.append(position - 1)

    while index < size:
        char = text[index]
        if char == "\\":
            index += 2 if index + 1 < size and isMdAsciiPunct(ord(text[index + 1])) else 1
        elif char == "`":
            stop = index
            while stop < size and text[stop] == "`":
                stop += 1
            span_end = _closing_backticks(text, stop, stop - index)
            if span_end >= 0:
                index = span_end
                continue
            body = text[stop:].rstrip("`")  # trailing backticks: maybe half a closing run
            if body.strip():
                closing = "`" * (stop - index)
                hidden.extend(range(stop + len(body), size))
            else:
                hidden.extend(range(index, size))
            break
        elif char == "<" and (autolink := _AUTOLINK.match(text, index)):
            index = autolink.end()
        elif char == "[":
            brackets.append(index)
            index += 1
        elif char == "]" and brackets:
            opening = brackets.pop()
            if text.startswith("(", index + 1):
                end = _link_destination_end(text, index + 2)
                if end == -1:  # the destination is still being written
                    hide_bracket(opening)
                    hidden.extend(range(index, size))
                    break
                index = end if end > 0 else index + 1
            else:
                if index + 1 == size:  # "[label]" with its "(" perhaps still to come
                    hide_bracket(opening)
                    hidden.append(index)
                index += 1
        elif char in "*_~":
            stop = index
            while stop < size and text[stop] == char:
                stop += 1
            found = _delimiters_of_run(text, index, stop, run, token)
            delimiters.extend(found)
            run += 1
            token += len(found) + 1
            index = stop
        else:
            index += 1
    for opening in brackets:
        hide_bracket(opening)
    _balance(delimiters)
    for delimiter in delimiters:
        if delimiter.matched:
            continue
        if delimiter.marker == "*" and delimiter.length < 2:
            # A lone "*" that cannot open is text, and so is one inside a word (2*3).
            hide = delimiter.could_open and not delimiter.could_close
        elif delimiter.marker == "_":
            hide = delimiter.could_open  # snake_case and snake__case are text
        else:
            hide = True  # ** and ~~ never show while the span is open, even between spaces
        if hide:
            hidden.extend(range(delimiter.position, delimiter.position + delimiter.width))
    return hidden, delimiters, closing


def _unclosed_markers(text: str, at_end: bool) -> tuple[list[int], str]:
    """Positions in ``text`` (one inline span's source) to leave out while it streams,
    and what to append to close an open code span.

    ``at_end``: nothing but blanks follows the span, so a marker run that ends
    it may be a closer still being written.
    """
    hidden, delimiters, closing = _scan(text)
    if closing or not at_end or not text or text[-1] not in "*_~":
        return hidden, closing
    start = len(text)
    while start > 0 and text[start - 1] == text[-1]:
        start -= 1
    backslashes = len(text[:start]) - len(text[:start].rstrip("\\"))
    if backslashes % 2:
        start += 1  # the first marker is escaped, so it is text
        if start == len(text):
            return hidden, closing
    trailing = [d for d in delimiters if start <= d.position]
    complete = bool(trailing) and all(d.matched for d in trailing)
    if complete:
        partners = {index for index, d in enumerate(delimiters) if start <= d.position}
        opener_runs = {o.run for o in delimiters if o.end in partners}
        complete = all(d.matched for d in delimiters if d.run in opener_runs)
    if complete:
        return hidden, closing
    # The run at the end may be the first half of a closer: leave it out.
    hidden, _, closing = _scan(text[:start])
    return [*hidden, *range(start, len(text))], closing
