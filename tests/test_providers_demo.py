"""The offline demo provider."""

import asyncio
import dataclasses

import pytest
from channels.db import database_sync_to_async

from conversations import actions
from conversations.models import Message
from conversations.providers import get_provider
from conversations.providers.base import ChatMessage, Finish, FinishReason, TextDelta, Usage
from conversations.providers.demo import QUOTE_LIMIT, reply_text, tokens
from tests.fakes import chat, of_type, run


@pytest.fixture(autouse=True)
def no_delay(settings):
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 0


def demo(*messages, **kwargs):
    return chat("demo", "demo", messages or ("Hello there",), **kwargs)


def test_the_reply_quotes_the_message_and_has_a_table_code_and_chinese():
    text = reply_text("What is *markdown*?")

    first_paragraph = text.split("\n\n")[0]
    assert "What is *markdown*?" in first_paragraph
    assert "| Feature | Demo |\n|---|---|\n" in text
    assert "```python\n" in text and text.rstrip().count("```") == 2
    assert "你好" in text


def test_a_multi_line_message_is_quoted_on_one_line_and_shortened():
    long_message = "line one\n\n# not a heading\n" + "x" * (QUOTE_LIMIT * 2)

    first_paragraph = reply_text(long_message).split("\n\n")[0]

    assert "line one # not a heading" in first_paragraph
    assert "x" * (QUOTE_LIMIT * 2) not in first_paragraph
    assert "…" in first_paragraph


def test_tokens_keep_their_whitespace_and_join_back_exactly():
    text = reply_text("hi")

    pieces = tokens(text)

    assert "".join(pieces) == text
    assert len(pieces) > 40
    assert all(piece.strip() for piece in pieces)


async def test_it_streams_the_reply_token_by_token_then_usage_and_stop():
    events, error = await run(demo("Earlier", ChatMessage("assistant", "Sure thing"), "Show me a table"))

    deltas = of_type(events, TextDelta)
    assert error is None
    assert "".join(d.text for d in deltas) == reply_text("Show me a table")
    assert len(deltas) == len(tokens(reply_text("Show me a table")))
    assert events[-2:] == [Usage(1 + 2 + 4, len(deltas)), Finish(FinishReason.STOP, "stop")]


async def test_it_honours_max_tokens():
    events, _ = await run(demo(max_tokens=5))

    assert len(of_type(events, TextDelta)) == 5
    assert events[-2:] == [Usage(2, 5), Finish(FinishReason.LENGTH, "length")]


async def test_it_paces_tokens_by_the_demo_delay_setting(settings):
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 20
    loop = asyncio.get_running_loop()

    start = loop.time()
    await run(demo(max_tokens=6))

    assert loop.time() - start >= 5 * 0.02


async def test_cancelling_it_stops_the_stream(settings):
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 1000
    first_delta = asyncio.Event()
    received = []

    async def consume():
        async for event in get_provider("demo").events(demo()):
            received.append(event)
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(received) == 1


async def test_a_non_streaming_call_returns_the_whole_reply_at_once():
    request = demo()

    events = await get_provider("demo").complete(request)

    assert events[0] == TextDelta(reply_text("Hello there"))
    assert events[-1] == Finish(FinishReason.STOP, "stop")


def continuing(*messages):
    return dataclasses.replace(demo(*messages), extra={"continuation": True})


async def test_continuing_a_cut_reply_sends_only_the_rest_of_it():
    whole = reply_text("Hello there")
    cut = "".join(tokens(whole)[:9])  # ends mid-sentence, as a stopped reply does

    events, error = await run(continuing("Hello there", ChatMessage("assistant", cut)))

    rest = "".join(d.text for d in of_type(events, TextDelta))
    assert error is None
    assert cut + rest == whole
    assert rest.count("You wrote") == 0


async def test_continuing_words_it_did_not_write_ends_them_with_a_closing_line():
    events, _ = await run(continuing("Hello there", ChatMessage("assistant", "Another model began")))

    rest = "".join(d.text for d in of_type(events, TextDelta))
    assert rest == "\n\nThat is all the offline demo model has to add."


async def _finished(conversation_id, running) -> Message:
    await asyncio.wait_for(running.done.wait(), 10)
    return await Message.objects.aget(pk=running.message.id)


@pytest.mark.django_db(transaction=True)
async def test_continue_after_max_tokens_makes_the_reply_whole(alice, conversation):
    conversation.max_tokens = 7
    await conversation.asave(update_fields=["max_tokens"])
    cut = await _finished(conversation.id, await actions.start_reply(conversation.id, alice, "Go on"))
    assert cut.finish_reason == "length" and cut.content == "".join(tokens(reply_text("Go on"))[:7])

    conversation.max_tokens = None
    await conversation.asave(update_fields=["max_tokens"])
    continued = await _finished(conversation.id, await actions.continue_reply(conversation.id, alice, cut.id))

    assert continued.id == cut.id
    assert continued.content == reply_text("Go on")
    assert await database_sync_to_async(conversation.messages.count)() == 2
