"""What replies used and cost, per conversation and model, priced from the model catalogue."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum

from conversations import providers
from conversations.models import Message

MILLION = Decimal(1_000_000)
# Replies that ended whole yet carry no token count: their server sent no usage.
UNMETERED = Q(status=Message.Status.COMPLETE) & (Q(input_tokens__isnull=True) | Q(output_tokens__isnull=True))


def model_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """{"endpoint:model": (input, output)} in USD per million tokens, from the catalog."""
    return providers.prices()


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
