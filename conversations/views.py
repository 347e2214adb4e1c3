from __future__ import annotations

import json
import math
from uuid import UUID

from asgiref.sync import sync_to_async
from axes.helpers import get_client_ip_address
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import actions, attachments, export, imports, providers, search, temporary, usage
from conversations.forms import (
    ApiKeyForm,
    ConversationSettingsForm,
    DeleteAccountForm,
    DeleteConversationsForm,
    FeedbackForm,
    ImportForm,
    MessageForm,
    ModelForm,
    RenameForm,
    SendForm,
    SignupForm,
    StartForm,
)
from conversations.models import ApiKey, Attachment, Conversation, Feedback, Share, SidebarPage, SignupAttempt


def _get_conversation_for_user(request: HttpRequest, conversation_id: UUID) -> Conversation:
    """The conversation if ``request.user`` owns it; 404 otherwise (never 403:
    another user's conversation must be indistinguishable from a missing one)."""
    return get_object_or_404(Conversation.objects.for_user(request.user), pk=conversation_id)


def _page_context(request: HttpRequest, **extra) -> dict:
    return {"sidebar": SidebarPage.load(request.user), "models": providers.offered_models(), **extra}


def _redirect_back(request: HttpRequest, default) -> HttpResponse:
    """To the form's ``next`` if it is a path on this site, else to ``default``."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(default)


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if settings.CHAT_SIGNUP == "closed":
        return render(request, "registration/signup_closed.html", status=403)
    if request.user.is_authenticated:
        return redirect("index")

    form = SignupForm(request.POST or None)
    if request.method == "POST":
        address = get_client_ip_address(request) or ""
        user = None
        with transaction.atomic():
            wait = SignupAttempt.wait_for(address)
            if wait is None and form.is_valid():
                user = form.save()
                SignupAttempt.record(address)
                # The first account on an empty database administers the install,
                # so a fresh install needs no createsuperuser step (as Open WebUI).
                first_pk = get_user_model().objects.order_by("pk").values_list("pk", flat=True).first()
                if first_pk == user.pk:
                    user.is_staff = user.is_superuser = True
                    user.save(update_fields=["is_staff", "is_superuser"])
        if wait is not None:
            # The form comes back as typed but for the passwords (never rendered back).
            minutes = max(1, math.ceil(wait.total_seconds() / 60))
            refused = ngettext(
                "Too many accounts were created from your address. Try again in %(minutes)d minute.",
                "Too many accounts were created from your address. Try again in %(minutes)d minutes.",
                minutes,
            ) % {"minutes": minutes}
            return render(request, "registration/signup.html", {"form": form, "refused": refused}, status=429)
        if user is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("index")
    return render(request, "registration/signup.html", {"form": form})


def _render_settings(request: HttpRequest, status: int = 200, **bound) -> HttpResponse:
    ctx = _page_context(
        request,
        conversation_count=Conversation.objects.filter(owner=request.user).count(),
        conversations_form=bound.get("conversations_form") or DeleteConversationsForm(),
        account_form=bound.get("account_form") or DeleteAccountForm(request=request),
        import_form=bound.get("import_form") or ImportForm(),
        import_error=bound.get("import_error", ""),
        api_keys=ApiKey.objects.for_user(request.user).active(),
        api_key_form=bound.get("api_key_form") or ApiKeyForm(),
        new_api_key=bound.get("new_api_key"),
        new_api_key_secret=bound.get("new_api_key_secret", ""),
    )
    return render(request, "account/settings.html", ctx, status=status)


@require_GET
def account_settings(request: HttpRequest) -> HttpResponse:
    return _render_settings(request)


def _get_key_for_user(request: HttpRequest, key_id: int) -> ApiKey:
    """The user's own key in use; 404 for another user's, a revoked or a missing one."""
    return get_object_or_404(ApiKey.objects.for_user(request.user).active(), pk=key_id)


# The new key is shown in this POST's own response and nowhere else: no
# redirect, so it never passes through the session or a URL.  The page is
# private and no-store (PrivateNoStoreMiddleware), so no cache keeps it; the
# key's repr shows only its prefix (RawApiKey), so no error report does.
@require_POST
def create_api_key(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _render_settings(request, status=400, api_key_form=form)
    try:
        key, secret = ApiKey.issue(request.user, form.cleaned_data["name"])
    except ApiKey.LimitReached as refused:
        form.add_error(None, refused.message)
        return _render_settings(request, status=400, api_key_form=form)
    return _render_settings(request, status=201, new_api_key=key, new_api_key_secret=secret)


@require_POST
def revoke_api_key(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _get_key_for_user(request, key_id)
    key.revoke()
    flash.success(request, _("API key “%(name)s” revoked: it no longer works.") % {"name": key.name})
    return redirect(f"{reverse('account_settings')}#settings-api-keys")


@require_GET
def account_export(request: HttpRequest) -> HttpResponse:
    """Everything the user keeps here, as one JSON document to save."""
    user = request.user
    pieces = export.aaccount_export(user) if isinstance(request, ASGIRequest) else export.account_export(user)
    response = StreamingHttpResponse(pieces, content_type="application/json; charset=utf-8")
    filename = f"chat-{user.get_username()}-{timezone.now():%Y-%m-%d}.json"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    patch_cache_control(response, private=True, no_store=True)
    return response


def _download(pieces, content_type: str, filename: str) -> HttpResponse:
    response = StreamingHttpResponse(pieces, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    patch_cache_control(response, private=True, no_store=True)
    return response


@require_GET
def account_export_lines(request: HttpRequest) -> HttpResponse:
    """Every conversation of the user, one JSON document per line, streamed."""
    ids = Conversation.objects.filter(owner=request.user).order_by("created_at", "id").values_list("pk", flat=True)
    lines = export.aown_lines(ids) if isinstance(request, ASGIRequest) else export.own_lines(ids)
    filename = f"chat-{request.user.get_username()}-{timezone.now():%Y-%m-%d}.jsonl"
    return _download(lines, "application/jsonl; charset=utf-8", filename)


@require_GET
def conversation_export(request: HttpRequest, conversation_id: UUID, fmt: str) -> HttpResponse:
    """One conversation as Markdown (the branch shown) or JSON (every branch, with provenance)."""
    conv = _get_conversation_for_user(request, conversation_id)
    if fmt not in ("md", "json"):
        raise Http404
    name = slugify(conv.title, allow_unicode=True)[:60] or str(conv.id)
    if fmt == "md":
        text = render_to_string(
            "conversations/export.md", {"conversation": conv, "transcript": list(conv.transcript())}
        )
        return _download([text], "text/markdown; charset=utf-8", f"{name}.md")
    record = export.conversation_document(export.for_owner(Conversation.objects.filter(pk=conv.pk)).get())
    return _download(
        [json.dumps(record, ensure_ascii=False, indent=1)], "application/json; charset=utf-8", f"{name}.json"
    )


@require_POST
def import_conversations(request: HttpRequest) -> HttpResponse:
    """Bring in an export (this app's, ChatGPT's or Claude's): all of it or nothing."""
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_settings(request, status=400, import_form=form)
    try:
        outcome = imports.import_file(request.user, form.cleaned_data["file"])
    except imports.ImportFailed as failed:
        return _render_settings(request, status=400, import_error=failed.message)
    done = ngettext("%(count)d conversation imported.", "%(count)d conversations imported.", outcome.imported) % {
        "count": outcome.imported
    }
    if outcome.skipped:
        done += " " + ngettext(
            "%(count)d was here already and was skipped.",
            "%(count)d were here already and were skipped.",
            outcome.skipped,
        ) % {"count": outcome.skipped}
    flash.success(request, done)
    return redirect("account_settings")


@require_POST
def delete_all_conversations(request: HttpRequest) -> HttpResponse:
    form = DeleteConversationsForm(request.POST)
    if not form.is_valid():
        return _render_settings(request, status=400, conversations_form=form)
    count = actions.delete_conversations(request.user)
    flash.success(
        request,
        ngettext("%(count)d conversation deleted.", "%(count)d conversations deleted.", count) % {"count": count},
    )
    return redirect("account_settings")


@require_POST
def delete_account(request: HttpRequest) -> HttpResponse:
    form = DeleteAccountForm(request.POST, request=request)
    if not form.is_valid():
        return _render_settings(request, status=400, account_form=form)
    # Replies stopped first; the rows then go with the user's (cascade), and
    # the staff's audit log keeps its entries (actor SET_NULL, name kept).
    actions.delete_conversations(request.user)
    request.user.delete()
    logout(request)
    flash.success(request, _("Your account and all its conversations were deleted."))
    return redirect("login")


def _render_index(request: HttpRequest, status: int = 200, **extra) -> HttpResponse:
    return render(request, "conversations/index.html", _page_context(request, **extra), status=status)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return _render_index(request)


# The home page's composer posts here.  The conversation is created with its
# first message, and the reply is already being written (actions.start_conversation,
# as for any send) when the conversation page opens and its socket joins it.
@require_http_methods(["GET", "POST"])
async def new_conversation(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return redirect("index")  # a "new chat" link: the home page's composer
    user = await request.auser()
    form = StartForm(request.POST)
    if form.is_valid():
        try:
            conv = await actions.start_conversation(user, form.cleaned_data["model"], form.cleaned_data["text"])
        except actions.ReplyRefused as refusal:
            error = refusal.message  # nothing was created
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
        shares=list(conv.shares.live()) if settings.CHAT_SHARING != "off" else [],
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
    form = SendForm(request.POST)
    error = ""
    if form.is_valid():
        text, compare = form.cleaned_data["text"], form.cleaned_data["compare"]
        try:
            if compare:
                await actions.start_comparison(conv.id, user, text, compare)
            else:
                await actions.start_reply(conv.id, user, text)
        except actions.ReplyRefused as refusal:
            error = refusal.message
    else:
        error = form.first_error()
    if error:
        # Nothing typed is lost: the page comes back with the text (and the models ticked) in place.
        return await sync_to_async(_render_detail)(
            request,
            conv,
            status=409,
            composer_text=request.POST.get("text", ""),
            composer_error=error,
            composer_compare=request.POST.getlist("compare"),
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


@require_GET
def sidebar_page(request: HttpRequest) -> HttpResponse:
    """The sidebar's next page after ``?before=<cursor>``: for htmx as the
    list scrolls, else a page whose sidebar shows it (the "More" link)."""
    try:
        page = SidebarPage.load(request.user, request.GET.get("before", ""))
    except ValueError:
        raise Http404 from None
    if request.htmx:
        return render(request, "conversations/_sidebar.html#page", {"sidebar": page})
    page.groups[0].continued = False  # a page of its own starts with its heading
    context = {"sidebar": page, "models": providers.offered_models()}
    return render(request, "conversations/older.html", context)


@require_POST
async def pin(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv, user = await _aget_conversation_for_user(request, conversation_id)
    await actions.set_pinned(conv, request.POST.get("pinned") == "1")
    return await _library_response(request, conv, user)


@require_POST
async def archive(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv, user = await _aget_conversation_for_user(request, conversation_id)
    archived = request.POST.get("archived") == "1"
    await actions.set_archived(conv, archived)
    if not request.htmx:
        message = _("Conversation archived.") if archived else _("Conversation restored to the sidebar.")
        await sync_to_async(flash.success)(request, message)
    return await _library_response(request, conv, user)


async def _library_response(request: HttpRequest, conv: Conversation, user) -> HttpResponse:
    if request.htmx:
        # The header's controls and the sidebar, out of band (the socket brings the same to the other tabs).
        context = {"conversation": conv, "sidebar": await sync_to_async(SidebarPage.load)(user)}
        return await sync_to_async(render)(request, "conversations/_library.html", context)
    return await sync_to_async(_redirect_back)(request, conv)


@require_GET
def archived(request: HttpRequest) -> HttpResponse:
    conversations = Conversation.objects.for_user(request.user).filter(archived=True).by_activity()
    context = {"archived": conversations.only("id", "title", "updated_at")}
    return render(request, "conversations/archived.html", _page_context(request, **context))


def _sharing_on() -> None:
    if settings.CHAT_SHARING == "off":
        raise Http404


@require_POST
def share(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    _sharing_on()
    conv = _get_conversation_for_user(request, conversation_id)
    Share.snapshot(conv)
    flash.success(request, _("Share link created. Anyone with it sees the conversation as it is now."))
    return redirect(f"{conv.get_absolute_url()}#share")


@require_POST
def revoke_share(request: HttpRequest, share_id: int) -> HttpResponse:
    revoked = get_object_or_404(Share.objects.of_owner(request.user).live(), pk=share_id)
    revoked.revoke()
    flash.success(request, _("Share link revoked: it no longer opens."))
    return _redirect_back(request, "shares")


@require_GET
def shares(request: HttpRequest) -> HttpResponse:
    """The user's live share links, each revocable."""
    listed = Share.objects.of_owner(request.user).live().select_related("conversation")
    return render(request, "conversations/shares.html", _page_context(request, shares=listed))


@login_not_required
@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    """A share's snapshot: for anyone with the link (``links``) or anyone
    logged in (``users``); a revoked or unknown token is a 404 either way."""
    _sharing_on()
    if settings.CHAT_SHARING == "users" and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    snapshot = get_object_or_404(Share.objects.live(), token=token)
    response = render(request, "conversations/shared.html", {"share": snapshot, "shared": snapshot.shown_messages()})
    response["X-Robots-Tag"] = "noindex, nofollow"
    # Never kept by a browser or proxy, so a revoked link stops showing at once.
    patch_cache_control(response, private=True, no_store=True)
    return response


@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conv = _get_conversation_for_user(request, conversation_id)
    if request.method == "POST":
        actions.delete_conversations(request.user, [conv.id])
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


# --- temporary chats: in this worker's memory only (conversations.temporary) --
def _get_temporary_for_user(request: HttpRequest, chat_id: UUID) -> temporary.TemporaryChat:
    """The temporary chat if it is the user's and lives in this process; 404 otherwise."""
    chat = temporary.get(chat_id, request.user)
    if chat is None:
        raise Http404(_("This temporary chat has ended, or it lives in another server process."))
    return chat


def _render_temporary(request: HttpRequest, chat, status: int = 200, **extra) -> HttpResponse:
    context = _page_context(
        request,
        conversation=chat,
        transcript=list(chat.transcript()),
        current_model=providers.get_model(chat.model_key),
        idle_minutes=max(1, math.ceil(settings.CHAT_TEMPORARY_IDLE_MINUTES)),
        **extra,
    )
    return render(request, "conversations/temporary.html", context, status=status)


@require_POST
async def new_temporary(request: HttpRequest) -> HttpResponse:
    """Start a temporary chat (with a first message, from the home page's
    composer, or empty, from the sidebar): nothing of it is ever written."""
    user = await request.auser()
    text = request.POST.get("text", "")
    form = StartForm(request.POST if text else {"text": "-", "model": request.POST.get("model", "")})
    if not form.is_valid():
        return await sync_to_async(_render_index)(
            request, status=400, composer_text=text, composer_error=next(iter(form.errors.values()))[0]
        )
    chat = temporary.create(user, form.cleaned_data["model"])
    if text:
        try:
            await actions.start_temporary_reply(chat, user, form.cleaned_data["text"])
        except actions.ReplyRefused as refusal:
            temporary.end(chat.id)
            return await sync_to_async(_render_index)(
                request, status=409, composer_text=text, composer_error=refusal.message
            )
    return redirect("temporary_chat", chat.id)


@require_GET
async def temporary_chat(request: HttpRequest, chat_id: UUID) -> HttpResponse:
    await request.auser()
    chat = _get_temporary_for_user(request, chat_id)
    return await sync_to_async(_render_temporary)(request, chat)


@require_POST
async def temporary_send(request: HttpRequest, chat_id: UUID) -> HttpResponse:
    user = await request.auser()
    chat = _get_temporary_for_user(request, chat_id)
    form = MessageForm(request.POST)
    error = form.errors["text"][0] if not form.is_valid() else ""
    if not error:
        try:
            await actions.start_temporary_reply(chat, user, form.cleaned_data["text"])
        except actions.ReplyRefused as refusal:
            error = refusal.message
    if error:
        return await sync_to_async(_render_temporary)(
            request, chat, status=409, composer_text=request.POST.get("text", ""), composer_error=error
        )
    return redirect("temporary_chat", chat.id)


@require_POST
async def temporary_stop(request: HttpRequest, chat_id: UUID) -> HttpResponse:
    await request.auser()
    actions.stop_temporary(_get_temporary_for_user(request, chat_id))
    return redirect("temporary_chat", chat_id)


# --- attachments: uploaded first, then sent with a message (conversations.attachments) --
def _get_attachment_for_user(request: HttpRequest, attachment_id: UUID) -> Attachment:
    """The attachment if ``request.user`` owns it; 404 otherwise, as for a conversation."""
    return get_object_or_404(Attachment.objects.for_user(request.user), pk=attachment_id)


@require_POST
def upload_attachments(request: HttpRequest) -> HttpResponse:
    """Store each ``file`` of the form as a pending upload of the user, and
    answer with a chip per file (``conversations/_attachment_chip.html``):
    the stored file, or why it was refused.  201 when every file was stored,
    400 otherwise; for htmx always 200, as htmx swaps only successes."""
    files = request.FILES.getlist("file")
    most = settings.CHAT_MAX_UPLOADS_PER_MESSAGE
    if not files:
        chips = [{"error": _("Choose a file to attach.")}]
    elif len(files) > most:
        # Refused before any is read.
        message = ngettext("A message can carry %(most)d file.", "A message can carry %(most)d files.", most) % {
            "most": most
        }
        chips = [{"error": message}]
    else:
        chips = []
        for upload in files:
            try:
                prepared = attachments.accept(upload, name=upload.name)
                chips.append({"attachment": Attachment.store(request.user, prepared)})
            except attachments.AttachmentRefused as refused:
                chips.append({"error": refused.message})
    status = 201 if all("attachment" in chip for chip in chips) else 400
    return render(
        request, "conversations/_attachment_chip.html", {"chips": chips}, status=200 if request.htmx else status
    )


@require_GET
def attachment_file(request: HttpRequest, attachment_id: UUID) -> HttpResponse:
    """The file itself, for its owner only (see ``attachments.file_response`` for the headers)."""
    return attachments.file_response(_get_attachment_for_user(request, attachment_id))


@require_POST
def delete_attachment(request: HttpRequest, attachment_id: UUID) -> HttpResponse:
    """Remove a pending upload (one sent with a message goes with the message); its file goes with it."""
    pending = get_object_or_404(Attachment.objects.pending_for(request.user), pk=attachment_id)
    pending.delete()
    if request.htmx:
        return HttpResponse("")  # the chip is replaced by nothing
    return _redirect_back(request, "index")
