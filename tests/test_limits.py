"""Per-user limits on replies, counted in the database (so every worker sees
the same count): replies in flight at once, and replies started per minute.
A refused send says when to try again and saves nothing."""

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text
from tests.wsclient import composer_error, connect, delta_text, first_delta, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_a_send_beyond_the_concurrent_replies_allowed_is_refused_and_saves_nothing(
    alice, conversation, openai_fake, settings
):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    other = await database_sync_to_async(Conversation.objects.create)(owner=alice, title="second")
    await sync_to_async(openai_fake)(conversation, "fake-long@tokens=80,delay=0.01")
    await sync_to_async(openai_fake)(other, "fake-normal")
    busy = await connect(alice, conversation)
    await send(busy, action="send", text="a long one")
    await first_delta(busy)

    refused = await connect(alice, other)
    await send(refused, action="send", text="写一首诗 while the other is written")
    error = await composer_error(refused)
    assert "1 reply being written, the most allowed" in error
    assert not await database_sync_to_async(Message.objects.filter(conversation=other).exists)()

    await until_final(busy)  # once it has finished, the same send goes through
    await send(refused, action="send", text="now")
    assert delta_text(await until_final(refused)) == expected_text("fake-normal")
    await busy.disconnect()
    await refused.disconnect()


async def test_a_send_beyond_the_replies_per_minute_says_when_to_try_again(alice, conversation, openai_fake, settings):
    settings.CHAT_REPLIES_PER_MINUTE = 2
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    for text in ("one", "two"):
        await send(communicator, action="send", text=text)
        await until_final(communicator)
    await send(communicator, action="send", text="three")
    error = await composer_error(communicator)
    await communicator.disconnect()
    assert "2 replies in the last minute, the most allowed. Try again in" in error
    texts = await database_sync_to_async(list)(Message.objects.filter(role="user").values_list("content", flat=True))
    assert sorted(texts) == ["one", "two"]


async def test_another_users_replies_do_not_count_against_mine(alice, charlie, conversation, openai_fake, settings):
    settings.CHAT_REPLIES_PER_MINUTE = 1
    theirs = await database_sync_to_async(Conversation.objects.create)(owner=charlie, title="charlie's")
    await sync_to_async(openai_fake)(theirs, "fake-normal")
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    for user, conv in ((charlie, theirs), (alice, conversation)):
        communicator = await connect(user, conv)
        await send(communicator, action="send", text="hello")
        assert delta_text(await until_final(communicator)) == expected_text("fake-normal")
        await communicator.disconnect()


async def test_a_stored_max_tokens_above_the_models_limit_is_sent_capped(
    alice, conversation, openai_fake, fake_provider, settings
):
    settings.CHAT_MAX_TOKENS_LIMIT = 100
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(max_tokens=200000)
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="hello")
    await until_final(communicator)
    await communicator.disconnect()
    assert fake_provider.requests[-1].json["max_tokens"] == 100
