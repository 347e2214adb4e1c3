"""The OpenAI provider, through the real openai SDK over HTTP against the fake provider."""

import asyncio
from dataclasses import replace

import pytest

from conversations.providers import get_provider
from conversations.providers.base import (
    ChatMessage,
    ErrorKind,
    Finish,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from devtools.fakeprovider import (
    BASE_TOKENS,
    OPENAI_ERRORS,
    FakeProvider,
    count_words,
    expected_reasoning,
    expected_text,
)
from tests import fakes
from tests.fakes import OPENAI_KEY, TOKENS, assert_no_secret, chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake


def openai(model, *args, **kwargs):
    return chat("openai", model, *args, **kwargs)


async def test_it_streams_text_deltas_in_order(fake):
    events, error = await run(openai("fake-normal"))

    assert error is None
    assert [e.text for e in of_type(events, TextDelta)] == list(BASE_TOKENS)
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-normal")


async def test_it_ends_with_usage_then_one_stop_finish(fake):
    events, _ = await run(openai("fake-normal", ("Hello there", ChatMessage("assistant", "Hi"), "How are you")))

    body = fake.requests[-1].json
    assert events[-2:] == [Usage(count_words(body), TOKENS), Finish(FinishReason.STOP, "stop")]
    assert len(of_type(events, Finish)) == 1


async def test_it_asks_for_a_stream_with_usage(fake):
    await run(openai("fake-normal"))

    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_it_sends_the_system_prompt_as_the_first_message(fake):
    await run(openai("fake-normal", ("Question",), system="Be brief."))

    assert fake.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Question"},
    ]


async def test_it_sends_no_system_message_when_the_prompt_is_empty(fake):
    await run(openai("fake-normal", ("Question",), system="  "))

    assert [m["role"] for m in fake.requests[-1].json["messages"]] == ["user"]


async def test_it_sends_history_as_plain_text_and_drops_empty_replies(fake):
    history = (
        "First question",
        ChatMessage("assistant", "An answer another model reasoned about"),
        "Second question",
        ChatMessage("assistant", ""),  # an errored reply with no text
        "Third question",
    )
    await run(openai("fake-normal", history))

    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "An answer another model reasoned about"},
        {"role": "user", "content": "Second question"},
        {"role": "user", "content": "Third question"},
    ]


async def test_it_sends_max_tokens_and_temperature_only_when_set(fake):
    await run(openai("fake-normal"))
    await run(openai("fake-normal", temperature=0.2, max_tokens=50))
    await run(openai("fake-normal", temperature=0.0))

    unset, both, zero_temperature = (r.json for r in fake.requests)
    assert "max_tokens" not in unset and "temperature" not in unset
    assert (both["max_tokens"], both["temperature"]) == (50, 0.2)
    assert "max_completion_tokens" not in both
    assert zero_temperature["temperature"] == 0.0


async def test_the_requests_max_tokens_beats_the_models_default(fake):
    request = openai("fake-normal")
    with_default = replace(request, model=replace(request.model, max_tokens=30))
    await run(with_default)
    await run(replace(with_default, max_tokens=10))

    assert [r.json["max_tokens"] for r in fake.requests] == [30, 10]


@pytest.mark.parametrize("model", ["fake-slow-first@first_delay=0.05", "fake-long@delay=0", "fake-normal@tokens=1"])
async def test_every_text_scenario_streams_exactly_its_text(fake, model):
    events, error = await run(openai(model))

    assert error is None
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text(model)
    assert events[-1] == Finish(FinishReason.STOP, "stop")


async def test_timestamped_tokens_arrive_one_delta_each(fake):
    events, _ = await run(openai("fake-timestamped@tokens=5"))

    stamps = [int(e.text[1:-1]) for e in of_type(events, TextDelta)]
    assert len(stamps) == 5 and stamps == sorted(stamps)


@pytest.mark.parametrize(
    ("model", "max_tokens", "reason", "raw"),
    [
        ("fake-length", None, FinishReason.LENGTH, "length"),
        ("fake-normal", 5, FinishReason.LENGTH, "length"),
        ("fake-refusal", None, FinishReason.CONTENT_FILTER, "content_filter"),
    ],
)
async def test_it_maps_finish_reasons(fake, model, max_tokens, reason, raw):
    events, error = await run(openai(model, max_tokens=max_tokens))

    assert error is None
    assert events[-1] == Finish(reason, raw)
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text(model, max_tokens=max_tokens)


async def test_it_turns_reasoning_content_into_reasoning_deltas_before_the_text(fake):
    events, _ = await run(openai("fake-reasoning"))

    kinds = [type(e) for e in events if isinstance(e, TextDelta | ReasoningDelta)]
    first_text = kinds.index(TextDelta)
    assert set(kinds[:first_text]) == {ReasoningDelta} and ReasoningDelta not in kinds[first_text:]
    assert "".join(e.text for e in of_type(events, ReasoningDelta)) == expected_reasoning("fake-reasoning")
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-reasoning")


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, ErrorKind.BAD_REQUEST, False),
        (401, ErrorKind.AUTH, False),
        (403, ErrorKind.PERMISSION, False),
        (404, ErrorKind.NOT_FOUND, False),
        (429, ErrorKind.RATE_LIMIT, True),
        (500, ErrorKind.SERVER, True),
        (529, ErrorKind.OVERLOADED, True),
    ],
)
async def test_it_maps_http_errors(fake, status, kind, retryable):
    events, error = await run(openai(f"fake-error-{status}"))

    assert events == []
    assert (error.kind, error.status, error.retryable) == (kind, status, retryable)
    assert error.detail == OPENAI_ERRORS[status][2]
    assert error.message and error.message != error.detail
    assert_no_secret(error, OPENAI_KEY)


