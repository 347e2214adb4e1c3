"""Every fragment a conversation's open tabs receive, and how it reaches them.

Group names, ``broadcast``, the control requests to whichever worker runs a
reply (Stop, snapshots), ``announce`` for a reply that ended elsewhere, and the
renderers: ``bubble`` (the one ``_message.html``, as the page, the stream, the
final swap and admin review draw it), ``stream_frame`` (what one feed of the
reply's ``StreamingMarkdown`` changed) and its fast path ``delta_html`` beside
the template it mirrors, ``new_bubbles``, ``new_comparison`` and ``nav_moved``, and the
composer's acknowledgement and error for the socket that sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from uuid import UUID

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html

from conversations.models import Conversation, Feedback, Message, SidebarPage, Transcript
from conversations.streaming_markdown import StreamingMarkdown, StreamUpdate

logger = logging.getLogger(__name__)


def group_name(conversation_id: UUID | str) -> str:
    return f"conversation_{conversation_id}"


def user_group(user_id: int | str) -> str:
    """Every open socket of one user, on any worker: told when their sessions may
    have ended, or their conversations were deleted."""
    return f"user_{user_id}"


def control_group(conversation_id: UUID | str) -> str:
    """Where any worker asks the process that runs a conversation's reply to
    stop it or to send a snapshot (kept apart from the frames' group so the
    generation does not receive its own broadcasts)."""
    return f"conversation_{conversation_id}_control"


def run_group(run_id: UUID | str) -> str:
    """The listeners on other workers of one run's API events (see ``conversations.runs``)."""
    return f"run_{run_id}"


# --- rendering ---------------------------------------------------------------


def bubble(message: Message, *, oob: bool = True, replaces: UUID | None = None, notice: str = "") -> str:
    """The message's bubble; ``oob`` swaps it in place of ``#msg-<id>`` (or of
    ``#msg-<replaces>``, the reply a Retry supersedes); ``notice`` says that
    what it shows is not saved yet."""
    context = {"msg": message, "oob": oob, "replaces": replaces, "notice": notice}
    return render_to_string("conversations/_message.html", context)


def shown_streaming(message: Message, stream: StreamingMarkdown, reasoning: str, thought_ms: int | None) -> Message:
    """A copy of the reply being written as its frames drew it: the text
    ``stream`` holds, ``reasoning`` so far, ``thought_ms`` once the answer started."""
    shown = copy.copy(message)
    shown.content, shown.reasoning, shown.status = stream.text, reasoning, Message.Status.STREAMING
    shown.streaming_markdown, shown.reasoning_ms = stream, thought_ms
    return shown


def streaming_bubble(
    message: Message, stream: StreamingMarkdown, reasoning: str, *, thought_ms=None, replaces: UUID | None = None
) -> str:
    """The bubble of a reply being written (see ``shown_streaming``)."""
    return bubble(shown_streaming(message, stream, reasoning, thought_ms), replaces=replaces)


def transcript(conversation: Conversation, shown: Transcript) -> str:
    """The whole transcript window again (a branch changed), for every tab of
    the owner's, with the owner's ratings."""
    messages, earlier_before = shown.window(settings.CHAT_PAGE_MESSAGES)
    context = {
        "conversation": conversation,
        "transcript": Feedback.attach(messages, conversation.owner),
        "earlier_before": earlier_before,
    }
    return render_to_string("conversations/_transcript.html", context)


def new_bubbles(conversation: Conversation, *messages: Message, temporary: bool = False) -> str:
    """The user's message and the reply's empty bubble, appended in every tab,
    with the title and the sidebar entry brought up to date (a temporary chat
    has neither)."""
    context = {"conversation": conversation, "new_messages": messages, "temporary": temporary}
    return render_to_string("conversations/_append.html", context)


def new_comparison(conversation: Conversation, question: Message, replies: list[Message]) -> str:
    """As ``new_bubbles``, for a comparison: the user's message, then a
    column per model, each holding its reply's empty bubble."""
    context = {"conversation": conversation, "new_messages": [question], "compared": replies}
    return render_to_string("conversations/_append.html", context)


def nav_moved(conversation: Conversation) -> str:
    """After a new message, for every tab of the owner's whatever it shows:
    the sidebar entry moves to the top of Today (or of Pinned), and appears
    if the conversation had no message before.  Rendered once for all tabs,
    so without ``aria-current`` (chat.js marks each tab's own entry)."""
    return render_to_string("conversations/_nav_moved.html", {"item": conversation})


