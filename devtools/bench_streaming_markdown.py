"""Micro-benchmark: StreamingMarkdown.feed against re-rendering the whole reply.

Builds a reply of about 2,000 LLM-like tokens (words with their leading space,
numbers, punctuation, newlines) made of headings, paragraphs, lists, tables
and fenced code, feeds it 2 and 3 tokens at a time, and times, at the same
feed points:

- ``feed``: StreamingMarkdown.feed(delta);
- ``whole``: render_markdown(all text so far), i.e. re-rendering the reply
  on every feed.

Run from the repository root (no Django settings or database needed):

    .venv/bin/python -m devtools.bench_streaming_markdown [--tokens 2000] [--repeat 5]

Not a test: timings depend on the machine; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time

from conversations.markdown import render_markdown
from conversations.streaming_markdown import StreamingMarkdown

TOKEN = re.compile(r"[ \t]*[A-Za-z]+|[ \t]*\d{1,3}|[ \t]*[^\sA-Za-z\d]|\n|[ \t]+")

SECTION = """\
## Step {n}: configure the **{name}** service

The `{name}` service reads its settings from the environment. Set *each* of
them before you start it, or the defaults below apply.

- `{upper}_HOST`: the host name, default `localhost`
- `{upper}_PORT`: the port, default `{port}`
  - use a port above 1024 when running without root
  - check that nothing else listens there
- `{upper}_DEBUG`: `1` to log every request

| Setting | Default | Required |
|:--------|--------:|:--------:|
| host | localhost | no |
| port | {port} | no |
| token | (none) | **yes** |

```python
import os

def {name}_config() -> dict[str, str]:
    return {{"host": os.environ.get("{upper}_HOST", "localhost"), "port": "{port}"}}
```

> Restart the service after changing a setting; it reads them once.

"""

NAMES = ["cache", "queue", "search", "mailer", "storage", "auth", "metrics", "billing"]


def build_reply(tokens: int) -> list[str]:
    text = ""
    for n in itertools.count(1):
        name = NAMES[n % len(NAMES)]
        text += SECTION.format(n=n, name=name, upper=name.upper(), port=8000 + n)
        pieces = TOKEN.findall(text)
        if len(pieces) >= tokens:
            assert "".join(pieces) == text
            return pieces[:tokens]
    raise AssertionError("unreachable")


def deltas(pieces: list[str]) -> list[str]:
    """Group tokens 2 and 3 at a time, alternately."""
    out, index = [], 0
    for size in itertools.cycle((2, 3)):
        if index >= len(pieces):
            return out
        out.append("".join(pieces[index : index + size]))
        index += size
    raise AssertionError("unreachable")


def time_feed(chunks: list[str]) -> tuple[float, StreamingMarkdown]:
    renderer = StreamingMarkdown()
    start = time.perf_counter()
    for chunk in chunks:
        renderer.feed(chunk)
    return time.perf_counter() - start, renderer


def time_whole(chunks: list[str]) -> float:
    text = ""
    start = time.perf_counter()
    for chunk in chunks:
        text += chunk
        render_markdown(text)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    pieces = build_reply(args.tokens)
    chunks = deltas(pieces)
    text = "".join(chunks)
    feed_times, whole_times = [], []
    for _ in range(args.repeat):
        elapsed, renderer = time_feed(chunks)
        feed_times.append(elapsed)
        whole_times.append(time_whole(chunks))
    assert renderer.final() == render_markdown(text)
    start = time.perf_counter()
    for _ in range(20):
        render_markdown(text)
    one_full = (time.perf_counter() - start) / 20

    feed, whole = min(feed_times), min(whole_times)
    tokens, feeds = len(pieces), len(chunks)
    print(f"reply: {tokens} tokens, {len(text)} characters, {feeds} feeds of 2-3 tokens (best of {args.repeat})")
    for label, total in (("feed: ", feed), ("whole:", whole)):
        per_feed, per_token = total / feeds * 1e6, total / tokens * 1e6
        print(f"{label} {total * 1e3:8.1f} ms total, {per_feed:7.1f} us/feed, {per_token:7.1f} us/token")
    print(f"ratio: whole / feed = {whole / feed:.1f}x")
    print(f"one render_markdown of the finished reply: {one_full * 1e3:.2f} ms")
    print(f"HTML at the end: {len(renderer.finished_html)} characters finished, {len(renderer.open_html)} open")


if __name__ == "__main__":
    main()
