"""conversations.layers.InMemoryChannelLayer: channels' in-memory layer, with
its expiry walk at most once per ``clean_interval`` and a direct group send."""

import asyncio

import pytest

from conversations.layers import InMemoryChannelLayer


async def test_a_group_send_reaches_every_member_once_and_skips_full_channels():
    layer = InMemoryChannelLayer(capacity=1)
    a, b, c = [await layer.new_channel() for _ in range(3)]
    for channel in (a, b, c):
        await layer.group_add("g", channel)
    await layer.send(c, {"type": "filler"})  # c is full
    await layer.group_send("g", {"type": "x", "n": 1})
    assert await layer.receive(a) == {"type": "x", "n": 1}
    assert await layer.receive(b) == {"type": "x", "n": 1}
    assert await layer.receive(c) == {"type": "filler"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(a), 0.05)


async def test_members_get_their_own_copy():
    layer = InMemoryChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    await layer.group_send("g", {"type": "x", "items": [1]})
    first, second = await layer.receive(a), await layer.receive(b)
    first["items"].append(2)
    assert second["items"] == [1]


async def test_a_frame_of_plain_values_is_its_own_dict_for_each_member_and_the_sender():
    layer = InMemoryChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    frame = {"type": "conversation.delta", "message": "m", "seq": 3, "html": "<p>你好</p>"}
    await layer.group_send("g", frame)
    first, second = await layer.receive(a), await layer.receive(b)
    first["seq"] = 99
    assert second == frame and frame["seq"] == 3
    assert first is not frame and second is not frame


async def test_expired_messages_and_memberships_still_go_at_the_next_walk():
    layer = InMemoryChannelLayer(expiry=0, group_expiry=1)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    layer.groups["g"][channel] -= 10  # joined long ago
    await layer.send(channel, {"type": "old"})
    layer._next_clean = 0.0  # the interval has passed: the next walk is due
    layer._clean_expired()
    assert channel not in layer.channels
    assert channel not in layer.groups.get("g", {})


async def test_the_walk_runs_at_most_once_per_interval(monkeypatch):
    layer = InMemoryChannelLayer()
    walks = []
    monkeypatch.setattr("channels.layers.InMemoryChannelLayer._clean_expired", lambda self: walks.append(1))
    for _ in range(50):
        await layer.group_send("g", {"type": "x"})
    assert len(walks) == 1
