"""A bounded fuzz of the conversation socket: a few thousand generated frames
of every shape (JSON of any nesting, our fields with wrong types, raw text and
bytes) against a live consumer.  Whatever arrives, the consumer raises
nothing, answers under the composer or closes with a 4xxx code, leaves its
groups, and writes nothing."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations import durability
from conversations.models import Conversation, Message
from tests.wsclient import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

FIELDS = ("action", "text", "message", "model", "csrfmiddlewaretoken", "HEADERS")
ACTIONS = ("send", "stop", "retry", "continue", "regenerate", "edit", "switch", "", "SEND", "send ")
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
ours = st.fixed_dictionaries(
    {}, optional={name: json_values | st.sampled_from(ACTIONS) for name in FIELDS}
)  # our fields, each of any type
frames = st.one_of(
    ours.map(json.dumps),
    ours.map(lambda frame: json.dumps({"action": "stop", **frame})),
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(json.dumps),
    st.text(min_size=1, max_size=200),  # (WebsocketCommunicator cannot send an empty frame)
    st.integers(1, 3000).map(lambda depth: "[" * depth),
    st.integers(1, 3000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.binary(min_size=1, max_size=50),
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(batch=st.lists(frames, min_size=1, max_size=60))
def test_no_frame_breaks_the_socket_or_writes(alice_fuzz, batch):
    user, conversation = alice_fuzz
    async_to_sync(_play)(user, conversation, batch)


# Too large to be read at all, so it has an answer of its own: once it comes,
# every frame before it has been handled (a valid "stop" answers nothing).
SENTINEL = "x" * 200_000


async def _play(user, conversation, batch) -> None:
    communicator = await connect(user, conversation)
    closed = None
    for frame in batch:
        if isinstance(frame, bytes):
            await communicator.send_to(bytes_data=frame)
        else:
            await communicator.send_to(text_data=frame)
        await communicator.send_to(text_data=SENTINEL)
        while closed is None:
            output = await communicator.receive_output(timeout=10)
            if output["type"] == "websocket.close":
                closed = output["code"]
            else:
                assert output["type"] == "websocket.send" and 'id="composer-error"' in output["text"]
                if "frame is too large" in output["text"]:
                    break
        if closed is not None:
            break
    if closed is not None:
        assert 4000 <= closed < 5000, closed
    await communicator.disconnect()
    assert durability.open_sockets() == 0
    assert not await database_sync_to_async(Message.objects.exists)()


@pytest.fixture
def alice_fuzz(alice):
    # A model nobody offers: a well-formed send is refused too, so nothing is ever written.
    return alice, Conversation.objects.create(owner=alice, title="fuzz", model_key="openai:not-offered")
