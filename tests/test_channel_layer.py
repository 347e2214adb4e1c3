"""Both Redis channel layers this app can run on, against the real Redis."""

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is unset: no Redis channel layer to test")


@pytest.fixture(params=["pubsub", "core"])
def layer(request):
    if request.param == "core":
        return RedisChannelLayer(hosts=settings.REDIS_HOSTS, capacity=settings.CHAT_CHANNEL_CAPACITY)
    return RedisPubSubChannelLayer(hosts=settings.REDIS_HOSTS)


def test_it_runs_on_pubsub_by_default():
    assert isinstance(get_channel_layer(), RedisPubSubChannelLayer)


async def test_it_keeps_an_idle_redis_reader_alive(layer):
    # channels-redis blocks in BZPOPMIN for 5 s; with redis-py 8's default 5 s
    # socket timeout the read raised redis TimeoutError and killed idle consumers.
    channel = await layer.new_channel()
    with pytest.raises(TimeoutError) as raised:
        await asyncio.wait_for(layer.receive(channel), 6.5)
    assert type(raised.value) is TimeoutError  # asyncio's, not redis.exceptions.TimeoutError


async def test_it_delivers_group_messages_through_redis(layer):
    channel = await layer.new_channel()
    await layer.group_add("conversation_test", channel)
    await layer.group_send("conversation_test", {"type": "conversation.delta", "html": "你好 👋"})
    message = await asyncio.wait_for(layer.receive(channel), 5)
    await layer.group_discard("conversation_test", channel)
    assert message == {"type": "conversation.delta", "html": "你好 👋"}
