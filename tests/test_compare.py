"""Compare: one message to two to four models, their replies streaming at once
side by side, over the websocket (consumer → actions → the real openai SDK →
the fake provider over HTTP) and as plain form posts."""

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from conversations import frames, generation
from conversations.models import Budget, Conversation, Message, RunUsage, UsageDay
from devtools.fakeprovider import expected_text
from devtools.streamview import has_delta, is_snapshot
from tests.wsclient import column_view, composer_error, connect, is_final, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

# Three models of different lengths, slow enough to overlap.
SLOW = ("fake-long@tokens=40,delay=0.01", "fake-long@tokens=55,delay=0.008", "fake-normal@delay=0.012")


async def _offer(openai_fake, conversation, *models) -> list[str]:
    """Offer ``models`` (the conversation's own stays the first) and return their keys."""
    keys = [await sync_to_async(openai_fake)(conversation, model) for model in models]
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(model_key=keys[0])
    return keys


async def _until_finals(communicator, count: int, wait: float = 20.0) -> list[str]:
    """Frames until ``count`` replies' final bubbles have come."""
    frames, finals = [], 0
    while finals < count:
        frames.append(await communicator.receive_from(timeout=wait))
        finals += is_final(frames[-1])
    return frames


@database_sync_to_async
def _replies(conversation) -> list[Message]:
    return list(Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at"))


@database_sync_to_async
def _branch(conversation) -> list[Message]:
    return list(Conversation.objects.get(pk=conversation.pk).transcript())


async def test_a_comparison_streams_each_model_into_its_own_column_at_once_and_saves_each_with_its_model(
    alice, alice_client, conversation, openai_fake
):
    keys = await _offer(openai_fake, conversation, *SLOW)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="Compare these 比较", compare=keys)
    frames = await _until_finals(communicator, 3)
    await communicator.disconnect()

    replies = await _replies(conversation)
    assert [r.model_key for r in replies] == keys
    assert len({r.parent_id for r in replies}) == 1 and len({r.comparison for r in replies}) == 1
    question = await database_sync_to_async(Message.objects.get)(pk=replies[0].parent_id)
    assert (question.role, question.content) == ("user", "Compare these 比较")
    for reply, model in zip(replies, SLOW, strict=True):
        assert reply.status == "complete" and reply.content == expected_text(model)
        assert reply.input_tokens and reply.output_tokens and reply.duration_ms is not None
        assert column_view(frames, reply.id).text() == expected_text(model)  # no gap, no repeat
    # The columns came in one frame, each tagged with its model, and grew at the same time.
    new = next(f for f in frames if 'class="comparison"' in f)
    for reply in replies:
        column = (
            f'data-model="{reply.model_key}">\n<article class="msg msg-assistant status-streaming" id="msg-{reply.id}"'
        )
        assert column in new
    first_final = next(i for i, f in enumerate(frames) if is_final(f))
    assert all(any(f"#msg-{r.id}-" in f for f in frames[:first_final]) for r in replies)
    assert any('data-sent="1"' in f for f in frames)  # the composer is cleared
    # The usage ledger has every reply.
    row = await database_sync_to_async(UsageDay.objects.filter(user=alice).count)()
    assert row == 3

    # A page load draws the columns too, each with Continue with this one; the branch is the first model's.
    page = (await sync_to_async(alice_client.get)(conversation.get_absolute_url())).content.decode()
    assert page.count('class="comparison-column"') == 3 and page.count('class="link choose"') == 3
    assert [m.id for m in await _branch(conversation)] == [question.id, replies[0].id]


async def test_continue_with_this_one_makes_that_reply_the_branch_and_keeps_the_others(
    alice, alice_client, conversation, openai_fake, fake_provider
):
    keys = await _offer(openai_fake, conversation, "fake-normal", "fake-normal@tokens=7", "fake-normal@tokens=9")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="which is best?", compare=keys)
    await _until_finals(communicator, 3)
    replies = await _replies(conversation)

    await send(communicator, action="switch", message=str(replies[1].id))
    while 'id="transcript"' not in (switched := await communicator.receive_from(timeout=10)):
        pass
    assert 'class="comparison"' not in switched and "2 / 3" in switched
    assert f'id="msg-{replies[1].id}"' in switched and f'id="msg-{replies[0].id}"' not in switched
    assert [m.id for m in await _branch(conversation)][-1] == replies[1].id

    # The next message goes on from the chosen reply, with the conversation's own model.
    await send(communicator, action="send", text="go on")
    await until_final(communicator)
    await communicator.disconnect()
    sent = fake_provider.requests[-1].json
    assert sent["model"] == "fake-normal"
    assert [m["content"] for m in sent["messages"]] == ["which is best?", expected_text(keys[1][7:]), "go on"]
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 6
    page = (await sync_to_async(alice_client.get)(conversation.get_absolute_url())).content.decode()
    assert 'class="comparison"' not in page and "2 / 3" in page


