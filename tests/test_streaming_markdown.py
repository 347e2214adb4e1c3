"""Tests for conversations.streaming_markdown: markdown while a reply streams.

Each corpus reply is fed in chunks of 1, 2, 3 and 7 characters and by
whitespace-delimited tokens, and every step is checked against the full
render of the whole reply (render_markdown), which is the reference.
"""

import functools
import html
import random
import re

import pytest
from django.utils.safestring import SafeString

from conversations import streaming_markdown
from conversations.markdown import parse_blocks, render_markdown
from conversations.streaming_markdown import StreamingMarkdown, StreamUpdate
from tests.test_markdown import XSS_PAYLOADS, assert_safe

CORPUS = {
    "headings and inline markup": (
        "# Streaming replies\n\n"
        "Some **bold** text, some *italic* text, `inline code` and ~~struck~~ words.\n\n"
        "## A second heading\n\n"
        "Another paragraph with a [link](https://example.com/docs?q=1) in it.\n"
    ),
    "nested lists": (
        "Shopping list:\n\n"
        "- fruit\n  - apples\n  - pears\n- vegetables\n  1. carrots\n  2. leeks\n\n"
        "1. first\n2. second\n   - nested **bold** item\n\n"
        "After the lists.\n"
    ),
    "a table that grows row by row": (
        "| Name | Qty | Price |\n"
        "|:-----|----:|:-----:|\n"
        "| apple | 3 | 1.20 |\n"
        "| pear | 10 | 0.80 |\n"
        "| **kiwi** | 7 | `2.00` |\n\n"
        "Total below the table.\n"
    ),
    "fenced python": (
        "Here is code:\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    """Say **hello**."""\n'
        '    return f"Hello, {name}!"  # | --- | ``` inside\n'
        "```\n\n"
        "And after the code.\n"
    ),
    "an unterminated fence": "Unfinished:\n\n```js\nconst x = 1;\nconsole.log(`${x}`);\n",
    "inline markup split across feeds": (
        "Mixing **bold with *nested italic* inside** and `code with ** stars` and "
        "__underscores__ and _single_ plus ~~strike~~, snake_case and 2*3.\n"
    ),
    "blockquote and rules": (
        "> A quote with **emphasis**\n> over two lines.\n\n---\n\n"
        "> Another quote\nlazy continuation line\n\n***\n\nDone.\n"
    ),
    "cjk and emoji": (
        "## 你好世界 🎉\n\n这是**粗体**和*斜体*，还有表情 🎉🎊👍🏽。\n\n"
        "- 项目一 🍣\n- 项目二 🍜\n\n| 列 | 值 |\n|---|---|\n| 你好 | 🎉 |\n"
    ),
    "setext headings": "Main title\n==========\n\nSubtitle\n--------\nText under it.\n",
    "a paragraph followed by a list without a blank line": (
        "Steps to follow:\n- open the file\n- edit **it**\n- save\n\nNumbers:\n1. one\n2. two\n"
    ),
    "a loose list": "- first\n\n- second\n\n- third\n\nEnd.\n",
    "a mixed reply": (
        "### Summary\n\n"
        "The function `parse()` returns a *dict*:\n\n"
        "| key | meaning |\n|---|---|\n| `id` | the **primary** key |\n| `tags` | a list |\n\n"
        "```bash\npip install -r requirements.txt\n```\n"
        "1. Install it.\n2. Run `make test`.\n\n"
        "    indented code\n\n"
        "See [the docs](https://example.com/a_b) for ~~less~~ more.\n"
    ),
}

CHUNKINGS = [1, 2, 3, 7, "tokens"]

CODE = re.compile(r"<(pre|code)\b[^>]*>.*?</\1>", re.DOTALL)
HEADER_AND_DELIMITER_ROW = re.compile(r"^\|[^\n]*\|\n\|(?:\s*:?-+:?\s*\|)+\n", re.MULTILINE)


def visible_text(fragment: str) -> str:
    """The text a reader sees outside code: tags stripped, entities unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", CODE.sub("", fragment)))


def chunks(text: str, size: int | str) -> list[str]:
    if size == "tokens":
        return re.findall(r"\s*\S+|\s+", text)
    return [text[i : i + size] for i in range(0, len(text), size)]


@functools.cache
def stream(name: str, size: int | str) -> tuple[list[tuple[str, StreamUpdate, str]], StreamingMarkdown]:
    """Feed a corpus reply; return (text so far, update, finished HTML so far) per step."""
    renderer = StreamingMarkdown()
    steps = []
    fed = ""
    for piece in chunks(CORPUS[name], size):
        fed += piece
        update = renderer.feed(piece)
        steps.append((fed, update, str(renderer.finished_html)))
    return steps, renderer


def feed_all(pieces: list[str], prefix: str = "") -> tuple[StreamingMarkdown, list[StreamUpdate]]:
    renderer = StreamingMarkdown(prefix)
    return renderer, [renderer.feed(piece) for piece in pieces]


corpus_and_chunkings = pytest.mark.parametrize(
    ("name", "size"), [(name, size) for name in CORPUS for size in CHUNKINGS], ids=lambda value: str(value)
)


# --- The corpus, at every step ------------------------------------------------


def test_the_corpus_chunks_add_up_to_each_reply():
    for name, text in CORPUS.items():
        for size in CHUNKINGS:
            assert "".join(chunks(text, size)) == text, (name, size)


@corpus_and_chunkings
def test_no_step_shows_raw_markup_outside_code(name, size):
    steps, _ = stream(name, size)
    for fed, update, finished in steps:
        text = visible_text(finished + update.open_html)
        assert "**" not in text, (fed, update.open_html)
        assert not re.search(r"\|\s*:?-{3,}", text), (fed, update.open_html)
        assert "```" not in text and "~~~" not in text, (fed, update.open_html)


@corpus_and_chunkings
def test_a_table_is_a_table_as_soon_as_its_delimiter_row_arrived(name, size):
    steps, _ = stream(name, size)
    seen_tables = 0
    for fed, update, finished in steps:
        arrived = len(HEADER_AND_DELIMITER_ROW.findall(fed))
        assert (finished + update.open_html).count("<table>") >= arrived, fed
        seen_tables = max(seen_tables, arrived)
    assert seen_tables == len(HEADER_AND_DELIMITER_ROW.findall(CORPUS[name]))


@corpus_and_chunkings
def test_finished_blocks_never_change_once_appended(name, size):
    steps, _ = stream(name, size)
    full = render_markdown(CORPUS[name])
    appended = ""
    for fed, update, finished in steps:
        appended += update.append_html
        assert finished == appended
        assert full.startswith(finished), (fed, finished)
    # Every reply of more than one block has finished blocks before the end.
    assert appended or "\n\n" not in CORPUS[name].rstrip("\n")


@corpus_and_chunkings
def test_the_final_render_is_the_full_render(name, size):
    _, renderer = stream(name, size)
    assert renderer.final() == render_markdown(CORPUS[name])
    assert isinstance(renderer.final(), SafeString)


@corpus_and_chunkings
def test_the_appended_pieces_and_the_last_open_block_add_up_to_the_full_render(name, size):
    steps, renderer = stream(name, size)
    _, last, finished = steps[-1]
    assert finished + last.open_html == render_markdown(CORPUS[name])
    assert renderer.text == CORPUS[name]


@corpus_and_chunkings
def test_every_fragment_is_sanitised_and_safe(name, size):
    steps, _ = stream(name, size)
    for _, update, _ in steps:
        assert isinstance(update.append_html, SafeString)
        assert isinstance(update.open_html, SafeString)
        assert_safe(update.append_html)
        assert_safe(update.open_html)


# --- Finished blocks ------------------------------------------------------------


def test_a_paragraph_is_finished_by_a_blank_line_without_waiting_for_the_next_block():
    renderer, updates = feed_all(["First ", "paragraph.\n", "\n"])
    assert [u.append_html for u in updates] == ["", "", "<p>First paragraph.</p>\n"]
    assert updates[1].open_html == "<p>First paragraph.</p>\n"
    assert updates[2].open_html == ""
    assert renderer.stable_offset == len("First paragraph.\n\n")


def test_a_heading_is_finished_when_its_line_ends():
    _, updates = feed_all(["## Tit", "le", "\nBody"])
    assert [u.append_html for u in updates] == ["", "", "<h2>Title</h2>\n"]
    assert updates[1].open_html == "<h2>Title</h2>\n"
    assert updates[2].open_html == "<p>Body</p>\n"


def test_a_paragraph_can_still_become_a_setext_heading():
    _, updates = feed_all(["Title\n", "=", "==\n", "next"])
    assert updates[0].append_html == "" and updates[0].open_html == "<p>Title</p>\n"
    # The underline being written is held back rather than shown as "Title =".
    assert updates[1].open_html == "<p>Title</p>\n"
    assert updates[2].append_html == "<h1>Title</h1>\n"
    assert updates[3].open_html == "<p>next</p>\n"


def test_a_list_stays_open_across_a_blank_line_while_it_may_continue():
    renderer, updates = feed_all(["1. a\n", "\n", "2", ". b\n", "\n", "After.\n"])
    # "2" could still become the list's second item (and make the list loose).
    assert all(u.append_html == "" for u in updates[:4])
    assert updates[3].open_html == render_markdown("1. a\n\n2. b\n")
    assert "<p>a</p>" in updates[3].open_html  # loose
    assert updates[5].append_html == render_markdown("1. a\n\n2. b\n\n")
    assert renderer.finished_html + renderer.open_html == render_markdown("1. a\n\n2. b\n\nAfter.\n")


def test_a_list_is_finished_once_a_block_that_cannot_continue_it_starts():
    _, updates = feed_all(["- a\n- b\n", "\n", "N", "ext"])
    assert updates[1].append_html == ""
    assert updates[2].append_html == "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"
    assert updates[3].open_html == "<p>Next</p>\n"


def test_a_paragraph_followed_by_a_list_without_a_blank_line_stays_open_with_it():
    _, updates = feed_all(["Steps:\n", "- one\n", "- two\n", "\n", "Done"])
    assert all(u.append_html == "" for u in updates[:3])
    assert updates[2].open_html == render_markdown("Steps:\n- one\n- two\n")
    assert updates[4].append_html == render_markdown("Steps:\n- one\n- two\n\n")


def test_a_feed_can_finish_several_blocks_at_once():
    _, updates = feed_all(["# A\n\npara\n\n- x\n\n> q\n\nopen"])
    assert updates[0].append_html == render_markdown("# A\n\npara\n\n- x\n\n> q\n\n")
    assert updates[0].open_html == "<p>open</p>\n"


# --- Code ---------------------------------------------------------------------------


def test_it_shows_an_unterminated_fence_as_a_code_block():
    renderer, updates = feed_all(["```python\n", "def f():\n", "    return 1"])
    for update in updates:
        assert update.append_html == ""
        assert '<div class="code-block">' in update.open_html
        assert '<span class="code-lang">python</span>' in update.open_html
        assert "```" not in update.open_html
    assert '<span class="k">return</span>' in updates[-1].open_html
    assert renderer.final() == render_markdown("```python\ndef f():\n    return 1")


def test_a_fence_opening_line_is_held_back_until_its_language_is_complete():
    _, updates = feed_all(["Code:\n\n``", "`py", "thon", "\n"])
    assert [u.open_html for u in updates[:3]] == ["", "", ""]
    assert '<span class="code-lang">python</span>' in updates[3].open_html
    assert "pyt" not in "".join(u.open_html for u in updates[:3])


def test_a_closed_fence_is_appended_when_its_closing_line_ends():
    _, updates = feed_all(["```\n<b>x</b> **y**\n", "``", "`", "\n"])
    assert [u.append_html for u in updates[:3]] == ["", "", ""]
    # The closing fence being written is not shown as code content.
    assert "``" not in re.sub(r"<[^>]+>", "", updates[1].open_html)
    assert updates[3].append_html == render_markdown("```\n<b>x</b> **y**\n```\n")
    assert "&lt;b&gt;x&lt;/b&gt; **y**" in updates[3].append_html


def test_inline_code_being_written_shows_as_code():
    _, updates = feed_all(["Run `make ", "**all**", "` now"])
    assert updates[0].open_html == "<p>Run <code>make</code></p>\n"
    assert updates[1].open_html == "<p>Run <code>make **all**</code></p>\n"
    assert updates[2].open_html == "<p>Run <code>make **all**</code> now</p>\n"


# --- Tables -------------------------------------------------------------------------


def test_a_table_grows_row_by_row_and_is_appended_once_finished():
    rows = ["| a | b |\n", "|---|---|\n", "| 1 | 2 |\n", "| 3 | 4 |\n", "\n"]
    _, updates = feed_all(rows)
    assert updates[0].open_html == ""  # a header row waits for its delimiter row
    assert updates[1].open_html.count("<tr>") == 1 and "<table>" in updates[1].open_html
    assert updates[2].open_html.count("<tr>") == 2
    assert updates[3].open_html.count("<tr>") == 3
    assert [u.append_html for u in updates[:4]] == ["", "", "", ""]
    assert updates[4].append_html == render_markdown("".join(rows)) and updates[4].open_html == ""


def test_a_header_row_and_a_delimiter_row_being_written_are_held_back():
    _, updates = feed_all(["Intro\n| a | b |", "\n|--", "-|--", "-|", "\n"])
    for update in updates[:4]:
        assert update.open_html == "<p>Intro</p>\n"
        assert "|" not in visible_text(update.open_html)
    assert "<table>" in updates[4].open_html and "<th>a</th>" in updates[4].open_html


def test_a_cell_being_written_hides_its_unclosed_markers():
    _, updates = feed_all(["| a | b |\n|---|---|\n| **x", "** | `y", "` |"])
    assert "<td><strong>" not in updates[0].open_html
    assert "**" not in visible_text(updates[0].open_html)
    assert "<td>x</td>" in updates[0].open_html
    assert "<td><strong>x</strong></td>" in updates[1].open_html
    assert "<td><code>y</code></td>" in updates[2].open_html


# --- Inline markers -------------------------------------------------------------------


def test_bold_split_across_feeds_is_plain_text_until_it_closes():
    _, updates = feed_all(["Some *", "*bo", "ld*", "*", " after"])
    assert [u.open_html for u in updates] == [
        "<p>Some</p>\n",
        "<p>Some bo</p>\n",
        "<p>Some bold</p>\n",  # half a closer: neither "*" nor italics
        "<p>Some <strong>bold</strong></p>\n",
        "<p>Some <strong>bold</strong> after</p>\n",
    ]


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["an *ital", "ic* word"], ["<p>an ital</p>\n", "<p>an <em>italic</em> word</p>\n"]),
        (["an _ital", "ic_ word"], ["<p>an ital</p>\n", "<p>an <em>italic</em> word</p>\n"]),
        (["a __strong", "__ word"], ["<p>a strong</p>\n", "<p>a <strong>strong</strong> word</p>\n"]),
        (["a ~~gone", "~", "~ word"], ["<p>a gone</p>\n", "<p>a gone</p>\n", "<p>a <s>gone</s> word</p>\n"]),
        (["***both", "**", "* x"], ["<p>both</p>\n", "<p>both</p>\n", "<p><em><strong>both</strong></em> x</p>\n"]),
        (
            ["snake_ca", "se and 2*", "3"],
            ["<p>snake_ca</p>\n", "<p>snake_case and 2</p>\n", "<p>snake_case and 2*3</p>\n"],
        ),
    ],
    ids=["italic", "underscore", "double-underscore", "strikethrough", "bold-italic", "literal-intraword"],
)
def test_other_inline_markers_are_plain_text_until_they_close(pieces, expected):
    _, updates = feed_all(pieces)
    assert [u.open_html for u in updates] == expected


