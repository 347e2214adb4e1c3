"""Who may read what users wrote: a grant of its own, apart from seeing that conversations exist."""

from __future__ import annotations

PERMISSION = "conversations.review_conversation"


def can_review(user) -> bool:
    """Reading transcripts is its own permission; superusers have every permission."""
    return user.is_active and user.is_staff and user.has_perm(PERMISSION)