async def test_a_message_sent_without_choosing_goes_on_from_the_first_models_reply(
    alice, conversation, openai_fake, fake_provider
):
    keys = await _offer(openai_fake, conversation, "fake-normal@tokens=5", "fake-normal@tokens=8")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="two answers", compare=keys)
    await _until_finals(communicator, 2)
    await send(communicator, action="send", text="and then")
    frames = await until_final(communicator)
    await communicator.disconnect()

    redrawn = next(f for f in frames if 'id="transcript"' in f)  # the columns give way in every tab
    assert 'class="comparison"' not in redrawn and "1 / 2" in redrawn
    history = [m["content"] for m in fake_provider.requests[-1].json["messages"]]
    assert history == ["two answers", expected_text("fake-normal@tokens=5"), "and then"]


async def test_one_model_failing_ends_only_its_owncolumn_view(alice, conversation, openai_fake):
    models = ("fake-error-500", "fake-long@tokens=40,delay=0.005", "fake-midstream-error@tokens=30,delay=0.005")
    keys = await _offer(openai_fake, conversation, *models)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="one of you will fail", compare=keys)
    frames = await _until_finals(communicator, 3)
    await communicator.disconnect()

    failed, done, midway = await _replies(conversation)
    assert failed.status == "error" and "had an internal error" in failed.error and failed.content == ""
    assert done.status == "complete" and done.content == expected_text(models[1])
    assert midway.status == "error" and midway.content == column_view(frames, midway.id).text() != ""
    for reply in (failed, midway):
        final = next(f for f in frames if is_final(f) and f'id="msg-{reply.id}"' in f)
        assert 'class="msg-error" role="alert"' in final and "Continue with this one" in final
    assert not generation.get_all(conversation.id)


async def test_stop_stops_everycolumn_view(alice, conversation, openai_fake):
    models = [f"fake-long@tokens={n},delay=0.02" for n in (300, 310, 320)]
    keys = await _offer(openai_fake, conversation, *models)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="long answers, please", compare=keys)
    frames = [await communicator.receive_from(timeout=10)]
    while 'class="comparison"' not in frames[-1]:  # the columns: their rows are saved by then
        frames.append(await communicator.receive_from(timeout=10))
    replies = await _replies(conversation)
    while not all(any(f"#msg-{r.id}-" in f for f in frames) for r in replies):
        frames.append(await communicator.receive_from(timeout=10))
    assert len(generation.get_all(conversation.id)) == 3

    await send(communicator, action="stop")
    await _until_finals(communicator, 3)
    await communicator.disconnect()
    stopped = await _replies(conversation)
    assert [r.status for r in stopped] == ["stopped"] * 3
    assert all(0 < len(r.content) < len(expected_text(m)) for r, m in zip(stopped, models, strict=True))


@pytest.mark.parametrize("second", ["send", "compare"])
async def test_a_second_send_during_a_comparison_is_refused(alice, conversation, openai_fake, second):
    keys = await _offer(openai_fake, conversation, "fake-long@tokens=300,delay=0.02", "fake-long@tokens=310,delay=0.02")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="first", compare=keys)
    extra = {"compare": keys} if second == "compare" else {}
    await send(communicator, action="send", text="second", **extra)
    error = await composer_error(communicator)
    assert "still being written" in error
    await send(communicator, action="stop")
    await _until_finals(communicator, 2)
    await communicator.disconnect()
    texts = await database_sync_to_async(list)(Message.objects.filter(role="user").values_list("content", flat=True))
    assert texts == ["first"]