def title(conversation: Conversation) -> str:
    """The conversation's new title: header and sidebar entry, out of band
    (chat.js keeps the browser tab's title in step with the header)."""
    return render_to_string("conversations/_title.html", {"conversation": conversation, "header_oob": True})


def library(conversation: Conversation) -> tuple[str, str]:
    """After a pin or an archive: the conversation's header controls (for its
    tabs), and the owner's whole sidebar again (for all their tabs; the entry
    may move between groups, or in or out).  chat.js marks the current entry."""
    controls = render_to_string("conversations/detail.html#library", {"conversation": conversation, "oob": True})
    sidebar = render_to_string(
        "conversations/_sidebar.html", {"sidebar": SidebarPage.load(conversation.owner), "oob": True}
    )
    return controls, sidebar


def nav_title(conversation: Conversation) -> str:
    """The sidebar entry's new title, for every tab of the owner's (rendered
    once, so without ``aria-current``: chat.js marks each tab's own entry)."""
    return render_to_string("conversations/page.html#nav_link", {"item": conversation, "oob": True})


def composer_ack() -> str:
    """To the socket that sent: the message was taken, clear the composer."""
    return render_to_string("conversations/_composer_ack.html")


def composer_error(message: str) -> str:
    """``message`` under the composer (its text is kept); empty: clear the notice."""
    return render_to_string("conversations/_composer_error.html", {"error": message})


def stream_frame(
    message_id: UUID, update: StreamUpdate, stream: StreamingMarkdown, reasoning: str, thinking: Message | None = None
) -> str:
    """One coalesced stream frame: what ``update`` (the last feed of ``stream``)
    changed, ``reasoning`` appended; with ``thinking`` (the reply as of the
    answer's first token), its thinking section folded instead."""
    if not update.append_html and (update.extend or not update.changed) and thinking is None:
        return delta_html(message_id, update.extend, reasoning)
    context = {
        "id": message_id,
        "append": update.append_html,
        "open": update.changed and not update.extend,
        "stream": stream,
        "extend": update.extend,
        "reasoning": reasoning,
        "thinking": thinking,
    }
    return render_to_string("conversations/_frame.html", context)


def delta_html(message_id: UUID, text: str, reasoning: str) -> str:
    """What ``_frame.html`` renders for plain text appended to the open
    paragraph, built directly (most frames are these; a template render per
    frame was a visible share of the server's CPU)."""
    html = format_html('<span hx-swap-oob="beforeend:#msg-{}-tail">{}</span>', message_id, text) if text else ""
    if reasoning:
        html += format_html('<span hx-swap-oob="beforeend:#msg-{}-reasoning">{}</span>', message_id, reasoning)
    return html


# --- delivery ----------------------------------------------------------------


async def broadcast(conversation_id: UUID, html: str, **extra) -> None:
    """Send an HTML fragment to every socket of the conversation."""
    await get_channel_layer().group_send(
        group_name(conversation_id), {"type": "conversation.html", "html": html, **extra}
    )


async def broadcast_to_user(user_id: int, html: str) -> None:
    """Send an HTML fragment to every open socket of one user, whichever conversation it shows."""
    await get_channel_layer().group_send(user_group(user_id), {"type": "conversation.html", "html": html})


# Sidebar moves for one user's tabs are gathered for this long and sent as one
# frame: a user with N tabs starting N replies at once would otherwise cost N²
# frames (benchstreams' one user with 60 sockets: p99 53 -> 230 ms at N=60).
USER_FRAME_GATHER = 0.25  # seconds
_gathered: dict[tuple[asyncio.AbstractEventLoop, int], dict[str, object]] = {}
_flushes: set[asyncio.Task] = set()  # strong references until sent


def broadcast_to_user_soon(user_id: int, key: str, render) -> None:
    """Within USER_FRAME_GATHER, send every open socket of the user what
    ``render()`` (a coroutine function) returns then, with whatever else was
    gathered for them meanwhile, in order; a newer ``render`` with the same
    ``key`` replaces an older one.  Rendered when sent, not now, so that a
    rename meanwhile is not undone by an entry drawn before it.  Call on the loop."""
    loop = asyncio.get_running_loop()
    pending = _gathered.get((loop, user_id))
    if pending is not None:
        pending.pop(key, None)
        pending[key] = render
        return
    _gathered[(loop, user_id)] = {key: render}
    # A fresh context: gathered from an HTTP request, the flush must not run
    # in the request's asgiref context, whose thread executor ends with it.
    loop.call_later(USER_FRAME_GATHER, _flush, loop, user_id, context=contextvars.Context())


