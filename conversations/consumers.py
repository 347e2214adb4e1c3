"""The conversation websocket: transport only.

Frames in are JSON objects from htmx-ext-ws (``ws-send`` forms): an
``action`` (send, stop, retry, continue, regenerate, edit, switch) and its
fields; a send with ``compare`` (two to four model keys) is a comparison.  Frames out are HTML
fragments, each with an explicit ``hx-swap-oob``.  Everything that writes or
streams goes through ``conversations.actions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import import_module
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _

from conversations import actions, durability, frames
from conversations.forms import MessageForm, SendForm
from conversations.models import Conversation

logger = logging.getLogger(__name__)

# Application close codes (4000-4999): htmx-ext-ws reconnects only after
# 1006/1012/1013, so a refused socket stays closed.
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

ACTIONS = {"send", "stop", "retry", "continue", "regenerate", "edit", "switch"}
# What htmx-ext-ws puts in a frame besides our fields.
ALLOWED_FIELDS = {"action", "text", "message", "model", "compare", "csrfmiddlewaretoken", "HEADERS"}


@database_sync_to_async
def _owned(user, conversation_id: UUID) -> bool:
    return Conversation.objects.for_user(user).filter(pk=conversation_id).exists()


@database_sync_to_async
def _session_stands(scope, user) -> bool:
    """Whether the session this socket opened with is still ``user``'s: not
    logged out or expired, the password unchanged, the account active.
    Read afresh, not from the session the socket loaded at connect."""
    session = scope.get("session")
    if session is None or not session.session_key:
        return False
    stored = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key)
    if stored.get(SESSION_KEY) != str(user.pk):
        return False
    current = get_user_model().objects.filter(pk=user.pk, is_active=True).first()
    if current is None:
        return False
    return constant_time_compare(stored.get(HASH_SESSION_KEY, ""), current.get_session_auth_hash())


class ConversationConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.conversation_id: UUID = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.group = frames.group_name(self.conversation_id)
        self.user = self.scope.get("user")
        # Per reply, the last frame this socket showed (or its snapshot held):
        # an earlier one is dropped, a later one than the next shows a gap.
        self.shown_seq: dict[str, int] = {}
        # Replies running in another worker (one, or a comparison's): the
        # frames of each wait here until that worker's snapshot of it
        # arrives, so nothing shows twice or goes missing.
        self.awaiting: dict[str, list[dict]] = {}
        # When this socket last heard of the reply it shows (loop time): one
        # silent for CHAT_STREAM_SILENCE_SECONDS is asked where it stands.
        self.heard_at = asyncio.get_running_loop().time()
        self.closed = asyncio.Event()
        self.in_group = False
        # No frame is handled until the socket is known to be the owner's:
        # frames sent right after the handshake arrive even on a refused one.
        self.owner_checked = False
        # Accept, then close with an application code: a socket refused during
        # the handshake looks like a network failure, and htmx would retry.
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self._admits():
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(frames.user_group(self.user.pk), self.channel_name)
        self.in_group = True
        # A logout between the check above and joining the user's group was told to nobody.
        if not await _session_stands(self.scope, self.user):
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        self.owner_checked = True
        durability.socket_opened()
        await self._send_current_state()
        # Kept: the event loop holds only a weak reference to a task.
        self.watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"watch-{self.channel_name}")

    async def _admits(self) -> bool:
        """Whether the signed-in user may open this socket's conversation."""
        return await _owned(self.user, self.conversation_id)

    async def disconnect(self, code: int) -> None:
        # The generation belongs to the server: leaving does not stop it.
        self.owner_checked = False
        self.closed.set()
        if self.in_group:
            self.in_group = False
            durability.socket_closed()
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(frames.user_group(self.user.pk), self.channel_name)

    async def _send_current_state(self) -> None:
        for joined in await actions.join(self.conversation_id, self.user, self.channel_name):
            await self._show(joined)

    async def _show(self, joined: actions.Joined) -> None:
        if joined.message:
            self.shown_seq[joined.message] = joined.seq
        if joined.awaiting:
            self.awaiting.setdefault(joined.awaiting, [])
        self.heard_at = asyncio.get_running_loop().time()
        if joined.html:
            await self.send(text_data=joined.html)

    async def _watch(self) -> None:
        """While the socket is open: when the reply it shows as being written
        has been silent for CHAT_STREAM_SILENCE_SECONDS (its frames or final
        bubble may have been lost while Redis restarted), ask this socket's
        own consumer to catch up, so that it happens between two frames.
        Ends when the socket closes; never cancelled in the middle of a send."""
        loop, every = asyncio.get_running_loop(), settings.CHAT_STREAM_SILENCE_SECONDS
        while not self.closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self.closed.wait()
            if self.closed.is_set() or not self._watching() or loop.time() - self.heard_at < every:
                continue
            try:
                await self.channel_layer.send(self.channel_name, {"type": "conversation.catch_up"})
            except Exception as exc:  # the layer is down (channels-redis logs that): try again later
                logger.debug("A socket could not ask about a silent reply: %r", exc)

    def _watching(self) -> set[str]:
        """The replies this socket shows as being written."""
        return {*self.shown_seq, *self.awaiting}

    # --- frames from the browser -------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.owner_checked:
            return  # a refused (or closing) socket: nothing it sends is acted on
        if not await _session_stands(self.scope, self.user):
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        try:
            await self._receive(text_data)
        except Conversation.DoesNotExist:
            await self._refuse(CLOSE_NOT_FOUND)
        except Exception as exc:
            # One line, not a traceback per bad frame; the socket closes with
            # an application code and leaves its group (disconnect may not run).
            logger.warning("A websocket frame failed (%s) on conversation %s", type(exc).__name__, self.conversation_id)
            await self._refuse(CLOSE_BAD_FRAME)

    async def _refuse(self, code: int) -> None:
        await self.disconnect(code)
        await self.close(code=code)

    async def _receive(self, text_data: str | None) -> None:
        if text_data is None:
            await self._error(_("Only text frames are accepted."))
            return
        # JSON escaping can at most sextuple a character ("\u1234"); anything
        # larger cannot hold a message within the limit.
        if len(text_data) > settings.CHAT_MAX_MESSAGE_CHARS * 6 + 4096:
            await self._error(_("That frame is too large."))
            return
        try:
            data = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            await self._error(_("That frame is not valid JSON."))
            return
        if not isinstance(data, dict):
            await self._error(_("That frame is not a JSON object."))
            return
        unknown = sorted(set(data) - ALLOWED_FIELDS)
        if unknown:
            await self._error(_("Unknown field: %(fields)s.") % {"fields": ", ".join(unknown)})
            return
        action = data.get("action", "send")
        if not isinstance(action, str) or action not in ACTIONS:
            await self._error(_("Unknown action."))
            return
        await getattr(self, f"_on_{action}")(data)

    async def _valid_text(self, data: dict) -> str | None:
        """The frame's text, validated as the composer's form validates it
        (None, with the reason shown under the composer, when it is not)."""
        text = data.get("text")
        form = MessageForm({"text": text if isinstance(text, str) else ""})
        if form.is_valid():
            return form.cleaned_data["text"]
        await self._error(form.errors["text"][0])
        return None

    async def _on_send(self, data: dict) -> None:
        compare = data.get("compare") or []
        if isinstance(compare, str):
            compare = [compare]  # one ticked box comes as a string
        text = data.get("text")
        form = SendForm({"text": text if isinstance(text, str) else "", "compare": compare})
        if not form.is_valid():
            await self._error(form.first_error())
            return
        text, compare = form.cleaned_data["text"], form.cleaned_data["compare"]
        started = await (
            self._start(actions.start_comparison, text, compare) if compare else self._start(actions.start_reply, text)
        )
        if started:
            await self.send(text_data=frames.composer_ack())

    async def _on_stop(self, data: dict) -> None:
        await actions.stop(self.conversation_id, self.user)

    async def _on_retry(self, data: dict) -> None:
        await self._on_message_action(data, actions.retry_reply)

    async def _on_continue(self, data: dict) -> None:
        await self._on_message_action(data, actions.continue_reply)

    async def _on_regenerate(self, data: dict) -> None:
        model = data.get("model") or ""
        if not isinstance(model, str):
            await self._error(_("That model is not offered here."))
            return
        await self._on_message_action(data, actions.regenerate_reply, model)

    async def _on_edit(self, data: dict) -> None:
        text = await self._valid_text(data)
        if text is not None:
            await self._on_message_action(data, actions.edit_message, text)

    async def _on_switch(self, data: dict) -> None:
        await self._on_message_action(data, actions.switch_branch)

    async def _on_message_action(self, data: dict, start, *more) -> None:
        try:
            message_id = UUID(str(data.get("message")))
        except ValueError:
            await self._error(_("That message was not found."))
            return
        await self._start(start, message_id, *more)

    async def _start(self, action, *arguments) -> bool:
        """Run an action; a refusal shows under the composer.  True if it went ahead."""
        try:
            await action(self.conversation_id, self.user, *arguments)
        except actions.ReplyRefused as refusal:
            await self._error(refusal.message)
        except Conversation.DoesNotExist:
            await self._refuse(CLOSE_NOT_FOUND)
        else:
            return True
        return False

    async def _error(self, message: str) -> None:
        """A clear message under the composer; the socket stays usable."""
        await self.send(text_data=frames.composer_error(message))

    # --- frames from the channel layer --------------------------------------
    async def session_check(self, event: dict) -> None:
        """The user logged out, or their account changed: close unless this socket's session still stands."""
        if self.owner_checked and not await _session_stands(self.scope, self.user):
            await self._refuse(CLOSE_UNAUTHENTICATED)

    async def conversations_deleted(self, event: dict) -> None:
        """Some of the user's conversations were deleted: if this one was, say so and close."""
        if self.owner_checked and str(self.conversation_id) in event["ids"]:
            await self._error(_("This conversation was deleted."))
            await self._refuse(CLOSE_NOT_FOUND)

    async def conversation_delta(self, event: dict, *, resynced: bool = False) -> None:
        message, seq = event["message"], event["seq"]
        held = self.awaiting.get(message)
        if held is not None:
            held.append(event)
            return
        shown = self.shown_seq.get(message, 0)
        if seq <= shown:
            return  # already in the snapshot this socket joined with
        if seq > shown + 1 and not resynced:
            await self._resync(event)
            return
        self.shown_seq[message] = seq
        self.heard_at = asyncio.get_running_loop().time()
        await self.send(text_data=event["html"])

    async def _resync(self, event: dict) -> None:
        """Frames before ``event`` never came (the channel layer lost them:
        Redis restarted): show the reply's snapshot again, then what follows."""
        try:
            joined = await actions.resync(self.conversation_id, event["message"], self.channel_name)
        except Exception as exc:
            # The layer is still down: show the frame anyway; the final bubble repairs the gap.
            logger.warning("No snapshot of reply %s for a socket that missed frames: %r", event["message"], exc)
            self.shown_seq[event["message"]] = event["seq"]
            await self.send(text_data=event["html"])
            return
        await self._show(joined)
        await self.conversation_delta(event, resynced=True)  # held, dropped (in the snapshot) or shown

    async def conversation_catch_up(self, event: dict) -> None:
        """From ``_watch``: the reply this socket shows is silent.  Show its
        final bubble if it ended (the one sent was lost), else its snapshot."""
        loop = asyncio.get_running_loop()
        if loop.time() - self.heard_at < settings.CHAT_STREAM_SILENCE_SECONDS:
            return  # it spoke meanwhile
        for message in self._watching():
            self.heard_at = loop.time()
            try:
                joined = await actions.catch_up(self.conversation_id, self.user, message, self.channel_name)
            except Exception as exc:  # tried again after the next silence
                logger.warning("No news of silent reply %s for a socket: %r", message, exc)
                continue
            self.shown_seq.pop(message, None)
            self.awaiting.pop(message, None)
            await self._show(joined)

    async def conversation_snapshot(self, event: dict) -> None:
        """Another worker's answer to our snapshot request (of one of its
        replies: each generation of the conversation answers with its own)."""
        held = self.awaiting.pop(event["message"], None)
        if held is None:
            return
        self.shown_seq[event["message"]] = event["seq"]
        self.heard_at = asyncio.get_running_loop().time()
        await self.send(text_data=event["html"])
        for frame in held:
            await self.conversation_delta(frame)

    async def conversation_html(self, event: dict) -> None:
        self.heard_at = asyncio.get_running_loop().time()
        if "final" in event:
            self.shown_seq.pop(event["final"], None)
            self.awaiting.pop(event["final"], None)
        await self.send(text_data=event["html"])

    # --- dispatch ------------------------------------------------------------
    async def dispatch(self, message: dict) -> None:
        """Frames go straight to their handler.  channels' ``dispatch`` first
        runs ``close_old_connections`` on the process's one database thread
        for every message; for each frame of each socket that hop was the
        largest cost of delivering it (a third of the consumer's CPU under
        100 streams), and these handlers never touch the database."""
        if message["type"] == "conversation.delta":
            await self.conversation_delta(message)
        elif message["type"] == "conversation.html":
            await self.conversation_html(message)
        else:
            await super().dispatch(message)


