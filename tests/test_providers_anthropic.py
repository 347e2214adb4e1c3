"""The Anthropic provider, through the real anthropic SDK over HTTP against the fake provider."""

import asyncio
from dataclasses import replace

import pytest

from conversations.providers import anthropic as anthropic_provider
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
    ANTHROPIC_ERRORS,
    BASE_TOKENS,
    REASONING_TOKENS,
    FakeProvider,
    count_words,
    expected_reasoning,
    expected_text,
)
from tests import fakes
from tests.fakes import ANTHROPIC_KEY, TOKENS, assert_no_secret, chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake


def claude(model, *args, **kwargs):
    return chat("anthropic", model, *args, **kwargs)


def text_of(events):
    return "".join(e.text for e in of_type(events, TextDelta))


async def test_it_streams_text_deltas_in_order(fake):
    events, error = await run(claude("fake-normal"))

    assert error is None
    assert [e.text for e in of_type(events, TextDelta)] == list(BASE_TOKENS)
    assert text_of(events) == expected_text("fake-normal")


async def test_it_ends_with_usage_from_the_stream_then_one_stop_finish(fake):
    events, _ = await run(claude("fake-normal", ("Hello there", ChatMessage("assistant", "Hi"), "How are you")))

    body = fake.requests[-1].json
    assert events[-2:] == [Usage(count_words(body), TOKENS), Finish(FinishReason.STOP, "end_turn")]
    assert len(of_type(events, Finish)) == 1


async def test_it_presents_the_key_from_the_environment(fake):
    await run(claude("fake-normal"))

    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    # anthropic 2.x sends the API key as a Bearer token, not x-api-key.
    presented = {request.headers.get("x-api-key"), request.headers.get("authorization")}
    assert presented & {ANTHROPIC_KEY, f"Bearer {ANTHROPIC_KEY}"}
    assert request.headers["anthropic-version"]
    assert request.json["stream"] is True


async def test_the_system_prompt_is_top_level_and_never_a_message(fake):
    await run(claude("fake-normal", ("Question",), system="Be brief."))

    body = fake.requests[-1].json
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Question"}]


async def test_an_empty_system_prompt_is_left_out(fake):
    await run(claude("fake-normal", system=""))

    assert "system" not in fake.requests[-1].json


async def test_history_is_merged_to_alternate_and_starts_with_a_user_turn(fake):
    history = (
        ChatMessage("assistant", "A greeting from before the history was trimmed"),
        ChatMessage("assistant", ""),  # an errored reply with no text
        "First question",
        "Follow-up sent before any reply",
        ChatMessage("assistant", "   "),
        ChatMessage("assistant", "A reply another model reasoned about"),
        "Last question",
    )
    events, error = await run(claude("fake-normal", history))

    assert error is None and events
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": anthropic_provider.LEADING_USER_TURN},
        {"role": "assistant", "content": "A greeting from before the history was trimmed"},
        {"role": "user", "content": "First question\n\nFollow-up sent before any reply"},
        {"role": "assistant", "content": "A reply another model reasoned about"},
        {"role": "user", "content": "Last question"},
    ]


async def test_a_final_assistant_turn_is_sent_without_trailing_whitespace(fake):
    _, error = await run(claude("fake-normal", ("Question", ChatMessage("assistant", "The answer so far \n"))))

    assert error is None
    assert fake.requests[-1].json["messages"][-1] == {"role": "assistant", "content": "The answer so far"}


@pytest.mark.parametrize(
    ("model_max_tokens", "request_max_tokens", "sent"),
    [(None, None, anthropic_provider.DEFAULT_MAX_TOKENS), (8192, None, 8192), (8192, 100, 100)],
)
async def test_max_tokens_is_always_sent(fake, model_max_tokens, request_max_tokens, sent):
    request = claude("fake-normal", max_tokens=request_max_tokens)
    await run(replace(request, model=replace(request.model, max_tokens=model_max_tokens)))

    assert fake.requests[-1].json["max_tokens"] == sent