def test_a_link_being_written_shows_only_its_text():
    _, updates = feed_all(["See [the", " docs]", "(https://exa", "mple.com/a_b*c*)", " now"])
    assert [u.open_html for u in updates[:3]] == ["<p>See the</p>\n", "<p>See the docs</p>\n", "<p>See the docs</p>\n"]
    link = '<a href="https://example.com/a_b*c*" rel="noopener noreferrer nofollow">the docs</a>'
    assert updates[3].open_html == f"<p>See {link}</p>\n"
    assert updates[4].open_html == f"<p>See {link} now</p>\n"


def test_markers_in_a_finished_paragraph_are_left_as_the_full_render_has_them():
    _, updates = feed_all(["Price: 5 ** 2\n", "\n"])
    # Meant literally: while open it is hidden, once finished it is exactly the full render.
    assert "**" not in updates[0].open_html
    assert updates[1].append_html == render_markdown("Price: 5 ** 2\n\n") == "<p>Price: 5 ** 2</p>\n"


# --- Text ------------------------------------------------------------------------------


def test_cjk_and_emoji_split_across_feeds_render_correctly():
    text = "你好世界 🎉 **粗体** 👍🏽\n"
    shown = "你好世界 🎉 粗体 👍🏽"
    renderer = StreamingMarkdown()
    for char in text:  # one code point at a time: 👍 and its skin tone arrive apart
        update = renderer.feed(char)
        assert "\ufffd" not in update.open_html
        assert shown.startswith(visible_text(update.open_html).strip())
    assert update.open_html == "<p>你好世界 🎉 <strong>粗体</strong> 👍🏽</p>\n"
    assert renderer.final() == render_markdown(text)
    for size in (2, 3):  # and mid-word
        renderer, _ = feed_all(chunks("中文句子**加粗**结束。\n\n", size))
        assert renderer.finished_html == "<p>中文句子<strong>加粗</strong>结束。</p>\n"


