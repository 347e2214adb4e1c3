"""What replies used and cost, per conversation and model, priced from the model catalogue."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Sum

from conversations import providers
from conversations.models import Message

MILLION = Decimal(1_000_000)


def model_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """{"provider:model": (input, output)} in USD per million tokens, from the catalog."""
    return providers.prices()


def cost(usage: list[tuple[str, int, int]], prices: dict[str, tuple[Decimal, Decimal]]) -> Decimal | None:
    """USD for (model_key, input_tokens, output_tokens) rows; None when a model
    that used tokens has no price (a partial sum would look complete)."""
    total = Decimal(0)
    for key, tokens_in, tokens_out in usage:
        if not tokens_in and not tokens_out:
            continue
        if key not in prices:
            return None
        price_in, price_out = prices[key]
        total += (Decimal(tokens_in or 0) * price_in + Decimal(tokens_out or 0) * price_out) / MILLION
    return total


@dataclass
class ModelUsage:
    """What one conversation's replies used, per model (filled for a list page in one query)."""

    rows: list[tuple[str, int, int]] = field(default_factory=list)

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
        .annotate(tokens_in=Sum("input_tokens"), tokens_out=Sum("output_tokens"))
        .order_by("conversation_id", "provider", "model")
    )
    for row in rows:
        key = f"{row['provider']}:{row['model']}"
        usage[row["conversation_id"]].rows.append((key, row["tokens_in"] or 0, row["tokens_out"] or 0))
    return usage
