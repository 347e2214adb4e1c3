"""Servers that bend the wire formats, through both real SDKs over HTTP against
the fake provider: a "stream" that is one JSON body, unnamed events, a foreign
or cut stream, no finish reason, tool calls, no usage, late input tokens, and
endpoints that read only one auth header."""

import http.client
import json
import logging

import pytest

from conversations.providers import anthropic as anthropic_provider
from conversations.providers.base import ErrorKind, Finish, FinishReason, TextDelta, Usage
from devtools.fakeprovider import FakeProvider, count_words, expected_text
from tests import fakes
from tests.fakes import ANTHROPIC_KEY, TOKENS, chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake

PROVIDERS = ["openai", "anthropic"]
NATURAL_END = {"openai": "stop", "anthropic": "end_turn"}
TOOL_USE = {"openai": "tool_calls", "anthropic": "tool_use"}


def text_of(events) -> str:
    return "".join(e.text for e in of_type(events, TextDelta))


def raw_post(server, provider: str, model: str) -> tuple[str, bytes]:
    """(content type, body) of one streaming request, as the SDK would receive it."""
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", "x-api-key": "k"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.getheader("content-type"), raw


# --- 1. a "stream" that is not a stream ------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_json_reply_scenario_answers_a_streaming_request_with_one_json_body(fake_server, provider):
    content_type, raw = raw_post(fake_server, provider, "fake-json-reply")

    assert content_type == "application/json"
    whole = json.loads(raw)
    assert (whole.get("object"), whole.get("type")) == (
        ("chat.completion", None) if provider == "openai" else (None, "message")
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_json_body_answering_a_streaming_request_is_read_as_the_whole_reply(fake, provider):
    events, error = await run(chat(provider, "fake-json-reply"))

    assert error is None
    request = fake.requests[-1].json
    assert request["stream"] is True
    assert text_of(events) == expected_text("fake-json-reply")
    assert events[-2:] == [Usage(count_words(request), TOKENS), Finish(FinishReason.STOP, NATURAL_END[provider])]


def test_the_unnamed_events_scenario_sends_anthropic_events_without_event_lines(fake_server):
    _, raw = raw_post(fake_server, "anthropic", "fake-unnamed-events")

    lines = raw.decode().splitlines()
    assert not [line for line in lines if line.startswith("event:")]
    types = [json.loads(line[len("data: ") :])["type"] for line in lines if line.startswith("data: ")]
    assert types[0] == "message_start" and types[-1] == "message_stop"


async def test_unnamed_anthropic_events_are_named_by_their_json_type(fake):
    events, error = await run(chat("anthropic", "fake-unnamed-events"))

    assert error is None
    assert text_of(events) == expected_text("fake-unnamed-events")
    assert events[-2:] == [Usage(count_words(fake.requests[-1].json), TOKENS), Finish(FinishReason.STOP, "end_turn")]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_with_nothing_of_the_wire_format_is_a_server_error_not_an_empty_reply(fake, provider):
    events, error = await run(chat(provider, "fake-foreign-stream"))

    assert error is not None and error.kind is ErrorKind.SERVER and error.retryable
    assert not of_type(events, Finish) and text_of(events) == ""


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_cut_cleanly_before_its_finish_is_a_connection_error_after_its_text(fake, provider):
    events, error = await run(chat(provider, "fake-truncated"))

    assert error is not None and error.kind is ErrorKind.CONNECTION and error.retryable
    assert text_of(events) == expected_text("fake-truncated")
    assert 0 < len(expected_text("fake-truncated")) < len(expected_text("fake-normal"))
    assert not of_type(events, Finish)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_that_gave_its_finish_reason_but_no_terminator_is_whole(fake, provider):
    events, error = await run(chat(provider, "fake-no-terminator"))

    assert error is None
    assert text_of(events) == expected_text("fake-no-terminator")
    assert events[-1] == Finish(FinishReason.STOP, NATURAL_END[provider])


# --- 2. Anthropic input tokens that arrive late ------------------------------------


async def test_anthropic_input_tokens_sent_as_zero_first_are_taken_from_message_delta(fake):
    events, error = await run(chat("anthropic", "fake-late-input-tokens"))

    assert error is None
    assert of_type(events, Usage) == [Usage(count_words(fake.requests[-1].json), TOKENS)]
    assert count_words(fake.requests[-1].json) > 0


async def test_anthropic_input_tokens_stay_those_of_message_start_when_message_delta_has_none(fake):
    events, _ = await run(chat("anthropic", "fake-normal", ("Four words right here",)))

    assert of_type(events, Usage) == [Usage(4, TOKENS)]


# --- 3. tool calls and no finish reason ----------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_tool_call_only_reply_has_no_text_and_finishes_with_tool_calls(fake, provider, streaming):
    events, error = await run(chat(provider, "fake-tool-call", streaming=streaming))

    assert error is None
    assert text_of(events) == ""
    assert events[-1] == Finish(FinishReason.TOOL_CALLS, TOOL_USE[provider])


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_without_any_finish_reason_ends_normally(fake, provider, streaming):
    events, error = await run(chat(provider, "fake-no-finish", streaming=streaming))

    assert error is None
    assert text_of(events) == expected_text("fake-no-finish")
    assert events[-1] == Finish(FinishReason.STOP, None)


# --- 4. endpoints that read only one auth header ---------------------------------


async def test_the_anthropic_key_goes_out_as_both_x_api_key_and_a_bearer_token(fake):
    await run(chat("anthropic", "fake-normal"))

    headers = fake.requests[-1].headers
    assert headers["x-api-key"] == ANTHROPIC_KEY
    assert headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_an_anthropic_compatible_endpoint_that_reads_one_header_accepts_the_key(fake, monkeypatch, header):
    with FakeProvider(api_key=ANTHROPIC_KEY, key_header=header, delay=0) as strict:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", strict.anthropic_base_url)
        events, error = await run(chat("anthropic", "fake-normal"))
        await anthropic_provider.clients.aclose()  # its pooled connection, before the server stops

    assert error is None
    assert text_of(events) == expected_text("fake-normal")


def test_a_server_reading_only_x_api_key_refuses_a_bearer_token_alone():
    # What the SDK's own headers would get from such an endpoint: the reason for sending both.
    with FakeProvider(api_key="k", key_header="x-api-key") as strict:
        body = json.dumps({"model": "fake-normal", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
        conn = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=5)
        conn.request("POST", "/v1/messages", body, {"content-type": "application/json", "authorization": "Bearer k"})
        status = conn.getresponse().status
        conn.close()

    assert status == 401


async def test_the_anthropic_key_is_never_logged_even_with_the_sdks_at_debug(fake, caplog):
    # Settings keep the SDK loggers at WARNING; even opened up, the headers stay out.
    with caplog.at_level(logging.DEBUG, logger="anthropic"), caplog.at_level(logging.DEBUG, logger="httpx2"):
        events, error = await run(chat("anthropic", "fake-normal"))
        await run(chat("anthropic", "fake-truncated"))

    assert error is None and events
    assert any(record.name.startswith("anthropic") for record in caplog.records)
    assert ANTHROPIC_KEY not in caplog.text


# --- 5. servers that report no usage ---------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_without_usage_yields_no_usage_rather_than_zeros(fake, provider, streaming):
    events, error = await run(chat(provider, "fake-no-usage", streaming=streaming))

    assert error is None
    assert text_of(events) == expected_text("fake-no-usage")
    assert of_type(events, Usage) == []
    assert events[-1] == Finish(FinishReason.STOP, NATURAL_END[provider])
    if provider == "openai" and streaming:
        assert fake.requests[-1].json["stream_options"] == {"include_usage": True}  # asked, and ignored


def test_the_no_usage_scenario_sends_no_usage_anywhere(fake_server):
    for provider in PROVIDERS:
        _, raw = raw_post(fake_server, provider, "fake-no-usage")
        assert b'"usage"' not in raw