async def test_a_socket_joining_mid_comparison_sees_every_column_with_no_gap_and_no_repeat(
    alice, conversation, openai_fake
):
    models = ("fake-long@tokens=120,delay=0.01", "fake-long@tokens=100,delay=0.012", "fake-long@tokens=90,delay=0.013")
    keys = await _offer(openai_fake, conversation, *models)
    first = await connect(alice, conversation)
    await send(first, action="send", text="stream to two tabs", compare=keys)
    seen = []
    while not any(has_delta(f) for f in seen):
        seen.append(await first.receive_from(timeout=10))
    second = await connect(alice, conversation)
    joined = await _until_finals(second, 3)
    rest = await _until_finals(first, 3)
    await first.disconnect()
    await second.disconnect()

    replies = await _replies(conversation)
    snapshots = [f for f in joined if is_snapshot(f)]
    assert len(snapshots) == 3 and all(any(f'id="msg-{r.id}"' in s for s in snapshots) for r in replies)
    for reply, model in zip(replies, models, strict=True):
        assert column_view(joined, reply.id).text() == expected_text(model)
        assert column_view(seen + rest, reply.id).text() == expected_text(model)


async def test_a_comparison_of_three_with_a_limit_of_two_replies_is_refused_up_front(
    alice, conversation, openai_fake, settings
):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 2
    keys = await _offer(openai_fake, conversation, "fake-normal", "fake-normal@tokens=5", "fake-normal@tokens=6")
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="three at once", compare=keys)
    error = await composer_error(communicator)
    assert "That is 3 replies at once (one per model), but you may have only 2 replies being written" in error
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()

    await send(communicator, action="send", text="two at once", compare=keys[:2])
    await _until_finals(communicator, 2)
    await communicator.disconnect()


async def test_each_reply_of_a_comparison_counts_against_the_concurrent_limit(
    alice, conversation, openai_fake, settings
):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 3
    models = [f"fake-long@tokens={n},delay=0.02" for n in (300, 301, 302)]
    keys = await _offer(openai_fake, conversation, *models)
    other, third = [
        await database_sync_to_async(Conversation.objects.create)(owner=alice, model_key=keys[0]) for _ in range(2)
    ]
    busy = await connect(alice, other)
    await send(busy, action="send", text="one in flight")
    await busy.receive_from(timeout=10)  # its bubbles: the reply is in flight

    comparing = await connect(alice, conversation)
    await send(comparing, action="send", text="needs three", compare=keys)
    error = await composer_error(comparing)
    assert "You already have 1 reply being written: 3 more at once would go past the 3 allowed" in error
    await send(comparing, action="send", text="needs two", compare=keys[:2])
    while 'data-sent="1"' not in await comparing.receive_from(timeout=10):
        pass
    # One plus two in flight: a send anywhere else is refused.
    elsewhere = await connect(alice, third)
    await send(elsewhere, action="send", text="one more")
    assert "3 replies being written, the most allowed" in await composer_error(elsewhere)

    await send(busy, action="stop")
    await send(comparing, action="stop")
    await until_final(busy)
    await _until_finals(comparing, 2)
    for communicator in (busy, comparing, elsewhere):
        await communicator.disconnect()


async def test_the_replies_per_minute_count_every_reply_of_a_comparison(alice, conversation, openai_fake, settings):
    settings.CHAT_REPLIES_PER_MINUTE, settings.CHAT_MAX_CONCURRENT_REPLIES = 3, 0
    keys = await _offer(
        openai_fake,
        conversation,
        "fake-normal@tokens=4",
        "fake-normal@tokens=5",
        *(f"fake-normal@tokens={n}" for n in (6, 7)),
    )
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="four", compare=keys)
    too_many = await composer_error(communicator)
    await send(communicator, action="send", text="two", compare=keys[:2])
    await _until_finals(communicator, 2)
    await send(communicator, action="send", text="two more", compare=keys[:2])
    error = await composer_error(communicator)
    await communicator.disconnect()
    assert "That is 4 replies at once (one per model), more than the 3 replies allowed in a minute." in too_many
    assert "3 replies in the last minute, the most allowed. Try again in" in error


async def test_an_exhausted_budget_refuses_a_comparison(alice, conversation, openai_fake):
    keys = await _offer(openai_fake, conversation, "fake-normal@tokens=4", "fake-normal@tokens=5")
    await database_sync_to_async(Budget.objects.create)(user=alice, max_tokens=10)
    await database_sync_to_async(UsageDay.add)(keys[0], RunUsage(5, 5), user_id=alice.pk)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="over budget", compare=keys)
    error = await composer_error(communicator)
    await communicator.disconnect()
    assert "budget" in error
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()