def test_a_crlf_split_across_feeds_is_one_line_break():
    raw = "# Title\r", "\nPara one\r\n\r", "\nPara two\r"
    renderer, updates = feed_all(list(raw))
    assert updates[0].append_html == ""  # the "\r" may still be half of "\r\n"
    assert updates[1].append_html == "<h1>Title</h1>\n"
    assert updates[2].append_html == "<p>Para one</p>\n"
    assert renderer.final() == render_markdown("".join(raw)) == render_markdown("# Title\nPara one\n\nPara two\n")
    assert renderer.text == "# Title\nPara one\n\nPara two\n"


def test_a_prefix_comes_out_with_the_first_feed_and_is_part_of_the_final_render():
    renderer = StreamingMarkdown("# Earlier\n\nAlready said.\n\nHalf a sen")
    update = renderer.feed("tence.")
    assert update.append_html == "<h1>Earlier</h1>\n<p>Already said.</p>\n"
    assert update.open_html == "<p>Half a sentence.</p>\n"
    assert renderer.final() == render_markdown("# Earlier\n\nAlready said.\n\nHalf a sentence.")


def test_changed_says_whether_the_client_has_anything_to_do():
    _, updates = feed_all(["a ", "*", "*", "b", "\n", "\n", ""])
    assert [u.changed for u in updates] == [True, False, False, True, False, True, False]
    assert updates[0].open_html == updates[1].open_html == "<p>a</p>\n"