async def test_temperature_is_sent_only_when_set(fake):
    await run(claude("fake-normal"))
    await run(claude("fake-normal", temperature=0.3))

    unset, set_ = (r.json for r in fake.requests)
    assert "temperature" not in unset
    assert set_["temperature"] == 0.3


async def test_a_thinking_model_asks_for_thinking_and_never_sends_temperature(fake):
    events, error = await run(
        claude("fake-normal", temperature=0.7, thinking=True, thinking_budget=2048, max_tokens=8192)
    )

    body = fake.requests[-1].json
    assert error is None and events
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 8192
    assert "temperature" not in body


async def test_a_thinking_budget_above_max_tokens_raises_max_tokens(fake):
    _, error = await run(claude("fake-normal", max_tokens=1000, thinking=True, thinking_budget=2048))

    body = fake.requests[-1].json
    assert error is None
    assert body["thinking"]["budget_tokens"] < body["max_tokens"] == 1000 + 2048


async def test_thinking_deltas_become_reasoning_deltas_and_signatures_are_dropped(fake):
    events, _ = await run(claude("fake-reasoning", thinking=True))

    deltas = [e for e in events if isinstance(e, TextDelta | ReasoningDelta)]
    assert deltas == [ReasoningDelta(t) for t in REASONING_TOKENS] + [TextDelta(t) for t in BASE_TOKENS]
    assert "".join(e.text for e in of_type(events, ReasoningDelta)) == expected_reasoning("fake-reasoning")
    assert all("ZmFrZS1zaWduYXR1cmU" not in e.text for e in deltas)


@pytest.mark.parametrize("model", ["fake-slow-first@first_delay=0.05", "fake-long@delay=0", "fake-normal@tokens=1"])
async def test_every_text_scenario_streams_exactly_its_text(fake, model):
    events, error = await run(claude(model))

    assert error is None
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text(model)
    assert events[-1] == Finish(FinishReason.STOP, "end_turn")


async def test_timestamped_tokens_arrive_one_delta_each(fake):
    events, _ = await run(claude("fake-timestamped@tokens=5"))

    stamps = [int(e.text[1:-1]) for e in of_type(events, TextDelta)]
    assert len(stamps) == 5 and stamps == sorted(stamps)


@pytest.mark.parametrize(
    ("model", "max_tokens", "reason", "raw"),
    [
        ("fake-length", None, FinishReason.LENGTH, "max_tokens"),
        ("fake-normal", 5, FinishReason.LENGTH, "max_tokens"),
        ("fake-refusal", None, FinishReason.REFUSAL, "refusal"),
    ],
)
async def test_it_maps_stop_reasons(fake, model, max_tokens, reason, raw):
    events, error = await run(claude(model, max_tokens=max_tokens))

    assert error is None
    assert events[-1] == Finish(reason, raw)
    assert text_of(events) == expected_text(model, max_tokens=max_tokens)


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
    events, error = await run(claude(f"fake-error-{status}"))

    assert events == []
    assert (error.kind, error.status, error.retryable) == (kind, status, retryable)
    assert error.detail == ANTHROPIC_ERRORS[status][1]
    assert error.message and error.message != error.detail
    assert_no_secret(error, ANTHROPIC_KEY)


async def test_the_auth_message_names_the_variable_to_check(fake):
    _, error = await run(claude("fake-error-401"))

    assert error.message == "The model provider rejected the API key. Check ANTHROPIC_API_KEY."


async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(fake, monkeypatch):
    with FakeProvider(api_key="the-right-key") as strict:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", strict.anthropic_base_url)
        _, error = await run(claude("fake-normal"))
        await anthropic_provider.clients.aclose()

    assert (error.kind, error.status) == (ErrorKind.AUTH, 401)
    assert_no_secret(error, ANTHROPIC_KEY)