@pytest.mark.parametrize(
    ("compare", "says"),
    [
        (["openai:fake-normal"], "Choose two to four models to compare."),
        (["openai:fake-normal", "openai:fake-normal"], "Choose each model to compare only once."),
        (["openai:fake-normal", "openai:no-such-model"], "That model is not offered here."),
        ([f"openai:fake-normal@tokens={n}" for n in range(1, 6)], "Choose two to four models to compare."),
        ("openai:fake-normal", "Choose two to four models to compare."),
    ],
)
async def test_a_comparison_needs_two_to_four_distinct_offered_models(alice, conversation, openai_fake, compare, says):
    await _offer(openai_fake, conversation, "fake-normal", *(f"fake-normal@tokens={n}" for n in range(1, 6)))
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="compare", compare=compare)
    error = await composer_error(communicator)
    await communicator.disconnect()
    assert says in error
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_a_comparison_and_the_choice_work_without_javascript(alice, conversation, openai_fake):
    keys = await _offer(openai_fake, conversation, "fake-normal@tokens=4", "fake-normal@tokens=6")
    client = AsyncClient()
    await client.aforce_login(alice)

    refused = await client.post(reverse("send", args=[conversation.id]), {"text": "kept", "compare": keys[:1]})
    assert refused.status_code == 409
    body = refused.content.decode()
    assert "Choose two to four models to compare." in body and ">kept</textarea>" in body
    assert f'value="{keys[0]}" checked' in body and '<details class="compare" id="compare" open>' in body

    response = await client.post(reverse("send", args=[conversation.id]), {"text": "both, please", "compare": keys})
    assert response.status_code == 302
    for running in generation.get_all(conversation.id):
        await asyncio.wait_for(running.done.wait(), 20)
    replies = await _replies(conversation)
    assert [r.model_key for r in replies] == keys and all(r.status == "complete" for r in replies)
    page = (await client.get(conversation.get_absolute_url())).content.decode()
    assert page.count('class="comparison-column"') == 2
    assert f'action="{reverse("switch", args=[conversation.id, replies[1].id])}"' in page

    chosen = await client.post(reverse("switch", args=[conversation.id, replies[1].id]))
    assert chosen.status_code == 302
    assert [m.id for m in await _branch(conversation)][-1] == replies[1].id
    page = (await client.get(conversation.get_absolute_url())).content.decode()
    assert 'class="comparison"' not in page and "2 / 2" in page


async def test_charlie_cannot_start_a_comparison_in_alices_conversation(charlie, conversation, openai_fake):
    keys = await _offer(openai_fake, conversation, "fake-normal@tokens=4", "fake-normal@tokens=6")
    client = AsyncClient()
    await client.aforce_login(charlie)
    response = await client.post(reverse("send", args=[conversation.id]), {"text": "mine now", "compare": keys})
    assert response.status_code == 404
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_a_socket_joining_after_one_column_ended_gets_its_final_bubble_and_the_others_snapshots(
    alice, conversation, openai_fake
):
    models = ("fake-normal@tokens=3", "fake-long@tokens=150,delay=0.01")
    keys = await _offer(openai_fake, conversation, *models)
    first = await connect(alice, conversation)
    await send(first, action="send", text="one quick, one slow", compare=keys)
    await _until_finals(first, 1)
    quick, slow = await _replies(conversation)
    assert len(generation.get_all(conversation.id)) == 1  # the quick one is saved and unregistered

    second = await connect(alice, conversation)
    joined = await _until_finals(second, 2)
    await _until_finals(first, 1)
    await first.disconnect()
    await second.disconnect()

    assert 'class="comparison-column"' not in joined[0]  # bubbles in place, not new columns
    assert is_final(joined[0]) and f'id="msg-{quick.id}"' in joined[0] and "Continue with this one" in joined[0]
    assert is_snapshot(joined[1]) and f'id="msg-{slow.id}"' in joined[1]
    assert column_view(joined, slow.id).text() == expected_text(models[1])


