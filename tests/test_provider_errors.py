"""What a failed call says, and how long a hung server can keep a person
waiting: both providers, through the real SDKs over HTTP against the fake
provider (OpenAI and Anthropic wire formats)."""

import asyncio
import time

import pytest

from conversations.providers.base import ErrorKind, TextDelta, redact, trim
from devtools.fakeprovider import ERROR_MESSAGES, expected_text
from tests import fakes
from tests.fakes import ANTHROPIC_KEY, OPENAI_KEY, assert_no_secret, chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake

PROVIDERS = pytest.mark.parametrize("provider", ["openai", "anthropic"])
KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}


# --- the kind: the HTTP status first, the body's type only to narrow it ------


@PROVIDERS
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ErrorKind.AUTH),
        (402, ErrorKind.BILLING),
        (403, ErrorKind.PERMISSION),
        (404, ErrorKind.NOT_FOUND),
        (429, ErrorKind.RATE_LIMIT),
        (529, ErrorKind.OVERLOADED),
    ],
)
async def test_the_status_decides_the_kind_when_every_error_is_labelled_api_error(fake, provider, status, kind):
    _, error = await run(chat(provider, f"fake-error-{status}@error=api_error"))

    assert (error.kind, error.status) == (kind, status)
    assert "internal error" not in error.message


@PROVIDERS
async def test_a_400_whose_type_says_content_filter_is_a_content_filter_error(fake, provider):
    _, error = await run(chat(provider, "fake-error-400@error=content_policy_violation"))

    assert (error.kind, error.status, error.retryable) == (ErrorKind.CONTENT_FILTER, 400, False)


@PROVIDERS
async def test_dashscopes_data_inspection_failure_is_a_content_filter_error_with_its_words(fake, provider):
    _, error = await run(chat(provider, "fake-error-400@error=data_inspection_failed,message=data-inspection"))

    assert (error.kind, error.status) == (ErrorKind.CONTENT_FILTER, 400)
    assert error.message == "The model provider refused this request under its content policy."
    assert error.provider_message == "Input data may contain inappropriate content."


async def test_an_anthropic_midstream_error_event_still_takes_its_kind_from_its_type(fake):
    _, error = await run(chat("anthropic", "fake-midstream-error@error=rate_limit_error"))

    assert (error.kind, error.status, error.provider_message) == (ErrorKind.RATE_LIMIT, None, "Overloaded")


async def test_openais_429_for_an_exhausted_quota_is_a_billing_error(fake):
    _, error = await run(chat("openai", "fake-error-429@error=insufficient_quota"))

    assert (error.kind, error.status, error.retryable) == (ErrorKind.BILLING, 429, False)


async def test_a_type_never_overrules_a_specific_status(fake):
    # A 401 whose body says content filter is still an auth error.
    _, error = await run(chat("openai", "fake-error-401@error=content_filter"))

    assert error.kind is ErrorKind.AUTH


# --- the provider's own words --------------------------------------------------


@PROVIDERS
async def test_a_402_says_the_account_is_out_of_credit_and_keeps_the_providers_words(fake, provider):
    _, error = await run(chat(provider, "fake-error-402"))

    assert (error.kind, error.status, error.retryable) == (ErrorKind.BILLING, 402, False)
    assert error.message == "The account with the model provider is out of credit."
    said = {
        "openai": "Insufficient Balance",  # DeepSeek's
        "anthropic": "Your credit balance is too low to access the Anthropic API.",
    }
    assert error.provider_message == said[provider]


@PROVIDERS
async def test_a_context_length_error_keeps_the_providers_explanation(fake, provider):
    _, error = await run(chat(provider, "fake-error-400@message=context-length"))

    assert (error.kind, error.message) == (ErrorKind.BAD_REQUEST, "The model provider rejected the request.")
    assert error.provider_message == ERROR_MESSAGES["context-length"]


@PROVIDERS
async def test_the_providers_words_are_trimmed_and_anything_key_like_is_blanked(fake, provider):
    _, error = await run(chat(provider, "fake-error-400@message=long-key"))

    said = error.provider_message
    assert len(ERROR_MESSAGES["long-key"]) > 400
    assert len(said) <= 300 and said.endswith("…")
    assert said.startswith("Invalid request: <img src=x onerror=alert(1)> the proxy rejected it.")
    for secret in ("sk-ant-api03", "eyJhbGciOiJIUzI1NiJ9", "0123456789abcdef0123"):
        assert secret not in said and secret not in error.detail
    assert "Key ***, header Bearer ***, session ***." in said
    assert_no_secret(error, KEYS[provider])