class TemporaryChatConsumer(ConversationConsumer):
    """A temporary chat's socket: the conversation socket's transport, with the
    chat found in this process's memory (never the database) and only Send
    and Stop; the chat ends a little after its last socket closes."""

    chat = None  # the TemporaryChat, once admitted

    async def _admits(self) -> bool:
        self.chat = actions.open_temporary(self.conversation_id, self.user)
        return self.chat is not None

    async def disconnect(self, code: int) -> None:
        if self.chat is not None:
            actions.close_temporary(self.chat)
            self.chat = None
        await super().disconnect(code)

    async def _send_current_state(self) -> None:
        await self._show(actions.join_temporary(self.chat))

    async def _on_send(self, data: dict) -> None:
        if data.get("compare"):
            await self._error(_("A temporary chat answers with one model: Compare works in a saved conversation."))
            return
        text = await self._valid_text(data)
        if text is None:
            return
        try:
            await actions.start_temporary_reply(self.chat, self.user, text)
        except actions.ReplyRefused as refusal:
            await self._error(refusal.message)
        else:
            await self.send(text_data=frames.composer_ack())

    async def _on_stop(self, data: dict) -> None:
        actions.stop_temporary(self.chat)

    async def _not_here(self, data: dict) -> None:
        await self._error(_("A temporary chat keeps no branches: only Send and Stop work here."))

    _on_retry = _on_continue = _on_regenerate = _on_edit = _on_switch = _not_here

    async def temporary_ended(self, event: dict) -> None:
        """The chat ended (idle too long): say so, and close."""
        await self._error(_("This temporary chat has ended; nothing of it was kept."))
        await self._refuse(CLOSE_NOT_FOUND)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other websocket path: closed cleanly with 4404, not a 500 and a
    traceback in the log for whoever asks."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        return