def _compare_rows(conversation, *models) -> tuple[Message, list[Message]]:
    question = Message.objects.create(conversation=conversation, role="user", content="compare")
    replies = [
        Message.objects.create(
            conversation=conversation,
            parent=question,
            role="assistant",
            content=model,
            provider="openai",
            model=model,
            parameters={"comparison": "c1"},
        )
        for model in models
    ]
    return question, replies


def test_an_undecided_comparison_shows_its_first_reply_and_lists_every_column(conversation):
    question, replies = _compare_rows(conversation, "a", "b", "c")
    shown = conversation.transcript()
    assert [m.id for m in shown] == [question.id, replies[0].id]
    assert shown[-1].compared == replies and all(r.column for r in shown[-1].compared)
    assert shown.last_replies == replies
    assert (shown[-1].sibling_number, shown[-1].sibling_count) == (1, 3)


def test_a_reply_switched_to_is_the_branch_and_the_columns_are_gone(conversation):
    question, replies = _compare_rows(conversation, "a", "b", "c")
    replies[2].show()
    shown = conversation.transcript()
    assert [m.id for m in shown] == [question.id, replies[2].id]
    assert shown[-1].compared is None and not shown[-1].column
    assert shown.last_replies == [shown[-1]]
    assert (shown[-1].sibling_number, shown[-1].previous_sibling) == (3, replies[1].id)


def test_a_message_after_an_undecided_comparison_goes_on_from_the_first_reply_without_columns(conversation):
    _question, replies = _compare_rows(conversation, "a", "b")
    Message.objects.create(conversation=conversation, parent=replies[0], role="user", content="next")
    shown = conversation.transcript()
    assert [m.content for m in shown] == ["compare", "a", "next"]
    assert shown[1].compared is None and shown.last_replies == []


async def test_a_dead_workers_comparison_is_settled_as_columns_each_interrupted(alice, conversation):
    _question, replies = await database_sync_to_async(_compare_rows)(conversation, "a", "b")
    silent = timezone.now() - timedelta(hours=1)  # no worker has vouched for them since: dead on Redis too
    await database_sync_to_async(Message.objects.filter(pk__in=[r.pk for r in replies]).update)(
        status="streaming", heartbeat_at=silent
    )
    communicator = await connect(alice, conversation)
    frames = [await communicator.receive_from(timeout=10) for _ in range(4)]  # announced, then joined
    await communicator.disconnect()

    assert [r.status for r in await _replies(conversation)] == ["interrupted", "interrupted"]
    for reply in replies:
        shown = [f for f in frames if f'id="msg-{reply.id}"' in f]
        assert len(shown) == 2 and all("status-interrupted" in f and "Continue with this one" in f for f in shown)
        assert not any("Retry" in f for f in shown)


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="on Redis, test_faults loses frames in a real restart")
async def test_a_socket_that_missed_frames_of_every_column_is_shown_each_again_with_no_gap(
    alice, conversation, openai_fake
):
    models = ("fake-long@tokens=120,delay=0.01", "fake-long@tokens=110,delay=0.011")
    keys = await _offer(openai_fake, conversation, *models)
    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="lose some frames", compare=keys)
    shown = [await communicator.receive_from(timeout=10)]
    while 'class="comparison"' not in shown[-1]:
        shown.append(await communicator.receive_from(timeout=10))
    replies = await _replies(conversation)
    while not all(any(f"#msg-{r.id}-" in f for f in shown) for r in replies):
        shown.append(await communicator.receive_from(timeout=10))
    layer, group = get_channel_layer(), frames.group_name(conversation.id)
    (channel,) = layer.groups[group]
    running = generation.get_all(conversation.id)
    # Out of the group while three frames of each go out: lost to it, as when Redis restarts.
    await layer.group_discard(group, channel)
    lost_after, deadline = [g.seq for g in running], time.monotonic() + 5
    while True:  # polled every 5 ms, bounded: a generation announces no frames to a test
        if all(g.seq >= n + 3 for g, n in zip(running, lost_after, strict=True)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)  # sleep-ok: a bounded poll (a generation announces no frames)
    await layer.group_add(group, channel)
    shown += await _until_finals(communicator, 2)
    await communicator.disconnect()

    for reply, model in zip(replies, models, strict=True):
        assert sum(is_snapshot(f) and f'id="msg-{reply.id}"' in f for f in shown) == 1, "sent again, once"
        assert column_view(shown, reply.id).text() == expected_text(model)
