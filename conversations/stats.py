"""Reply statistics for the admin's stats page: aggregates only, no conversation or message is named."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations.models import Message

# p95 is computed in Python; past this many replies in the period the newest are used.
TTFT_SAMPLE_LIMIT = 100_000


def percentile(values: list[int], pct: float) -> float | None:
    """Nearest-rank percentile (what p95 usually means on a dashboard)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass
class StatsRow:
    day: date | None
    model_key: str
    replies: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_mean: float | None = None
    ttft_p95: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.replies if self.replies else 0.0


def reply_stats(days: int) -> dict:
    """Replies per model per day over the last ``days`` days, and per-model
    totals: aggregates only, no conversation or message is named."""
    since = timezone.now() - timedelta(days=days)
    replies = Message.objects.replies().finished().filter(created_at__gte=since)
    grouped = (
        replies.annotate(day=TruncDate("created_at"))
        .values("day", "provider", "model")
        .annotate(
            replies=Count("id"),
            errors=Count("id", filter=Q(status=Message.Status.ERROR)),
            tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"),
            ttft_mean=Avg("first_token_ms"),
        )
        .order_by("-day", "provider", "model")
    )
    samples = (
        replies.filter(first_token_ms__isnull=False)
        .annotate(day=TruncDate("created_at"))
        .order_by("-created_at")
        .values_list("day", "provider", "model", "first_token_ms")[:TTFT_SAMPLE_LIMIT]
    )
    by_day, by_model = defaultdict(list), defaultdict(list)
    for day, provider, model, ms in samples:
        by_day[(day, provider, model)].append(ms)
        by_model[(provider, model)].append(ms)

    rows, totals = [], {}
    for g in grouped:
        key = f"{g['provider']}:{g['model']}" if g["provider"] else g["model"]
        rows.append(
            StatsRow(
                day=g["day"],
                model_key=key,
                replies=g["replies"],
                errors=g["errors"],
                tokens_in=g["tokens_in"] or 0,
                tokens_out=g["tokens_out"] or 0,
                ttft_mean=g["ttft_mean"],
                ttft_p95=percentile(by_day[(g["day"], g["provider"], g["model"])], 95),
            )
        )
        total = totals.setdefault(key, StatsRow(day=None, model_key=key))
        total.replies += g["replies"]
        total.errors += g["errors"]
        total.tokens_in += g["tokens_in"] or 0
        total.tokens_out += g["tokens_out"] or 0
    for (provider, model), values in by_model.items():
        key = f"{provider}:{model}" if provider else model
        if key in totals:
            totals[key].ttft_mean = sum(values) / len(values)
            totals[key].ttft_p95 = percentile(values, 95)
    return {"rows": rows, "totals": sorted(totals.values(), key=lambda r: r.model_key), "since": since}
