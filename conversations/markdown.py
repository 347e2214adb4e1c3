"""Render untrusted LLM output (Markdown) to sanitised HTML.

Model output is attacker-controlled (prompt injection), so rendering is two
layers deep: markdown-it-py never emits raw HTML or images, and nh3 then
re-parses the result and keeps only an explicit allow-list. Either layer alone
should be safe; together a bug in one does not become XSS.

This module must stay importable without Django settings, because
``static/css/pygments.css`` is generated from :func:`pygments_css` on the
command line.
"""

from __future__ import annotations

import functools
import html
import re

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from markdown_it.token import Token
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = ["RENDER_VERSION", "parse_blocks", "pygments_css", "render_markdown"]

# Replies keep the HTML rendered when they ended (Message.html); bump this
# whenever the rendering or the sanitiser's allow-list changes, and stored
# HTML of an older version is rendered anew instead of being trusted.
RENDER_VERSION = 1

LIGHT_STYLE = "default"
# Against "default", github-dark leaves only font-weight/font-style/border of
# a few light rules un-overridden, never a colour, so dark mode stays legible.
DARK_STYLE = "github-dark"

_FORMATTER = HtmlFormatter(cssclass="highlight", nowrap=False)
_PLAIN_LABEL = "text"
_PLAIN_LEXER = TextLexer()

# Classes we emit ourselves, plus every class Pygments' HtmlFormatter can emit
# for standard token types. Anything else (e.g. smuggled in by a future
# renderer bug) is dropped by nh3.
_PYGMENTS_CLASSES = frozenset(cls for cls in STANDARD_TYPES.values() if cls)
_ALIGN_CLASSES = frozenset({"align-left", "align-center", "align-right"})
_ALLOWED_CLASSES = {
    "div": {"highlight", "code-block", "code-header"},
    "span": {"code-lang", *_PYGMENTS_CLASSES},
    "th": set(_ALIGN_CLASSES),
    "td": set(_ALIGN_CLASSES),
}

_ALLOWED_TAGS = frozenset(
    "p br hr h1 h2 h3 h4 h5 h6 strong em del s code pre blockquote "
    "ul ol li a table thead tbody tr th td span div".split()
)

_CLEANER = nh3.Cleaner(
    tags=set(_ALLOWED_TAGS),
    # "class" is deliberately absent here: allowed_classes governs it per tag.
    # "rel" must be absent because link_rel sets it; "target" is never allowed.
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    allowed_classes=_ALLOWED_CLASSES,
    url_schemes={"http", "https", "mailto"},
    # A model has no business linking into our own app (e.g. GET endpoints)
    # or to protocol-relative "//host" URLs, so relative hrefs are dropped.
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def _render_image(self, tokens, idx, options, env) -> str:
    """Render ``![alt](url)`` as its escaped alt text, never as ``<img>``.

    Remote images would be fetched automatically by the browser, letting an
    injected prompt exfiltrate conversation data through the image URL.
    """
    return html.escape(self.renderInlineAsText(tokens[idx].children or [], options, env))


def _render_cell_open(self, tokens, idx, options, env) -> str:
    """Turn markdown-it's ``style="text-align:x"`` into ``class="align-x"``.

    Style attributes are not on the allow-list at all (CSS injection), so the
    column alignment is carried by a fixed class name instead.
    """
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if isinstance(style, str) and style.startswith("text-align:"):
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
    return self.renderToken(tokens, idx, options, env)


@functools.lru_cache(maxsize=256)
def _lexer_for(name: str) -> Lexer | None:
    """Return a lexer for an info-string language name, or None if unknown.

    No guessing from content: guessing is slow and makes hostile input pick
    the lexer. Cached because the same few languages repeat on every render.
    """
    try:
        return get_lexer_by_name(name)
    except ClassNotFound:
        return None


def _render_fence(self, tokens, idx, options, env) -> str:
    """Render a fenced block as a labelled, Pygments-highlighted code block."""
    token = tokens[idx]
    # Same info-string handling as markdown-it's own fence rule: entities
    # decoded ("c&#43;&#43;" -> "c++"), first word is the language.
    words = unescapeAll(token.info).split(maxsplit=1)
    lang = words[0] if words else ""
    lexer = _lexer_for(lang) if lang else None
    if lexer is None:
        lexer = _PLAIN_LEXER
    body = highlight(token.content, lexer, _FORMATTER)
    # The label is model-controlled text, so escape it (nh3 runs later too).
    label = html.escape(lang or _PLAIN_LABEL)
    header = f'<div class="code-header"><span class="code-lang">{label}</span></div>'
    return f'<div class="code-block">{header}{body}</div>\n'


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt(
        "commonmark",
        {"html": False, "linkify": False, "typographer": False},
    ).enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image)
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("th_open", _render_cell_open)
    md.add_render_rule("td_open", _render_cell_open)
    return md


_MD = _build_markdown()


def render_markdown(text: str | None) -> SafeString:
    """Render untrusted Markdown to HTML that is safe to insert into a page.

    Falsy input (``""``, ``None``) gives an empty SafeString. The result only
    contains allow-listed tags, classes and http/https/mailto links, each with
    ``rel="noopener noreferrer nofollow"``; raw HTML in ``text`` comes out as
    escaped text and images come out as their alt text.
    """
    if not text:
        return mark_safe("")
    return mark_safe(_CLEANER.clean(_MD.render(str(text))))


# markdown-it's own first step (rules_core/normalize.py), repeated here
# because parse_blocks skips the core chain.
_NEWLINES = re.compile(r"\r\n?")


def parse_blocks(text: str) -> list[Token]:
    """Return the block-level tokens :func:`render_markdown` would build for ``text``.

    Only markdown-it's block rules run, with the same configured parser: no
    inline parsing, no rendering and no sanitising, so nothing here is HTML.
    Each block token's ``.map`` is its ``[start, end)`` line range; ``inline``
    tokens carry their raw ``.content`` and no children. For callers that need
    to know where blocks begin and end (conversations.streaming_markdown).
    """
    tokens: list[Token] = []
    _MD.block.parse(_NEWLINES.sub("\n", text).replace("\0", "\ufffd"), _MD, {}, tokens)
    return tokens


_CSS_HEADER = """\
/* Generated file, do not edit. Regenerate from the repository root with:
 *   python -c "from conversations.markdown import pygments_css; print(pygments_css())" > static/css/pygments.css
 */"""


def pygments_css() -> str:
    """Return CSS for ``.highlight`` blocks: light style, dark via media query."""

    def rules(style: str) -> list[str]:
        # Not get_style_defs(): it also emits unscoped rules (e.g. "pre {…}")
        # that would leak onto every <pre> on the page.
        formatter = HtmlFormatter(style=style, cssclass="highlight")
        return [
            *formatter.get_background_style_defs(".highlight"),
            *formatter.get_token_style_defs(".highlight"),
        ]

    light = "\n".join(rules(LIGHT_STYLE))
    dark = "\n".join("  " + rule for rule in rules(DARK_STYLE))
    # The header is part of the output so the committed file can be
    # regenerated byte-for-byte with the command it names.
    return (
        f"{_CSS_HEADER}\n"
        f"/* Pygments style: {LIGHT_STYLE} */\n{light}\n\n"
        f"/* Pygments style: {DARK_STYLE} */\n"
        f"@media (prefers-color-scheme: dark) {{\n{dark}\n}}"
    )
