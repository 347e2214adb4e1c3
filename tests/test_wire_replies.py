"""Replies from servers that bend the wire formats, end to end in one process:
consumer → generation → the real SDKs → the fake provider over HTTP, then
the stored row, the final bubble and the admin list."""

import re

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from tests.wsclient import connect, delta_text, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

TOOL_NOTE = "The model asked to use a tool, which this chat does not offer."


@pytest.fixture
def use_model(openai_fake, fake_provider, monkeypatch, settings):
    """Point a conversation at "provider:model" of the fake provider, either wire format."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_provider.anthropic_base_url)
    offered: list[str] = []

    def use(conversation, key: str) -> None:
        offered.append(key)
        settings.CHAT_MODELS = ",".join(offered)
        Conversation.objects.filter(pk=conversation.pk).update(model_key=key)

    return sync_to_async(use)


async def _ask(alice, conversation, text="Hello there") -> tuple[Message, list[str]]:
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text=text)
    frames = await until_final(communicator)
    await communicator.disconnect()
    reply = await database_sync_to_async(
        lambda: Message.objects.filter(conversation=conversation, role="assistant").latest("created_at")
    )()
    return reply, frames


@pytest.mark.parametrize("key", ["openai:fake-truncated", "anthropic:fake-truncated"])
async def test_a_cut_stream_is_an_error_that_keeps_its_text_and_offers_retry(alice, conversation, use_model, key):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation)

    assert (reply.status, reply.error_kind) == ("error", "connection")
    assert reply.content == expected_text("fake-truncated") == delta_text(frames)
    assert f'<p class="msg-error" role="alert">{escape(reply.error)}</p>' in frames[-1]
    assert "Retry" in frames[-1]


@pytest.mark.parametrize("key", ["openai:fake-foreign-stream", "anthropic:fake-foreign-stream"])
async def test_a_stream_with_nothing_readable_is_an_error_not_an_empty_complete_reply(
    alice, conversation, use_model, key
):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation)

    assert (reply.status, reply.error_kind, reply.content) == ("error", "server", "")
    assert reply.error and "Retry" in frames[-1]


@pytest.mark.parametrize("key", ["openai:fake-json-reply", "anthropic:fake-json-reply"])
async def test_a_json_body_answering_the_stream_is_saved_as_a_complete_reply(alice, conversation, use_model, key):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation, "three words here")

    assert (reply.status, reply.finish_reason) == ("complete", "stop")
    assert reply.content == expected_text("fake-json-reply") == delta_text(frames)
    assert (reply.input_tokens, reply.output_tokens) == (3, 20)
    assert "3 → 20" in frames[-1]


@pytest.mark.parametrize("key", ["openai:fake-tool-call", "anthropic:fake-tool-call"])
async def test_a_tool_call_only_reply_says_the_chat_offers_no_tools(alice, conversation, use_model, key):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation)

    assert (reply.status, reply.finish_reason, reply.content) == ("complete", "tool_calls", "")
    assert TOOL_NOTE not in reply.content and TOOL_NOTE in frames[-1]
    page = await sync_to_async(_owner_page)(alice, conversation)
    assert TOOL_NOTE in page  # the same bubble on page load


async def test_an_ordinary_reply_has_no_tool_note(alice, conversation, use_model):
    await use_model(conversation, "openai:fake-normal")

    _, frames = await _ask(alice, conversation)

    assert TOOL_NOTE not in frames[-1]


@pytest.mark.parametrize("key", ["openai:fake-no-finish", "anthropic:fake-no-finish"])
async def test_a_reply_without_a_finish_reason_is_a_normal_end(alice, conversation, use_model, key):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation)

    assert (reply.status, reply.finish_reason, reply.finish_reason_raw) == ("complete", "stop", "")
    assert 'class="meta-finish"' not in frames[-1]


@pytest.mark.parametrize("key", ["anthropic:fake-late-input-tokens"])
async def test_late_anthropic_input_tokens_are_the_ones_saved(alice, conversation, use_model, key):
    await use_model(conversation, key)

    reply, frames = await _ask(alice, conversation, "five words are in here")

    assert (reply.input_tokens, reply.output_tokens) == (5, 20)
    assert "5 → 20" in frames[-1]


# --- no usage: blank, not zero ------------------------------------------------------


def _owner_page(user, conversation) -> str:
    client = Client()
    client.force_login(user)
    return client.get(conversation.get_absolute_url()).content.decode()


def _admin_list(django_user_model) -> str:
    staff = django_user_model.objects.create_user("rita", password="rita-password-123", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="conversations", codename__in=["view_conversation", "review_conversation"]
        )
    )
    client = Client()
    client.force_login(staff)
    return client.get(reverse("admin:conversations_conversation_changelist")).content.decode()


def _row_cells(body: str, title: str) -> dict[str, str]:
    """{column: cell text} of the admin list's row for the conversation titled ``title``."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        if f">{escape(title)}<" in row:
            return dict(re.findall(r'<t[dh] class="field-([\w]+)"[^>]*>(.*?)</t[dh]>', row, re.S))
    raise AssertionError(f"no row for {title!r}")


@pytest.mark.parametrize("key", ["openai:fake-no-usage", "anthropic:fake-no-usage"])
async def test_a_reply_without_usage_shows_no_token_counts_and_no_cost(
    alice, conversation, use_model, settings, django_user_model, key
):
    prices = {"price_in": "1000000", "price_out": "2000000"}  # USD per token, so that a few tokens show
    settings.CHAT_MODEL_OPTIONS = {key: prices, "openai:fake-normal": prices}
    await use_model(conversation, key)
    reply, frames = await _ask(alice, conversation)
    metered = await database_sync_to_async(Conversation.objects.create)(owner=alice, title="Metered")
    await use_model(metered, "openai:fake-normal")
    await _ask(alice, metered, "two words")

    assert (reply.status, reply.content) == ("complete", expected_text("fake-no-usage"))
    assert (reply.input_tokens, reply.output_tokens) == (None, None)
    assert "meta-tokens" not in frames[-1] and "tokens/s" not in frames[-1]
    assert "meta-tokens" not in await sync_to_async(_owner_page)(alice, conversation)
    body = await sync_to_async(_admin_list)(django_user_model)
    unknown, known = _row_cells(body, conversation.title), _row_cells(body, "Metered")
    # The admin's empty value, not 0.0000 or 0.
    assert unknown["cost"] == unknown["tokens_in"] == unknown["tokens_out"] == "-"
    assert known["cost"] == "42.0000"  # 2 in at 1 + 20 out at 2: the column works where usage is known
    assert (known["tokens_in"], known["tokens_out"]) == ("2", "20")