async def test_a_content_policy_400_is_a_content_filter_error(fake):
    _, error = await run(openai("fake-error-400@error=content_policy_violation"))

    assert (error.kind, error.status, error.retryable) == (ErrorKind.CONTENT_FILTER, 400, False)


async def test_the_auth_message_names_the_variable_to_check(fake):
    _, error = await run(openai("fake-error-401"))

    assert error.message == "The model provider rejected the API key. Check OPENAI_API_KEY."


async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(fake, monkeypatch):
    with FakeProvider(api_key="the-right-key") as strict:
        monkeypatch.setenv("OPENAI_BASE_URL", strict.openai_base_url)
        _, error = await run(openai("fake-normal"))
        await fakes.openai_provider.clients.aclose()

    assert error.kind is ErrorKind.AUTH
    assert strict.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert_no_secret(error, OPENAI_KEY)


async def test_a_missing_key_is_an_auth_error_without_a_request(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")

    _, error = await run(openai("fake-normal"))

    assert error.kind is ErrorKind.AUTH
    assert fake.requests == []


async def test_it_yields_the_partial_text_before_a_midstream_error(fake):
    events, error = await run(openai("fake-midstream-error"))

    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-midstream-error")
    assert expected_text("fake-midstream-error")
    assert (error.kind, error.retryable, error.status) == (ErrorKind.SERVER, True, None)
    assert error.detail == "The server had an error while processing your request."
    assert of_type(events, Finish) == []


async def test_a_midstream_rate_limit_frame_is_a_rate_limit_error(fake):
    _, error = await run(openai("fake-midstream-error@error=rate_limit_exceeded"))

    assert error.kind is ErrorKind.RATE_LIMIT


async def test_a_dropped_connection_is_a_connection_error(fake):
    events, error = await run(openai("fake-disconnect"))

    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-disconnect")
    assert (error.kind, error.retryable) == (ErrorKind.CONNECTION, True)


async def test_a_stalled_stream_is_a_timeout(fake, settings):
    settings.CHAT_PROVIDER_READ_TIMEOUT = 0.3

    events, error = await run(openai("fake-stall"))

    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-stall")
    assert (error.kind, error.retryable) == (ErrorKind.TIMEOUT, True)


async def test_cancelling_the_consumer_closes_the_upstream_connection(fake):
    first_delta = asyncio.Event()

    async def consume():
        async for _event in get_provider("openai").events(openai("fake-long@delay=0.02")):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)


async def test_closing_the_event_stream_closes_the_upstream_connection(fake):
    events = get_provider("openai").events(openai("fake-long@delay=0.02"))
    assert isinstance(await anext(events), TextDelta)

    await events.aclose()

    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)


async def test_a_finished_stream_does_not_count_as_a_disconnect(fake):
    await run(openai("fake-normal"))

    assert fake.disconnects == 0


async def test_sdk_retries_get_past_a_flaky_429(fake, settings):
    settings.CHAT_PROVIDER_MAX_RETRIES = 2

    events, error = await run(openai("fake-flaky-429"))

    assert error is None
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text("fake-flaky-429")
    assert len(fake.requests) == 2


async def test_without_retries_a_flaky_429_is_a_rate_limit_error(fake, settings):
    settings.CHAT_PROVIDER_MAX_RETRIES = 0

    _, error = await run(openai("fake-flaky-429"))

    assert (error.kind, error.status) == (ErrorKind.RATE_LIMIT, 429)
    assert len(fake.requests) == 1


async def test_a_non_streaming_model_yields_one_text_delta(fake):
    events, error = await run(openai("fake-normal", streaming=False))

    assert error is None
    assert events == [
        TextDelta(expected_text("fake-normal")),
        Usage(count_words(fake.requests[-1].json), TOKENS),
        Finish(FinishReason.STOP, "stop"),
    ]
    assert not fake.requests[-1].json.get("stream")


async def test_a_non_streaming_reasoning_model_yields_its_reasoning_first(fake):
    events, _ = await run(openai("fake-reasoning", streaming=False))

    assert events[:2] == [
        ReasoningDelta(expected_reasoning("fake-reasoning")),
        TextDelta(expected_text("fake-reasoning")),
    ]


async def test_it_reuses_one_client_and_its_connection_per_loop_and_settings(fake, settings):
    await run(openai("fake-normal"))
    await run(openai("fake-normal"))
    settings.CHAT_PROVIDER_READ_TIMEOUT = 4.0
    await run(openai("fake-normal"))

    first, second, third = (r.client_port for r in fake.requests)
    assert first == second
    assert third != first
