"""What replies used and cost, per conversation and model, priced from the model catalogue."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import formats, timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _

from conversations import providers
from conversations.models import Budget, Message, UsageDay

MILLION = Decimal(1_000_000)
# Replies that ended whole yet carry no token count: their server sent no usage.
UNMETERED = Q(status=Message.Status.COMPLETE) & (Q(input_tokens__isnull=True) | Q(output_tokens__isnull=True))


def model_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """{"endpoint:model": (input, output)} in USD per million tokens, from the catalog."""
    return providers.prices()


def priced(model_key: str, tokens_in: int, tokens_out: int, prices: dict | None = None) -> Decimal | None:
    """USD for these tokens of one model; None when it has no price."""
    price = (model_prices() if prices is None else prices).get(model_key)
    if price is None:
        return None
    return (Decimal(tokens_in) * price[0] + Decimal(tokens_out) * price[1]) / MILLION


def cost(usage: list[tuple[str, int | None, int | None]], prices: dict[str, tuple[Decimal, Decimal]]) -> Decimal | None:
    """USD for (model_key, input_tokens, output_tokens) rows; None when a model
    that used tokens has no price, or when a row's tokens are unknown (None: a
    server that reports no usage), since a partial sum would look complete."""
    total = Decimal(0)
    for key, tokens_in, tokens_out in usage:
        if tokens_in is None or tokens_out is None:
            return None
        if not tokens_in and not tokens_out:
            continue
        if key not in prices:
            return None
        price_in, price_out = prices[key]
        total += (Decimal(tokens_in or 0) * price_in + Decimal(tokens_out or 0) * price_out) / MILLION
    return total


@dataclass
class ModelUsage:
    """What one conversation's replies used, per model (filled for a list page in one query).

    A row's tokens are None when a complete reply of that model has no count
    (its server reported no usage): what it used is unknown, not zero."""

    rows: list[tuple[str, int | None, int | None]] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.rows]


def usage_by_conversation(conversation_ids) -> dict:
    """{conversation_id: ModelUsage} for the given conversations, in one query."""
    usage: dict = defaultdict(ModelUsage)
    rows = (
        Message.objects.replies()
        .filter(conversation_id__in=list(conversation_ids))
        .exclude(provider="")
        .values("conversation_id", "provider", "model")
        .annotate(
            tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"),
            unmetered=Count("id", filter=UNMETERED),
        )
        .order_by("conversation_id", "provider", "model")
    )
    for row in rows:
        key = f"{row['provider']}:{row['model']}"
        if row["unmetered"]:
            usage[row["conversation_id"]].rows.append((key, None, None))
        else:
            usage[row["conversation_id"]].rows.append((key, row["tokens_in"] or 0, row["tokens_out"] or 0))
    return usage


# --- budgets ------------------------------------------------------------------
@dataclass
class Spent:
    tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0  # calls of models with no price: they cost nothing here
    unmetered_calls: int = 0  # calls whose tokens are partly estimated


def spent(user_ids, since: date, prices: dict | None = None) -> Spent:
    """Tokens and cost of ``user_ids`` (a list or a subquery) from ``since`` on, from the ledger."""
    prices = model_prices() if prices is None else prices
    total = Spent()
    rows = (
        UsageDay.objects.filter(user_id__in=user_ids, day__gte=since)
        .values("model_key")
        .annotate(
            tokens_in=Sum("input_tokens"), tokens_out=Sum("output_tokens"), calls=Sum("calls"), un=Sum("unmetered")
        )
    )
    for row in rows:
        total.tokens += row["tokens_in"] + row["tokens_out"]
        total.unmetered_calls += row["un"]
        value = priced(row["model_key"], row["tokens_in"], row["tokens_out"], prices)
        if value is None:
            total.unpriced_calls += row["calls"]
        else:
            total.cost += value
    return total


@dataclass
class BudgetState:
    """One budget as it stands now: what was used of it and when it renews."""

    budget: Budget
    spent: Spent
    renews_at: datetime

    @property
    def tokens_left(self) -> int | None:
        limit = self.budget.max_tokens
        return None if limit is None else max(0, limit - self.spent.tokens)

    @property
    def cost_left(self) -> Decimal | None:
        limit = self.budget.max_cost
        return None if limit is None else max(Decimal(0), limit - self.spent.cost)

    @property
    def exhausted(self) -> bool:
        return self.tokens_left == 0 or self.cost_left == 0

    @property
    def shared(self) -> bool:
        return bool(self.budget.group_id and self.budget.shared)

    def refusal(self, now: datetime | None = None) -> str:
        """Why a send is refused, and when to try again."""
        if self.tokens_left == 0:
            used = _("%(used)s of %(limit)s tokens") % {
                "used": formats.number_format(self.spent.tokens, force_grouping=True),
                "limit": formats.number_format(self.budget.max_tokens, force_grouping=True),
            }
        else:
            used = _("$%(used)s of $%(limit)s") % {
                "used": formats.number_format(self.spent.cost, 2, force_grouping=True),
                "limit": formats.number_format(self.budget.max_cost, 2, force_grouping=True),
            }
        context = {"used": used, "when": timeuntil(self.renews_at, now)}
        daily = self.budget.period == Budget.Period.DAY
        if self.shared:
            context["group"] = self.budget.group.name
            if daily:
                return _("Your group %(group)s has used its daily budget (%(used)s). It renews in %(when)s.") % context
            return _("Your group %(group)s has used its monthly budget (%(used)s). It renews in %(when)s.") % context
        if daily:
            return _("You have used your daily budget (%(used)s). It renews in %(when)s.") % context
        return _("You have used your monthly budget (%(used)s). It renews in %(when)s.") % context


def budgets_for(user, now: datetime | None = None) -> list[BudgetState]:
    """Every budget that binds ``user``, with what was used of it, tightest first."""
    prices = model_prices()
    states, memo = [], {}
    for budget in Budget.objects.for_user(user):
        first, renews_at = budget.period_bounds(now)
        shared = bool(budget.group_id and budget.shared)
        key = (budget.group_id if shared else None, first)
        if key not in memo:
            users = budget.group.user_set.values("pk") if shared else [user.pk]
            memo[key] = spent(users, first, prices)
        states.append(BudgetState(budget, memo[key], renews_at))
    return sorted(states, key=lambda s: (not s.exhausted, s.renews_at))


def budget_refusal(user, now: datetime | None = None) -> str | None:
    """The reason ``user`` may not start a reply now, or None."""
    for state in budgets_for(user, now):
        if state.exhausted:
            return state.refusal(now)
    return None


@dataclass
class DayRow:
    day: date
    model_key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal | None  # None: the model has no price
    unmetered: int


def daily_usage(user, days: int = 30) -> list[DayRow]:
    """``user``'s tokens and cost by model by day, newest first, over ``days`` days."""
    prices = model_prices()
    since = timezone.localdate() - timedelta(days=days - 1)
    rows = []
    for row in UsageDay.objects.filter(user=user, day__gte=since).order_by("-day", "model_key"):
        cost_ = priced(row.model_key, row.input_tokens, row.output_tokens, prices)
        rows.append(
            DayRow(row.day, row.model_key, row.calls, row.input_tokens, row.output_tokens, cost_, row.unmetered)
        )
    return rows