def test_reference_links_are_plain_text_until_the_final_render():
    # Documented: a definition later in the reply cannot change a finished block.
    text = "See [the docs][d].\n\n[d]: https://example.com/\n"
    renderer, updates = feed_all(chunks(text, 3))
    appended = "".join(u.append_html for u in updates)
    assert "<p>See [the docs][d].</p>" in appended
    assert '<a href="https://example.com/"' in renderer.final()
    assert renderer.final() == render_markdown(text)


# --- Untrusted input -------------------------------------------------------------------


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_an_xss_payload_split_anywhere_never_comes_out_unsanitised(payload):
    for cut in range(1, len(payload)):
        _, updates = feed_all([payload[:cut], payload[cut:], "\n\n"])
        for update in updates:
            assert_safe(update.append_html)
            assert_safe(update.open_html)
            assert "<script" not in update.append_html + update.open_html
            assert "<img" not in update.append_html + update.open_html


@pytest.mark.parametrize(
    "pieces",
    [
        ["<scr", "ipt>alert(1)</scr", "ipt>"],
        ["[x](java", "script:alert(1))"],
        ["[x](java**", "script:alert(1))"],
        ["<java**script:alert(1)>"],
        ["<div onclick=", '"alert(1)">\n', "<b>raw</b>\n", "</div>\n"],
        ["| <img src=x onerror=", "alert(1)> |\n|---|\n| [x](javas", "cript:alert(1)) |\n"],
    ],
    ids=["script-tag", "javascript-link", "markers-inside-scheme", "autolink-after-markers", "html-block", "table"],
)
def test_split_html_and_script_links_are_escaped_text_at_every_step(pieces):
    renderer, updates = feed_all(pieces)
    for update in updates:
        out = update.append_html + update.open_html
        assert_safe(out)
        assert "<script" not in out and "<img" not in out and "<div onclick" not in out
        assert "javascript:" not in "".join(re.findall(r'href="([^"]*)"', out)).lower()
    assert renderer.final() == render_markdown("".join(pieces))
    assert_safe(renderer.final())