def _flush(loop: asyncio.AbstractEventLoop, user_id: int) -> None:
    pending = _gathered.pop((loop, user_id), None)
    if pending:
        task = loop.create_task(_send_gathered(user_id, list(pending.values())))
        _flushes.add(task)
        task.add_done_callback(_flushes.discard)


async def _send_gathered(user_id: int, renders: list) -> None:
    parts = []
    for render in renders:
        try:
            parts.append(await render())
        except Exception:
            logger.exception("a sidebar update for user %s could not be drawn", user_id)
    if any(parts):
        await broadcast_to_user(user_id, "".join(parts))


async def broadcast_delta(conversation_id: UUID, message_id: UUID, seq: int, html: str) -> None:
    """Send frame ``seq`` of the reply ``message_id`` (a joiner drops the ones its snapshot holds)."""
    await get_channel_layer().group_send(
        group_name(conversation_id),
        {"type": "conversation.delta", "message": str(message_id), "seq": seq, "html": html},
    )


async def announce(message: Message) -> None:
    """Replace the bubble of a reply that ended elsewhere (a dead worker's) in every open tab."""
    html = await database_sync_to_async(bubble)(message)
    await broadcast(message.conversation_id, html, final=str(message.id))


async def request_session_check(user_id: int | str) -> None:
    """Ask every open socket of the user to check that its session still
    stands (a ``session.check`` event), and to close if it does not."""
    await get_channel_layer().group_send(user_group(user_id), {"type": "session.check"})


async def announce_deleted(user_id: int | str, conversation_ids) -> None:
    """Tell the user's open sockets that these conversations were deleted
    (a ``conversations.deleted`` event): theirs say so and close."""
    ids = sorted(str(pk) for pk in conversation_ids)
    await get_channel_layer().group_send(user_group(user_id), {"type": "conversations.deleted", "ids": ids})


async def announce_temporary_ended(chat_id: UUID) -> None:
    """Tell the tabs of a temporary chat that it ended (it was idle too long)."""
    await get_channel_layer().group_send(group_name(chat_id), {"type": "temporary.ended"})


async def request_stop(conversation_id: UUID) -> None:
    """Ask whichever worker runs the conversation's reply to stop it."""
    await get_channel_layer().group_send(control_group(conversation_id), {"type": "conversation.stop"})


async def request_snapshot(conversation_id: UUID, reply_to: str) -> None:
    """Ask the worker running the conversation's reply to send its snapshot
    (a ``conversation.snapshot`` event) to the channel ``reply_to``."""
    await get_channel_layer().group_send(
        control_group(conversation_id), {"type": "conversation.snapshot_request", "reply_to": reply_to}
    )


async def send_snapshot(reply_to: str, message_id: UUID, seq: int, html: str) -> None:
    await get_channel_layer().send(
        reply_to, {"type": "conversation.snapshot", "message": str(message_id), "seq": seq, "html": html}
    )


# --- a run's API events, for listeners on other workers -----------------------


async def request_run_events(control: UUID | str, run_id: UUID | str, after: int, user_id: int, reply_to: str) -> None:
    """Ask the worker running run ``run_id`` (in the control group of
    ``control``: its conversation, or the run itself when stateless) to send
    ``reply_to`` the run's events after number ``after``, and to send every
    later one to the run's group."""
    await get_channel_layer().group_send(
        control_group(control),
        {"type": "run.events_request", "run": str(run_id), "after": after, "user": user_id, "reply_to": reply_to},
    )


async def request_run_stop(control: UUID | str, run_id: UUID | str, user_id: int) -> None:
    """Ask the worker running run ``run_id`` of ``user_id``'s to stop it (``control`` as for ``request_run_events``)."""
    await get_channel_layer().group_send(
        control_group(control), {"type": "run.stop_request", "run": str(run_id), "user": user_id}
    )


async def send_run_events(to: str, events: list[dict], *, group: bool = False, missing: bool = False) -> None:
    """Send run events (``Generation.run_events``) to one channel, or to a group;
    ``missing``: the run is not the asker's."""
    layer = get_channel_layer()
    message = {"type": "run.events", "events": events, "missing": missing, "replay": not group}
    await (layer.group_send(to, message) if group else layer.send(to, message))