@PROVIDERS
async def test_errors_without_a_body_have_no_provider_words(fake, provider):
    _, error = await run(chat(provider, "fake-disconnect"))

    assert (error.kind, error.provider_message) == (ErrorKind.CONNECTION, "")


def test_redaction_blanks_the_configured_key_and_key_like_strings_but_not_model_names():
    text = (
        "Incorrect API key provided: my-short-key. Try sk-proj-Ab12_cd34-EF56 or Authorization: Bearer abc.def; "
        "token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, "
        "AIzaSyD-1234567890abcdefGHIJKLMNOPqrstu; model=claude-3-7-sonnet-20250219-thinking, "
        "see https://docs.example.com/en/api/errors-and-rate-limits-2024"
    )

    assert redact(text, "my-short-key") == (
        "Incorrect API key provided: ***. Try *** or Authorization: Bearer ***; token ***, ***; "
        "model=claude-3-7-sonnet-20250219-thinking, see https://docs.example.com/en/api/errors-and-rate-limits-2024"
    )


def test_trimming_keeps_short_text_and_cuts_long_text_on_one_line():
    assert trim("Insufficient  Balance\n") == "Insufficient Balance"
    assert trim("word " * 100, limit=20) == "word word word word…"


# --- a hung server: deadlines for the first event -----------------------------


@pytest.fixture
def deadlines(settings):
    """Small deadlines; the read timeout (5 s, three attempts) would take 15 s."""
    settings.CHAT_PROVIDER_READ_TIMEOUT = 5.0
    settings.CHAT_PROVIDER_FIRST_BYTE_TIMEOUT = 0.3
    settings.CHAT_PROVIDER_TOTAL_TIMEOUT = 60.0
    settings.CHAT_PROVIDER_MAX_RETRIES = 0
    return settings


@PROVIDERS
@pytest.mark.parametrize("model", ["fake-no-headers", "fake-no-body"])
async def test_a_hung_server_fails_at_the_first_byte_deadline(fake, deadlines, provider, model):
    began = time.monotonic()
    events, error = await run(chat(provider, model))
    took = time.monotonic() - began

    assert events == []
    assert (error.kind, error.retryable) == (ErrorKind.TIMEOUT, True)
    assert error.message == "The model provider took too long to respond."
    assert took < 2.0
    assert len(fake.requests) == 1
    # The silent request was hung up on (the socket closes on the loop, so wait off it).
    assert await asyncio.to_thread(fake.wait_for_disconnect, 2.0)


@PROVIDERS
async def test_silent_attempts_are_made_again_only_until_the_total_deadline(fake, deadlines, provider):
    deadlines.CHAT_PROVIDER_FIRST_BYTE_TIMEOUT = 0.4
    deadlines.CHAT_PROVIDER_TOTAL_TIMEOUT = 1.0
    deadlines.CHAT_PROVIDER_MAX_RETRIES = 5  # six attempts of 0.4 s would take 2.4 s

    began = time.monotonic()
    _, error = await run(chat(provider, "fake-no-headers"))
    took = time.monotonic() - began

    assert error.kind is ErrorKind.TIMEOUT
    assert 2 <= len(fake.requests) <= 3
    assert took < 2.0


@PROVIDERS
async def test_the_deadlines_end_with_the_first_event(fake, deadlines, provider):
    deadlines.CHAT_PROVIDER_TOTAL_TIMEOUT = 0.3
    model = "fake-long@tokens=30,delay=0.03"  # about 0.9 s in all, the first token at once

    events, error = await run(chat(provider, model))

    assert error is None
    assert "".join(e.text for e in of_type(events, TextDelta)) == expected_text(model)


@PROVIDERS
async def test_a_slow_first_token_within_the_deadline_is_no_error(fake, deadlines, provider):
    _, error = await run(chat(provider, "fake-slow-first@first_delay=0.1"))

    assert error is None