# --- Cost ------------------------------------------------------------------------------


def test_a_feed_only_parses_and_renders_the_open_tail(monkeypatch):
    rendered: list[int] = []
    parsed: list[int] = []
    monkeypatch.setattr(
        streaming_markdown, "render_markdown", lambda text: rendered.append(len(text)) or render_markdown(text)
    )
    monkeypatch.setattr(streaming_markdown, "parse_blocks", lambda text: parsed.append(len(text)) or parse_blocks(text))
    block = "A paragraph of about sixty characters with **bold** in it.\n\n"
    text = "".join(f"## Part {n}\n\n{block}| a | b |\n|---|---|\n| {n} | x |\n\n" for n in range(40))
    renderer = StreamingMarkdown()
    for piece in chunks(text, 3):
        renderer.feed(piece)
    longest_block = max(len(block), len("| a | b |\n|---|---|\n| 39 | x |\n\n")) + 3
    assert len(text) > 50 * longest_block
    assert max(rendered) <= longest_block
    assert max(parsed) <= longest_block
    assert renderer.stable_offset == len(text)
    assert renderer.final() == render_markdown(text)


def test_parse_blocks_gives_block_tokens_with_line_maps_and_no_inline_children():
    tokens = parse_blocks("# T\r\n\r\n- **a**\n")
    top = [(t.type, t.map) for t in tokens if t.level == 0 and t.nesting >= 0]
    assert top == [("heading_open", [0, 1]), ("bullet_list_open", [2, 3])]
    inline = [t for t in tokens if t.type == "inline"]
    assert [t.content for t in inline] == ["T", "**a**"]
    assert all(not t.children for t in inline)


