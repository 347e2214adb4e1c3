"""Helpers for reviewing conversations in the admin: prices, the message tree,
reply statistics and the JSON Lines export.  The admin classes live in
conversations.admin; this module holds what they compute."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations import providers
from conversations.models import Conversation, Feedback, Flag, Message, Transcript

PERMISSION = "conversations.review_conversation"
MILLION = Decimal(1_000_000)
# p95 is computed in Python; past this many replies in the period the newest are used.
TTFT_SAMPLE_LIMIT = 100_000


def can_review(user) -> bool:
    """Reading transcripts is its own permission; superusers have every permission."""
    return user.is_active and user.is_staff and user.has_perm(PERMISSION)


# --- Prices -----------------------------------------------------------------


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
        Message.objects.filter(conversation_id__in=list(conversation_ids), role=Message.Role.ASSISTANT)
        .exclude(provider="")
        .values("conversation_id", "provider", "model")
        .annotate(tokens_in=Sum("input_tokens"), tokens_out=Sum("output_tokens"))
        .order_by("conversation_id", "provider", "model")
    )
    for row in rows:
        key = f"{row['provider']}:{row['model']}"
        usage[row["conversation_id"]].rows.append((key, row["tokens_in"] or 0, row["tokens_out"] or 0))
    return usage


# --- The review page --------------------------------------------------------


def review_context(conversation: Conversation) -> dict:
    """The review page's data in three queries: messages, feedback, flags."""
    messages = list(conversation.messages.all())
    feedback = defaultdict(list)
    for f in Feedback.objects.filter(message__conversation=conversation).select_related("user"):
        feedback[f.message_id].append(f)
    flags = defaultdict(list)
    for flag in Flag.objects.filter(conversation=conversation).select_related("reviewer"):
        flags[flag.message_id].append(flag)
    for m in messages:
        m.review_feedback = feedback.get(m.id, [])
        m.review_flags = flags.get(m.id, [])
    return {"nodes": Transcript(messages).tree(), "conversation_flags": flags.get(None, [])}


# --- Statistics -------------------------------------------------------------


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
    replies = Message.objects.filter(role=Message.Role.ASSISTANT, created_at__gte=since).exclude(
        status=Message.Status.STREAMING
    )
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


# --- Export -----------------------------------------------------------------

MESSAGE_FIELDS = (
    "role",
    "content",
    "reasoning",
    "status",
    "provider",
    "model",
    "parameters",
    "finish_reason",
    "finish_reason_raw",
    "input_tokens",
    "output_tokens",
    "first_token_ms",
    "duration_ms",
    "error",
    "error_kind",
)
EXPORT_BATCH = 100


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def conversation_record(conversation: Conversation) -> dict:
    """One conversation with every message (all branches) and its metadata.
    Expects messages, their feedback and the flags prefetched."""
    nodes = Transcript(conversation.messages.all()).tree()
    return {
        "id": str(conversation.id),
        "owner": conversation.owner.get_username(),
        "title": conversation.title,
        "model_key": conversation.model_key,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "archived": conversation.archived,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "flags": [
            {
                "message": str(f.message_id) if f.message_id else None,
                "reason": f.reason,
                "note": f.note,
                "resolved": f.resolved,
                "created_at": _iso(f.created_at),
            }
            for f in conversation.flags.all()
        ],
        "messages": [
            {
                "id": str(n.message.id),
                "parent": str(n.message.parent_id) if n.message.parent_id else None,
                "current_branch": n.current,
                "superseded": n.superseded,
                **{name: getattr(n.message, name) for name in MESSAGE_FIELDS},
                "created_at": _iso(n.message.created_at),
                "completed_at": _iso(n.message.completed_at),
                "feedback": [
                    {"rating": f.rating, "comment": f.comment, "updated_at": _iso(f.updated_at)}
                    for f in n.message.feedback.all()
                ],
            }
            for n in nodes
        ],
    }


def _export_batch(ids) -> list[str]:
    conversations = (
        Conversation.objects.filter(pk__in=ids)
        .select_related("owner")
        .prefetch_related("messages__feedback", "flags")
        .order_by("created_at", "id")
    )
    return [json.dumps(conversation_record(c), ensure_ascii=False) + "\n" for c in conversations]


def export_lines(conversation_ids):
    """JSON Lines, one conversation per line, fetched in batches so that a
    large export neither holds everything in memory nor runs a query per row."""
    ids = list(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        yield from _export_batch(ids[start : start + EXPORT_BATCH])


async def aexport_lines(conversation_ids):
    """The same lines for an ASGI server, which streams async iterators only
    (it would read a sync one whole, with a warning)."""
    ids = list(conversation_ids)
    for start in range(0, len(ids), EXPORT_BATCH):
        for line in await sync_to_async(_export_batch)(ids[start : start + EXPORT_BATCH]):
            yield line
