"""What the benchmark commands (benchstreams, benchscaleout) share.

The tokens they read back (the fake provider's ``timestamped`` scenario), the
final bubble that ends a reply, the bench user's session and conversations,
the fake provider's options, and rounding for statistics that may be missing.
Percentiles are ``conversations.stats.percentile`` (nearest rank, as in the
admin's statistics): always one of the samples, ``None`` without samples.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore

from conversations.models import Conversation, Message

TOKEN = re.compile(r"t(\d{19})(?!\d)")  # markdown may drop the trailing space
FINAL = re.compile(r'class="msg msg-assistant status-(?!streaming)')


def prepare(n: int, model_key: str = "openai:fake-timestamped") -> tuple[str, list[Conversation]]:
    """The bench user's session cookie and ``n`` new conversations on the fake's
    timestamped model (or ``model_key``); replies an earlier run left streaming are interrupted."""
    user, _ = get_user_model().objects.get_or_create(username="bench")
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    Message.objects.filter(conversation__owner=user, status=Message.Status.STREAMING).update(
        status=Message.Status.INTERRUPTED
    )
    conversations = [Conversation.objects.create(owner=user, title=f"bench {i}", model_key=model_key) for i in range(n)]
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", conversations


def provider_options(options: dict) -> list[str]:
    """``manage.py fakeprovider`` arguments from a command's --tokens, --delay and --first-delay."""
    tokens, delay, first_delay = (str(options[key]) for key in ("tokens", "delay", "first_delay"))
    return ["--tokens", tokens, "--delay", delay, "--first-delay", first_delay]


def rounded(value: float | None, digits: int) -> float | None:
    """``round(value, digits)``, and None for a statistic without samples."""
    return None if value is None else round(value, digits)
