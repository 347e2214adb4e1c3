import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: no Redis channel layer to test")


async def test_it_keeps_an_idle_redis_reader_alive():
    # channels-redis blocks in BZPOPMIN for 5 s; with redis-py 8's default 5 s
    # socket timeout the read raised redis TimeoutError and killed idle consumers.
    layer = get_channel_layer()
    channel = await layer.new_channel()
    with pytest.raises(TimeoutError) as raised:
        await asyncio.wait_for(layer.receive(channel), 6.5)
    assert type(raised.value) is TimeoutError  # asyncio's, not redis.exceptions.TimeoutError


async def test_it_delivers_group_messages_through_redis():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conversation_test", channel)
    await layer.group_send("conversation_test", {"type": "conversation.delta", "html": "你好 👋"})
    message = await asyncio.wait_for(layer.receive(channel), 5)
    await layer.group_discard("conversation_test", channel)
    assert message == {"type": "conversation.delta", "html": "你好 👋"}