async def test_a_missing_key_is_an_auth_error_without_a_request(fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    _, error = await run(claude("fake-normal"))

    assert error.kind is ErrorKind.AUTH
    assert fake.requests == []


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.OVERLOADED),
        ("rate_limit_error", ErrorKind.RATE_LIMIT),
        ("api_error", ErrorKind.SERVER),
        ("invalid_request_error", ErrorKind.BAD_REQUEST),
    ],
)
async def test_a_midstream_error_event_is_mapped_by_its_type_after_the_partial_text(fake, error_type, kind):
    model = f"fake-midstream-error@error={error_type}"
    events, error = await run(claude(model))

    assert text_of(events) == expected_text(model) != ""
    assert (error.kind, error.status, error.detail) == (kind, None, "Overloaded")
    assert of_type(events, Finish) == []
    # Sent with status 200, such an error is never retried by the SDK.
    assert len(fake.requests) == 1


async def test_a_dropped_connection_is_a_connection_error(fake):
    events, error = await run(claude("fake-disconnect"))

    assert text_of(events) == expected_text("fake-disconnect")
    assert (error.kind, error.retryable) == (ErrorKind.CONNECTION, True)
    assert error.detail.startswith("ReadError")  # the transport says the body ended early


async def test_a_stalled_stream_is_a_timeout(fake, settings):
    settings.CHAT_PROVIDER_READ_TIMEOUT = 0.3

    events, error = await run(claude("fake-stall"))

    assert text_of(events) == expected_text("fake-stall")
    assert (error.kind, error.retryable) == (ErrorKind.TIMEOUT, True)


async def test_cancelling_the_consumer_closes_the_upstream_connection(fake):
    first_delta = asyncio.Event()

    async def consume():
        async for _event in get_provider("anthropic").events(claude("fake-long@delay=0.02")):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)


async def test_closing_the_event_stream_closes_the_upstream_connection(fake):
    events = get_provider("anthropic").events(claude("fake-long@delay=0.02"))
    assert isinstance(await anext(events), TextDelta)

    await events.aclose()

    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)


async def test_sdk_retries_get_past_a_flaky_429(fake, settings):
    settings.CHAT_PROVIDER_MAX_RETRIES = 2

    events, error = await run(claude("fake-flaky-429"))

    assert error is None
    assert text_of(events) == expected_text("fake-flaky-429")
    assert len(fake.requests) == 2


async def test_without_retries_a_flaky_429_is_a_rate_limit_error(fake, settings):
    settings.CHAT_PROVIDER_MAX_RETRIES = 0

    _, error = await run(claude("fake-flaky-429"))

    assert (error.kind, error.status) == (ErrorKind.RATE_LIMIT, 429)
    assert len(fake.requests) == 1


async def test_a_non_streaming_model_yields_one_text_delta(fake):
    events, error = await run(claude("fake-normal", streaming=False))

    assert error is None
    assert events == [
        TextDelta(expected_text("fake-normal")),
        Usage(count_words(fake.requests[-1].json), TOKENS),
        Finish(FinishReason.STOP, "end_turn"),
    ]
    assert not fake.requests[-1].json.get("stream")


async def test_a_non_streaming_thinking_model_yields_its_reasoning_first(fake):
    events, _ = await run(claude("fake-reasoning", streaming=False, thinking=True))

    assert events[:2] == [
        ReasoningDelta(expected_reasoning("fake-reasoning")),
        TextDelta(expected_text("fake-reasoning")),
    ]


async def test_it_reuses_one_client_and_its_connection_per_loop_and_settings(fake, settings):
    await run(claude("fake-normal"))
    await run(claude("fake-normal"))
    settings.CHAT_PROVIDER_MAX_RETRIES = 1
    await run(claude("fake-normal"))

    first, second, third = (r.client_port for r in fake.requests)
    assert first == second
    assert third != first
