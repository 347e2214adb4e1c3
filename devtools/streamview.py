"""What a tab shows of a streaming reply, from the frames it received:
shared by the tests and the benchmarks that check a joiner sees the whole reply."""

import html
import re

# The parts of a stream frame (conversations/frames.py, _frame.html), in the order they apply.
PART = re.compile(
    r'<section hx-swap-oob="beforeend:#msg-[0-9a-f-]+-done">(?P<append>.*?)</section>'
    r'|<section hx-swap-oob="innerHTML:#msg-[0-9a-f-]+-open">(?P<open>.*?)</section>'
    r'|<span hx-swap-oob="beforeend:#msg-[0-9a-f-]+-tail">(?P<tail>.*?)</span>',
    re.S,
)
OPEN_PART = re.compile(r'<div class="stream-open" id="msg-[0-9a-f-]+-open">')
DONE_PART = re.compile(r'<div class="stream-done" id="msg-[0-9a-f-]+-done">')
TAG = re.compile(r"<[^>]+>")
SNAPSHOT = re.compile(r'<article class="msg msg-assistant status-streaming"[^>]*hx-swap-oob="outerHTML"')


def text_of(fragment: str) -> str:
    """The text an HTML fragment shows (tags dropped, entities decoded)."""
    return html.unescape(TAG.sub("", fragment)).strip()


class StreamView:
    """What a tab shows of a streaming reply: the finished part and the open
    tail of a snapshot's bubble (or an empty bubble), with frames applied as
    htmx applies them."""

    def __init__(self, snapshot: str = ""):
        self.done = self.open = ""
        if snapshot:
            done_at, open_at = DONE_PART.search(snapshot), OPEN_PART.search(snapshot)
            self.done = snapshot[done_at.end() : open_at.start()].removesuffix("</div>")
            end = snapshot.index('<span class="typing"')
            waiting = snapshot.find('<p class="msg-waiting"', open_at.end(), end)  # not the reply's text
            chunk = snapshot[open_at.end() : waiting if waiting >= 0 else end].rstrip()
            assert chunk.endswith("</div></div>"), chunk
            self.open = chunk.removesuffix("</div></div>")

    def apply(self, frames: list[str]) -> "StreamView":
        for frame in frames:
            for part in PART.finditer(frame):
                if part["append"] is not None:
                    self.done += part["append"]
                elif part["open"] is not None:
                    self.open = part["open"]
                else:
                    paragraph = self.open.rstrip()
                    assert paragraph.endswith("</p>"), f"text appended to a tail that is not a paragraph: {paragraph}"
                    self.open = paragraph.removesuffix("</p>") + part["tail"] + "</p>"
        return self

    @classmethod
    def replay(cls, frames: list[str]) -> "StreamView":
        """What a tab shows of a streaming reply after ``frames``: a streaming
        bubble (a snapshot, sent again after lost frames) replaces what it
        showed, a frame applies to it, anything else is left alone."""
        view = cls()
        for frame in frames:
            if is_snapshot(frame):
                view = cls(frame)
            elif has_delta(frame):
                view.apply([frame])
        return view

    @property
    def html(self) -> str:
        return self.done + self.open

    def text(self) -> str:
        return text_of(self.html)


def is_snapshot(frame: str) -> bool:
    """Whether a frame replaces a streaming reply's whole bubble (a joiner's
    snapshot, or one sent again after lost frames)."""
    return SNAPSHOT.search(frame) is not None


def has_delta(frame: str) -> bool:
    """Whether a frame carries any part of a streaming reply's text."""
    return PART.search(frame) is not None
