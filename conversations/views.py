from __future__ import annotations

import math
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import actions, providers, search, usage
from conversations.forms import (
    ConversationSettingsForm,
    FeedbackForm,
    MessageForm,
    ModelForm,
    RenameForm,
    SignupForm,
    StartForm,
)
from conversations.models import Conversation, Feedback


def _get_conversation_for_user(request: HttpRequest, conversation_id: UUID) -> Conversation:
    """The conversation if ``request.user`` owns it; 404 otherwise (never 403:
    another user's conversation must be indistinguishable from a missing one)."""
    return get_object_or_404(Conversation.objects.for_user(request.user), pk=conversation_id)


def _sidebar(request: HttpRequest) -> list[Conversation]:
    return list(
        Conversation.objects.for_user(request.user)
        .active()
        .with_messages()
        .by_activity()
        .only("id", "title", "updated_at")[:200]
    )


def _page_context(request: HttpRequest, **extra) -> dict:
    return {"sidebar": _sidebar(request), "models": providers.offered_models(), **extra}


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if settings.CHAT_SIGNUP == "closed":
        return render(request, "registration/signup_closed.html", status=403)
    if request.user.is_authenticated:
        return redirect("index")

    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            # The first account on an empty database administers the install,
            # so a fresh install needs no createsuperuser step (as Open WebUI).
            first_pk = get_user_model().objects.order_by("pk").values_list("pk", flat=True).first()
            if first_pk == user.pk:
                user.is_staff = user.is_superuser = True
                user.save(update_fields=["is_staff", "is_superuser"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("index")
    return render(request, "registration/signup.html", {"form": form})


def _render_index(request: HttpRequest, status: int = 200, **extra) -> HttpResponse:
    return render(request, "conversations/index.html", _page_context(request, **extra), status=status)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return _render_index(request)


# The home page's composer posts here.  The conversation is created with its
# first message, and the reply is already being written (actions.start_reply,
# as for any send) when the conversation page opens and its socket joins it.
@require_http_methods(["GET", "POST"])
async def new_conversation(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return redirect("index")  # a "new chat" link: the home page's composer
    user = await request.auser()
    form = StartForm(request.POST)
    if form.is_valid():
        conv = await Conversation.objects.acreate(owner=user, model_key=form.cleaned_data["model"])
        try:
            await actions.start_reply(conv.id, user, form.cleaned_data["text"])
        except actions.ReplyRefused as refusal:
            await conv.adelete()  # no empty conversation is left behind
            error = refusal.message
        else:
            return redirect(conv)
    else:
        error = next(iter(form.errors.values()))[0]
    return await sync_to_async(_render_index)(
        request,
        status=400,
        composer_text=request.POST.get("text", ""),
        composer_error=error,
        composer_model=request.POST.get("model", ""),
    )


def _message_param(request: HttpRequest) -> UUID | None:
    try:
        return UUID(request.GET.get("m", ""))
    except ValueError:
        return None


def _render_detail(request: HttpRequest, conv: Conversation, status: int = 200, **extra) -> HttpResponse:
    # ?m=<message id> (a search result): the branch through that message, down to it at least.
    through = _message_param(request) if request.method == "GET" else None
    transcript = conv.transcript(through=through)
    shown, earlier_before = (
        (list(transcript), None)
        if request.GET.get("all")
        else transcript.window_through(settings.CHAT_PAGE_MESSAGES, through)
    )
    ctx = _page_context(
        request,
        conversation=conv,
        transcript=Feedback.attach(shown, request.user),
        earlier_before=earlier_before,
        current_model=providers.get_model(conv.model_key),
        settings_form=ConversationSettingsForm(instance=conv),
        # Another branch than the one stored as shown: sending would continue that one, not this.
        through=through,
        other_branch=through if transcript.diverges else None,
        **extra,
    )
    return render(request, "conversations/detail.html", ctx, status=status)


@require_GET
def conversation(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _render_detail(request, _get_conversation_for_user(request, conversation_id))


@require_GET
def earlier(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """The messages before ``?before=<message id>``, for htmx as the reader
    scrolls up (without it, the page's link asks for ``?all=1`` instead)."""
    conv = _get_conversation_for_user(request, conversation_id)
    try:
        before = UUID(request.GET.get("before", ""))
    except ValueError:
        raise Http404 from None
    # What comes before a message is its ancestors, whichever branch the page shows.
    transcript = conv.transcript(through=before)
    end = transcript.index_of(before)
    if end is None:
        raise Http404
    if not request.htmx:
        # The branch shown stays the one the page showed, if that was not the current one.
        branch = f"&m={before}" if transcript.diverges else ""
        return redirect(f"{conv.get_absolute_url()}?all=1{branch}#msg-{before}")
    shown, earlier_before = transcript.window(settings.CHAT_PAGE_MESSAGES, end)
    ctx = {"conversation": conv, "transcript": Feedback.attach(shown, request.user), "earlier_before": earlier_before}
    return render(request, "conversations/detail.html#earlier", ctx)


async def _aget_conversation_for_user(request: HttpRequest, conversation_id: UUID) -> tuple[Conversation, object]:
    user = await request.auser()
    return await sync_to_async(_get_conversation_for_user)(request, conversation_id), user


# The composer and the reply buttons post here when JavaScript is off; with
# JavaScript the same forms go over the websocket.  Both end in actions.*.
@require_POST
async def send(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv, user = await _aget_conversation_for_user(request, conversation_id)
    form = MessageForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            await actions.start_reply(conv.id, user, form.cleaned_data["text"])
        except actions.ReplyRefused as refusal:
            error = refusal.message
    else:
        error = form.errors["text"][0]
    if error:
        # Nothing typed is lost: the page comes back with the text in place.
        return await sync_to_async(_render_detail)(
            request, conv, status=409, composer_text=request.POST.get("text", ""), composer_error=error
        )
    return redirect(conv)


@require_POST
async def stop(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv, user = await _aget_conversation_for_user(request, conversation_id)
    await actions.stop(conv.id, user)
    return redirect(conv)


@require_POST
async def retry(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    return await _message_action(request, conversation_id, message_id, actions.retry_reply)


@require_POST
async def continue_reply(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    return await _message_action(request, conversation_id, message_id, actions.continue_reply)


async def _message_action(request: HttpRequest, conversation_id: UUID, message_id: UUID, start, *more) -> HttpResponse:
    conv, user = await _aget_conversation_for_user(request, conversation_id)
    try:
        await start(conv.id, user, message_id, *more)
    except actions.ReplyRefused as refusal:
        return await sync_to_async(_render_detail)(request, conv, status=409, composer_error=refusal.message)
    return redirect(conv)


@require_POST
async def regenerate(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    model = request.POST.get("model", "")
    return await _message_action(request, conversation_id, message_id, actions.regenerate_reply, model)


@require_POST
async def edit_message(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    form = MessageForm(request.POST)
    if not form.is_valid():
        conv, _user = await _aget_conversation_for_user(request, conversation_id)
        return await sync_to_async(_render_detail)(request, conv, status=409, composer_error=form.errors["text"][0])
    return await _message_action(request, conversation_id, message_id, actions.edit_message, form.cleaned_data["text"])


@require_POST
async def switch(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    return await _message_action(request, conversation_id, message_id, actions.switch_branch)


@require_POST
async def rename(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv, _user = await _aget_conversation_for_user(request, conversation_id)
    form = RenameForm(request.POST)
    if form.is_valid():
        await actions.rename(conv, form.cleaned_data["title"])
    if request.htmx:
        # The header, and the sidebar entry out of band.
        context = {"conversation": conv, "header_oob": False}
        return await sync_to_async(render)(request, "conversations/_title.html", context)
    return redirect(conv)


@require_POST
def set_model(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv = _get_conversation_for_user(request, conversation_id)
    form = ModelForm(request.POST)
    if not form.is_valid():
        if request.htmx:
            return HttpResponse(form.errors["model"][0], status=400)
        flash.error(request, form.errors["model"][0])
        return redirect(conv)
    conv.model_key = form.cleaned_data["model"]
    conv.save(update_fields=["model_key"])
    if request.htmx:
        return HttpResponse(status=204)
    return redirect(conv)


@require_POST
def update_settings(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv = _get_conversation_for_user(request, conversation_id)
    form = ConversationSettingsForm(request.POST, instance=conv)
    if form.is_valid():
        form.save()
        flash.success(request, _("Settings saved."))
    else:
        for errors in form.errors.values():
            flash.error(request, errors[0])
    return redirect(conv)


@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv = _get_conversation_for_user(request, conversation_id)
    if request.method == "POST":
        conv.delete()
        flash.success(request, _("Conversation deleted."))
        return redirect("index")
    return render(request, "conversations/delete.html", _page_context(request, conversation=conv))


@require_http_methods(["GET", "POST"])
def feedback(request: HttpRequest, conversation_id: UUID, message_id: UUID) -> HttpResponse:
    """The owner rates a finished reply up or down, changes or removes the
    rating, with an optional comment.  Staff read it in the admin review.

    GET returns the control with its current state, for bubbles that arrived
    over the websocket (rendered there without knowing who is looking)."""
    conv = _get_conversation_for_user(request, conversation_id)
    rateable = conv.messages.replies().finished()
    msg = get_object_or_404(rateable, pk=message_id)
    if request.method == "GET":
        if not request.htmx:
            return redirect(f"{conv.get_absolute_url()}#msg-{msg.id}")
        Feedback.attach([msg], request.user)
        return render(request, "conversations/_feedback.html", {"msg": msg})
    form = FeedbackForm(request.POST)
    error = ""
    if not form.is_valid():
        error = next(iter(form.errors.values()))[0]
    elif form.cleaned_data["rating"] == "clear":
        Feedback.objects.filter(message=msg, user=request.user).delete()
    else:
        Feedback.objects.update_or_create(
            message=msg,
            user=request.user,
            defaults={
                "rating": form.cleaned_data["rating"],
                "comment": form.cleaned_data["comment"],
                "updated_at": timezone.now(),
            },
        )
    if request.htmx:
        Feedback.attach([msg], request.user)
        # 200 even for an error: htmx swaps only successful responses, and the
        # control shows the error in place (nothing was saved).
        return render(request, "conversations/_feedback.html", {"msg": msg, "feedback_error": error})
    if error:
        flash.error(request, error)
    return redirect(f"{conv.get_absolute_url()}#msg-{msg.id}")


@require_GET
def search_page(request: HttpRequest) -> HttpResponse:
    """``?q=``: titles and message text of the user's own conversations.  For
    htmx (the sidebar's box, as one types) the results alone, nothing at all
    for an empty query (the sidebar shows its list again); else a whole page."""
    results = search.search(request.user, request.GET.get("q", ""))
    if request.htmx:
        if not results.query:
            return HttpResponse("")
        return render(request, "conversations/_search_results.html", {"results": results})
    return render(request, "conversations/search.html", _page_context(request, results=results))


@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    """What the user's budgets leave, and what they used by model by day."""
    context = {"budgets": usage.budgets_for(request.user), "days": usage.daily_usage(request.user)}
    return render(request, "conversations/usage.html", _page_context(request, **context))


def locked_out(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    """django-axes' answer to a locked-out log-in (AXES_LOCKOUT_CALLABLE): 429, saying for how long."""
    minutes = max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "registration/locked_out.html", context, status=429)
