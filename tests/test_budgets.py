"""Token and cost budgets: a ledger of what each user's calls used (kept apart
from the messages), daily or monthly budgets per user, per group member, per
group together or for everyone, checked before the provider is called, with
what is left on a usage page and every user's usage in the admin."""

import json
from datetime import datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from conversations import usage
from conversations.models import Budget, Message, RunUsage, UsageDay
from devtools.fakeprovider import expected_text
from tests.wsclient import composer_error, connect, delta_text, send, until_final

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def _reply(user, conversation, text="hello") -> list[str]:
    communicator = await connect(user, conversation)
    await send(communicator, action="send", text=text)
    frames = await until_final(communicator)
    await communicator.disconnect()
    return frames


def _spend(user, tokens: int, model_key="openai:fake-normal") -> None:
    UsageDay.add(model_key, RunUsage(tokens // 2, tokens - tokens // 2), user_id=user.pk)


async def test_a_reply_adds_what_it_used_to_its_owners_ledger(alice, conversation, openai_fake):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    communicator = await connect(alice, conversation)
    for text in ("one", "two"):
        await send(communicator, action="send", text=text)
        await until_final(communicator)
    await communicator.disconnect()
    row = await database_sync_to_async(UsageDay.objects.get)(user=alice)
    assert (row.day, row.model_key, row.calls, row.unmetered) == (timezone.localdate(), "openai:fake-normal", 2, 0)
    tokens = await database_sync_to_async(list)(Message.objects.replies().values_list("input_tokens", "output_tokens"))
    assert len(tokens) == 2 and all(i and o for i, o in tokens)
    assert row.input_tokens == sum(i for i, _ in tokens) and row.output_tokens == sum(o for _, o in tokens)


def test_deleting_a_conversation_gives_nothing_back_to_a_budget(alice, conversation):
    Budget.objects.create(user=alice, max_tokens=100)
    _spend(alice, 100)
    conversation.delete()
    assert usage.budget_refusal(alice).startswith("You have used your daily budget (100 of 100 tokens).")


def _streaming(conversation) -> Message:
    return Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", provider="openai", model="m"
    )


def test_a_reply_stopped_before_the_server_reported_usage_counts_an_estimate(alice, conversation):
    reply = _streaming(conversation)
    reply.finish(Message.Status.STOPPED, content="x" * 400, reasoning="")
    reply.save_finished()
    row = UsageDay.objects.get(user=alice)
    assert (row.input_tokens, row.output_tokens, row.unmetered) == (0, 100, 1)


def test_an_error_before_any_text_counts_nothing(alice, conversation):
    reply = _streaming(conversation)
    reply.finish(Message.Status.ERROR, content="", reasoning="", error="401")
    reply.save_finished()
    assert not UsageDay.objects.exists()


async def test_a_send_over_the_daily_token_budget_is_refused_says_when_it_renews_and_saves_nothing(
    alice, conversation, openai_fake
):
    await sync_to_async(openai_fake)(conversation, "fake-normal")
    await database_sync_to_async(Budget.objects.create)(user=alice, max_tokens=10)
    assert delta_text(await _reply(alice, conversation)) == expected_text("fake-normal")  # 0 used: it goes

    communicator = await connect(alice, conversation)
    await send(communicator, action="send", text="还有一个问题 one more")
    error = await composer_error(communicator)
    await communicator.disconnect()
    assert "You have used your daily budget (" in error and "of 10 tokens). It renews in" in error
    texts = await database_sync_to_async(list)(Message.objects.filter(role="user").values_list("content", flat=True))
    assert texts == ["hello"]


def test_the_refusal_says_when_the_budget_renews(alice):
    Budget.objects.create(user=alice, max_tokens=10, period=Budget.Period.MONTH)
    _spend(alice, 12)
    now = timezone.make_aware(datetime(2026, 12, 30, 12, 0))
    UsageDay.objects.update(day=now.date())
    assert usage.budget_refusal(alice, now) == (
        "You have used your monthly budget (12 of 10 tokens). It renews in 1\xa0day, 12\xa0hours."
    )


def test_a_months_budget_renews_on_the_first_of_the_next_month(alice):
    budget = Budget(user=alice, max_tokens=1, period=Budget.Period.MONTH)
    first, renews = budget.period_bounds(timezone.make_aware(datetime(2026, 12, 31, 23, 0)))
    assert (first.isoformat(), renews.date().isoformat()) == ("2026-12-01", "2027-01-01")
    assert not usage.budgets_for(alice)  # an unsaved budget binds nobody


def test_yesterdays_use_does_not_count_against_todays_budget(alice):
    Budget.objects.create(user=alice, max_tokens=10)
    _spend(alice, 50)
    UsageDay.objects.update(day=timezone.localdate() - timezone.timedelta(days=1))
    assert usage.budget_refusal(alice) is None


def test_a_group_budget_binds_each_member_on_their_own(alice, charlie):
    team = Group.objects.create(name="team")
    team.user_set.add(alice, charlie)
    Budget.objects.create(group=team, max_tokens=100)
    _spend(alice, 100)
    assert "You have used your daily budget" in usage.budget_refusal(alice)
    assert usage.budget_refusal(charlie) is None


def test_a_shared_group_budget_is_used_up_by_all_its_members_together(alice, charlie, django_user_model):
    team = Group.objects.create(name="研究组")
    team.user_set.add(alice, charlie)
    outsider = django_user_model.objects.create_user("dave", password="pw")
    Budget.objects.create(group=team, shared=True, max_tokens=100)
    _spend(alice, 60)
    _spend(charlie, 40)
    _spend(outsider, 1000)
    assert usage.budget_refusal(charlie).startswith("Your group 研究组 has used its daily budget (100 of 100 tokens).")
    assert usage.budget_refusal(outsider) is None


def test_a_budget_for_everyone_binds_every_user(alice, charlie):
    Budget.objects.create(max_tokens=10)
    _spend(charlie, 10)
    assert usage.budget_refusal(charlie) and usage.budget_refusal(alice) is None


def test_a_cost_budget_prices_the_ledger_from_the_catalogue(alice, settings):
    settings.CHAT_MODEL_OPTIONS = json.dumps({"openai:priced": {"price_in": 1.0, "price_out": 3.0}})
    Budget.objects.create(user=alice, max_cost=Decimal("0.50"))
    UsageDay.add("openai:priced", RunUsage(100_000, 100_000), user_id=alice.pk)  # $0.10 + $0.30
    UsageDay.add("openai:unpriced", RunUsage(10**9, 10**9), user_id=alice.pk)  # no price: counts nothing here
    [state] = usage.budgets_for(alice)
    assert (state.spent.cost, state.cost_left, state.spent.unpriced_calls) == (Decimal("0.4"), Decimal("0.10"), 1)
    UsageDay.add("openai:priced", RunUsage(0, 40_000), user_id=alice.pk)  # + $0.12
    assert usage.budget_refusal(alice).startswith("You have used your daily budget ($0.52 of $0.50).")


def test_the_no_js_send_shows_the_budget_refusal_and_keeps_the_text(alice, alice_client, conversation):
    Budget.objects.create(user=alice, max_tokens=1)
    _spend(alice, 5)
    response = alice_client.post(reverse("send", args=[conversation.id]), {"text": "keep me"})
    body = response.content.decode()
    assert "You have used your daily budget (5 of 1 tokens)" in body
    assert "keep me" in body
    assert not Message.objects.filter(conversation=conversation).exists()


def test_the_usage_page_shows_what_is_left_and_use_by_model_by_day(alice, alice_client, charlie, settings):
    Budget.objects.create(user=alice, max_tokens=1000)
    _spend(alice, 300)
    _spend(alice, 20, "anthropic:other")
    _spend(charlie, 777_777, "openai:charlies-model")
    body = alice_client.get(reverse("usage")).content.decode()
    assert "680 of 1,000 tokens left" in body
    assert "openai:fake-normal" in body and "anthropic:other" in body
    assert "charlies-model" not in body and "777" not in body


def test_the_usage_page_says_when_no_budget_applies(alice_client):
    body = alice_client.get(reverse("usage")).content.decode()
    assert 'id="no-budget"' in body and 'id="no-usage"' in body


def test_the_usage_page_needs_a_login(client):
    response = client.get(reverse("usage"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_staff_see_every_users_usage_in_the_admin(alice, charlie, client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", password="pw")
    _spend(alice, 10)
    _spend(charlie, 20, "openai:charlies-model")
    client.force_login(staff)
    body = client.get(reverse("admin:conversations_usageday_changelist")).content.decode()
    assert "alice" in body and "charlie" in body and "openai:charlies-model" in body
    assert client.get(reverse("admin:conversations_budget_add")).status_code == 200


def test_a_user_without_staff_cannot_see_the_usage_admin(alice_client):
    response = alice_client.get(reverse("admin:conversations_usageday_changelist"))
    assert response.status_code == 302


def test_a_reply_whose_conversation_was_deleted_while_it_was_written_still_counts(alice, conversation):
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", provider="openai", model="m"
    )
    conversation.delete()
    reply.finish(Message.Status.STOPPED, content="y" * 40, reasoning="")
    with pytest.raises(Message.DoesNotExist):
        reply.save_finished()
    row = UsageDay.objects.get(user=alice)
    assert (row.calls, row.output_tokens) == (1, 10)
