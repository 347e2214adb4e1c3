"""A reply that fails, end to end: consumer → generation → the real openai
SDK → the fake provider; what is stored and what every tab is shown."""

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from conversations.models import Message
from tests.wsclient import connect, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@database_sync_to_async
def _reply(conversation) -> Message:
    return Message.objects.filter(conversation=conversation, role="assistant").order_by("-created_at").first()


async def _fail(alice, conversation, openai_fake, model) -> tuple[Message, list[str]]:
    await sync_to_async(openai_fake)(conversation, model)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="this will fail")
    frames = await until_final(communicator)
    await communicator.disconnect()
    return await _reply(conversation), frames


async def test_an_out_of_credit_reply_says_so_with_the_providers_words_under_ours(alice, conversation, openai_fake):
    reply, frames = await _fail(alice, conversation, openai_fake, "fake-error-402")

    assert (reply.status, reply.error_kind) == ("error", "billing")
    assert reply.error == "The account with the model provider is out of credit."
    assert reply.error_detail == "Insufficient Balance"
    assert '<p class="msg-error" role="alert">The account with the model provider is out of credit.</p>' in frames[-1]
    assert '<p class="msg-error-detail">The provider said: <q>Insufficient Balance</q></p>' in frames[-1]


async def test_the_providers_words_are_stored_trimmed_redacted_and_shown_escaped(alice, conversation, openai_fake):
    reply, frames = await _fail(alice, conversation, openai_fake, "fake-error-400@message=long-key")

    assert reply.error == "The model provider rejected the request."
    assert len(reply.error_detail) <= 300 and "***" in reply.error_detail
    assert "&lt;img src=x onerror=alert(1)&gt;" in frames[-1]
    assert not any("<img src=x" in frame for frame in frames)
    assert not any("sk-ant-api03" in frame or "eyJhbGciOiJIUzI1NiJ9" in frame for frame in frames)


async def test_a_failure_without_words_from_the_provider_shows_only_ours(alice, conversation, openai_fake):
    reply, frames = await _fail(alice, conversation, openai_fake, "fake-disconnect")

    assert (reply.error_kind, reply.error_detail) == ("connection", "")
    assert "msg-error-detail" not in frames[-1]


async def test_a_hung_provider_ends_the_reply_as_a_timeout_at_the_deadline(alice, conversation, openai_fake, settings):
    settings.CHAT_PROVIDER_FIRST_BYTE_TIMEOUT = 0.3
    settings.CHAT_PROVIDER_READ_TIMEOUT = 30.0  # the test's own 60 s timeout fails it without the deadline

    reply, frames = await _fail(alice, conversation, openai_fake, "fake-no-body")

    assert (reply.status, reply.error_kind, reply.error_detail) == ("error", "timeout", "")
    assert reply.error == "The model provider took too long to respond."
    assert reply.duration_ms < 5000
    assert "took too long to respond" in frames[-1] and "Retry" in frames[-1]