BLOCKS = [
    "# Head", "Title\n=====", "Sub\n---", "Para *it*", "text | pipe", "- a\n- b", "- a\n\n  more",
    "1. x\n2. y", "2) q", "* s\n  * t", "> q\nlazy", "> - quoted", "- > listed", "```py\nx = 1\n```",
    "| a | b |\n|---|---|\n| 1 | 2 |", "~~~\ncode", "- ```\n  code\n  ```", "    code", "\tcode",
    "---", "***", "-", "1.", "[r]: https://x.example",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_finished_blocks_never_change_for_random_block_sequences(seed):
    rng = random.Random(seed)
    finished_some = 0
    for _ in range(6):
        text = "".join(rng.choice(BLOCKS) + rng.choice(["\n", "\n\n", "\n  \n", "\n\n\n"]) for _ in range(6))
        full = render_markdown(text)
        renderer = StreamingMarkdown()
        for char in text:
            renderer.feed(char)
            assert full.startswith(renderer.finished_html), (text, renderer.text)
        assert renderer.final() == full
        finished_some += renderer.stable_offset > 0
    assert finished_some  # (an early open "~~~" fence or a list can keep a whole reply open)


# --- Plain prose: the fast path ---------------------------------------------------------

PLAIN_WORDS = ["Hello", "world", "你好", "世界", "👋🏽", "it's", '"quoted"', "(yes)", "a.b", "50%", "ok!", "$5", "#"]


@pytest.mark.parametrize("seed", range(6))
def test_plain_prose_extends_the_open_paragraph_by_exactly_each_delta(seed):
    rng = random.Random(seed)
    pieces = ["Well,"] + [" " + rng.choice(PLAIN_WORDS) for _ in range(40)]
    renderer = StreamingMarkdown()
    renderer.feed(pieces[0])
    for piece in pieces[1:]:
        update = renderer.feed(piece)
        assert renderer.plain
        assert update.extend == piece
        assert update.append_html == ""
        # The fast path shows exactly what the full render of the open tail shows.
        assert update.open_html == render_markdown(renderer.open_text)
    assert renderer.open_text == "".join(pieces)
    assert renderer.final() == render_markdown("".join(pieces))


@pytest.mark.parametrize("markup", ["**", "`", "_", "~~", "[", "<b>", "&amp;", "|", "\\", "\t"])
def test_markup_in_a_delta_leaves_the_fast_path_and_renders_as_markdown(markup):
    renderer, updates = feed_all(["Some", " prose", f" {markup}x"])
    assert updates[1].extend == " prose"
    assert updates[2].extend == ""
    assert not renderer.plain
    assert renderer.final() == render_markdown(f"Some prose {markup}x")


def test_a_newline_ends_the_fast_path_since_the_next_line_may_make_a_heading_or_a_table():
    renderer, updates = feed_all(["Title", " here", "\n", "====="])
    assert updates[1].extend == " here"
    assert [u.extend for u in updates[2:]] == ["", ""]
    renderer.feed("\n")
    assert renderer.finished_html == "<h1>Title here</h1>\n"


@pytest.mark.parametrize("start", ["1. item", "# head", "- item", "> quote", "    code", "+ item", "= x", ": x"])
def test_a_line_that_may_begin_a_block_never_takes_the_fast_path(start):
    renderer, updates = feed_all([start, " more"])
    assert [u.extend for u in updates] == ["", ""]
    assert not renderer.plain
    assert updates[-1].open_html == render_markdown(start + " more")


def test_a_pending_carriage_return_keeps_the_line_open_until_its_newline_arrives():
    renderer, updates = feed_all(["Para one\r", "\n\r", "\nPara", " two"])
    assert updates[0].extend == ""
    assert updates[2].append_html == "<p>Para one</p>\n"
    assert updates[3].extend == " two"
    assert renderer.final() == render_markdown("Para one\n\nPara two")


def test_the_fast_path_resumes_after_a_finished_block():
    renderer, updates = feed_all(["## Head\n", "\n", "Then", " prose", " **bold**", " after"])
    assert updates[0].append_html == "<h2>Head</h2>\n"
    assert renderer.open_text == "Then prose **bold** after"  # the blank line is not shown
    assert updates[3].extend == " prose"
    assert updates[4].extend == updates[5].extend == ""  # the tail has markup now
    assert updates[5].open_html == "<p>Then prose <strong>bold</strong> after</p>\n"
