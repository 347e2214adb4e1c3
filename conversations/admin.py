"""Reviewing conversations in the admin.

Two grants: "view conversation" shows that conversations exist (owner,
models, counts, tokens, cost, status, feedback counts, flags); "review
conversation" (``conversations.review_conversation``) is needed to read what
users and models wrote.  Titles and system prompts are written by users (a
title is derived from the first message), so they count as content.  Every
transcript view, export and content search by a reviewer is recorded in the
AuditLog, which only superusers can see and nobody can change.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from conversations import attachments, export, stats, usage
from conversations.models import (
    ApiKey,
    Attachment,
    AuditLog,
    Budget,
    Conversation,
    Flag,
    Message,
    Share,
    UsageDay,
)
from conversations.permissions import can_review

# Fields of a message that say how it was made, never what it says.
PROVENANCE_FIELDS = (
    "id",
    "parent_id",
    "role",
    "status",
    "provider",
    "model",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "first_token_ms",
    "duration_ms",
    "error_kind",
    "created_at",
)
AUDIT_LINKS = 20
# What the review page lists of each attachment (never its extracted text).
ATTACHMENT_LISTED = ("id", "message_id", "kind", "content_type", "name", "size", "created_at")
# Lookups that read content; the admin otherwise allows any local field in the query string.
CONTENT_LOOKUPS = ("title", "system_prompt", "messages")


class ModelFilter(admin.SimpleListFilter):
    title = _("model used")
    parameter_name = "model"

    def lookups(self, request, model_admin):
        pairs = (
            Message.objects.replies()
            .exclude(provider="")
            .values_list("provider", "model")
            .distinct()
            .order_by("provider", "model")
        )
        return [(f"{p}:{m}", f"{p}:{m}") for p, m in pairs]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        provider, _sep, model = self.value().partition(":")
        used = Message.objects.filter(conversation=OuterRef("pk"), provider=provider, model=model)
        return queryset.filter(Exists(used))


class StatusFilter(admin.SimpleListFilter):
    title = _("reply status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            ("error", _("Has an error")),
            ("stopped", _("Has a stopped reply")),
            ("interrupted", _("Has an interrupted reply")),
            ("clean", _("No problem")),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "error":
                return queryset.filter(error_count__gt=0)
            case "stopped":
                return queryset.filter(stopped_count__gt=0)
            case "interrupted":
                return queryset.filter(interrupted_count__gt=0)
            case "clean":
                return queryset.filter(error_count=0, stopped_count=0, interrupted_count=0)
        return queryset


class FeedbackFilter(admin.SimpleListFilter):
    title = _("feedback")
    parameter_name = "feedback"

    def lookups(self, request, model_admin):
        return [("up", _("Has thumbs up")), ("down", _("Has thumbs down")), ("none", _("No feedback"))]

    def queryset(self, request, queryset):
        match self.value():
            case "up":
                return queryset.filter(thumbs_up__gt=0)
            case "down":
                return queryset.filter(thumbs_down__gt=0)
            case "none":
                return queryset.filter(thumbs_up=0, thumbs_down=0)
        return queryset


class FlagFilter(admin.SimpleListFilter):
    title = _("reviewer flag")
    parameter_name = "flag"

    def lookups(self, request, model_admin):
        return [("open", _("Open flags")), ("any", _("Flagged")), ("none", _("Never flagged"))]

    def queryset(self, request, queryset):
        match self.value():
            case "open":
                return queryset.filter(open_flag_count__gt=0)
            case "any":
                return queryset.filter(flag_count__gt=0)
            case "none":
                return queryset.filter(flag_count=0)
        return queryset


class ReviewChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # Models used and their tokens for the whole page in one query.
        self.result_list = list(self.result_list)
        used = usage.usage_by_conversation(c.pk for c in self.result_list)
        for conversation in self.result_list:
            conversation.usage = used.get(conversation.pk) or usage.ModelUsage()
        # Searching message content reveals which conversations say what.
        if self.query and request.method == "GET" and can_review(request.user):
            AuditLog.record(request.user, AuditLog.Action.SEARCH, [c.pk for c in self.result_list], query=self.query)


class FlagForm(forms.Form):
    reason = forms.ChoiceField(label=_("Reason"), choices=Flag.Reason.choices)
    note = forms.CharField(label=_("Note"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    message = forms.UUIDField(required=False, widget=forms.HiddenInput)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_filter = (
        ("owner", admin.RelatedOnlyFieldListFilter),
        ModelFilter,
        "updated_at",
        "created_at",
        StatusFilter,
        FeedbackFilter,
        FlagFilter,
        "archived",
    )
    list_select_related = ("owner",)
    date_hierarchy = "updated_at"
    ordering = ("-updated_at",)
    actions = ("export_jsonl",)
    readonly_fields = (
        "id",
        "owner",
        "model_key",
        "temperature",
        "max_tokens",
        "archived",
        "created_at",
        "updated_at",
        "message_count",
        "tokens_in",
        "tokens_out",
    )
    fields = readonly_fields
    change_form_template = "admin/conversations/conversation/change_form.html"
    view_on_site = False  # the user's page is the owner's alone (404 for staff)

    # --- Permissions: read-only, content behind review_conversation ------------

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Nobody edits users' conversations here; the change page is a view page.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # The confirmation page lists every message, text included.
        return super().has_delete_permission(request, obj) and can_review(request.user)

    def get_deleted_objects(self, objs, request):
        # Django's confirmation page lists every message with its text: audited like a view.
        objs = list(objs)
        AuditLog.record(request.user, AuditLog.Action.VIEW, [o.pk for o in objs], page="delete confirmation")
        return super().get_deleted_objects(objs, request)

    def has_review_permission(self, request) -> bool:
        return can_review(request.user)

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        if lookup.startswith(CONTENT_LOOKUPS) and not (request and can_review(request.user)):
            return False
        return super().lookup_allowed(lookup, value, request)

    # --- List ------------------------------------------------------------------

    def get_queryset(self, request):
        return super().get_queryset(request).with_review_stats()

    def get_changelist(self, request, **kwargs):
        return ReviewChangeList

    def get_list_display(self, request):
        columns = ["short_id"]
        if can_review(request.user):
            columns.append("display_title")
        columns += ["owner", "models_used", "message_count", "tokens_in", "tokens_out"]
        if usage.model_prices():
            columns.append("cost")
        columns += ["status_flags", "feedback", "flags", "updated_at"]
        if can_review(request.user):
            columns.append("review_link")
        return columns

    def get_search_fields(self, request):
        if can_review(request.user):
            return ("title", "messages__content", "owner__username")
        return ("owner__username",)

    @admin.display(description=_("conversation"), ordering="created_at")
    def short_id(self, obj: Conversation) -> str:
        return str(obj.pk)[:8]

    @admin.display(description=_("title"), ordering="title")
    def display_title(self, obj: Conversation) -> str:
        return obj.display_title

    @admin.display(description=_("models used"))
    def models_used(self, obj: Conversation) -> str:
        used = getattr(obj, "usage", None)
        return ", ".join(used.keys) if used and used.rows else "–"

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count

    @admin.display(description=_("tokens in"), ordering="tokens_in")
    def tokens_in(self, obj: Conversation) -> int | None:
        return obj.tokens_in

    @admin.display(description=_("tokens out"), ordering="tokens_out")
    def tokens_out(self, obj: Conversation) -> int | None:
        return obj.tokens_out

    @admin.display(description=_("cost (USD)"))
    def cost(self, obj: Conversation) -> str:
        used = getattr(obj, "usage", None)
        value = usage.cost(used.rows, usage.model_prices()) if used else None
        return "" if value is None else f"{value:.4f}"

    @admin.display(description=_("status"))
    def status_flags(self, obj: Conversation) -> str:
        labels = []
        if obj.error_count:
            labels.append(ngettext("%(n)d error", "%(n)d errors", obj.error_count) % {"n": obj.error_count})
        if obj.stopped_count:
            labels.append(gettext("%(n)d stopped") % {"n": obj.stopped_count})
        if obj.interrupted_count:
            labels.append(gettext("%(n)d interrupted") % {"n": obj.interrupted_count})
        return ", ".join(labels) or "–"

    @admin.display(description=_("feedback"))
    def feedback(self, obj: Conversation) -> str:
        return f"👍 {obj.thumbs_up} · 👎 {obj.thumbs_down}"

    @admin.display(description=_("flags"), ordering="open_flag_count")
    def flags(self, obj: Conversation) -> str:
        if not obj.flag_count:
            return "–"
        return gettext("%(open)d open of %(all)d") % {"open": obj.open_flag_count, "all": obj.flag_count}

    @admin.display(description=_("transcript"))
    def review_link(self, obj: Conversation) -> str:
        url = reverse("admin:conversations_conversation_review", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, gettext("Review"))

    # --- Export ----------------------------------------------------------------

    @admin.action(description=_("Export selected conversations as JSON Lines"), permissions=["review"])
    def export_jsonl(self, request, queryset):
        if not can_review(request.user):  # the permissions= check hides it; this one refuses it
            raise PermissionDenied
        ids = list(queryset.order_by("created_at", "id").values_list("pk", flat=True))
        AuditLog.record(request.user, AuditLog.Action.EXPORT, ids, count=len(ids))
        lines = export.aexport_lines(ids) if isinstance(request, ASGIRequest) else export.export_lines(ids)
        response = StreamingHttpResponse(lines, content_type="application/jsonl; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.jsonl"'
        return response

    # --- Pages -----------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        own = [
            path("stats/", wrap(self.stats_view), name="conversations_conversation_stats"),
            path("<path:object_id>/review/", wrap(self.review_view), name="conversations_conversation_review"),
            path("<path:object_id>/flag/", wrap(self.flag_view), name="conversations_conversation_flag"),
            path(
                "<path:object_id>/attachments/<uuid:attachment_id>/",
                wrap(self.attachment_view),
                name="conversations_conversation_attachment",
            ),
        ]
        return own + super().get_urls()

    def _reviewable(self, request, object_id) -> Conversation:
        if not (self.has_view_permission(request) and can_review(request.user)):
            raise PermissionDenied
        conversation = self.get_object(request, object_id)
        if conversation is None:
            raise Http404(gettext("No such conversation."))
        return conversation

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {
            "can_review": can_review(request.user),
            # Django's default subtitle is str(obj), the title: content.
            "subtitle": str(object_id),
        }
        if obj is not None:
            extra["message_rows"] = list(
                Message.objects.filter(conversation=obj).order_by("created_at", "id").values(*PROVENANCE_FIELDS)
            )
            extra["flag_rows"] = list(Flag.objects.filter(conversation=obj).select_related("reviewer"))
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def history_view(self, request, object_id, extra_context=None):
        # Its heading and breadcrumbs name the conversation by its title.
        if not can_review(request.user):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    def review_view(self, request, object_id):
        conversation = self._reviewable(request, object_id)
        data = conversation.review_context()
        AuditLog.record(request.user, AuditLog.Action.VIEW, [conversation.pk], messages=len(data["nodes"]))
        # Listed here only, behind the review permission (names are the users' words too).
        files = Attachment.objects.filter(message__conversation=conversation).order_by("created_at", "id")
        context = {
            "attachments": list(files.only(*ATTACHMENT_LISTED)),
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Review conversation"),
            "subtitle": conversation.display_title,
            "conversation": conversation,
            "flag_form": FlagForm(),
            **data,
        }
        return TemplateResponse(request, "admin/conversations/conversation/review.html", context)

    def attachment_view(self, request, object_id, attachment_id):
        """A reviewer opens one file of a conversation they may review: recorded
        in the audit log as a transcript view is, served as its owner gets it."""
        conversation = self._reviewable(request, object_id)
        attachment = Attachment.objects.filter(message__conversation=conversation, pk=attachment_id).first()
        if attachment is None:
            raise Http404(gettext("No such attachment in this conversation."))
        AuditLog.record(
            request.user, AuditLog.Action.VIEW, [conversation.pk], page="attachment", attachment=str(attachment.pk)
        )
        return attachments.file_response(attachment)

    def flag_view(self, request, object_id):
        return require_POST(self._flag)(request, object_id)

    def _flag(self, request, object_id):
        conversation = self._reviewable(request, object_id)
        form = FlagForm(request.POST)
        url = reverse("admin:conversations_conversation_review", args=[conversation.pk])
        if not form.is_valid():
            messages.error(request, gettext("The flag was not saved: choose a reason."))
            return HttpResponseRedirect(url)
        message = None
        if form.cleaned_data["message"]:
            message = conversation.messages.filter(pk=form.cleaned_data["message"]).first()
            if message is None:
                raise Http404(gettext("No such reply in this conversation."))
        Flag.objects.create(
            conversation=conversation,
            message=message,
            reviewer=request.user,
            reason=form.cleaned_data["reason"],
            note=form.cleaned_data["note"],
        )
        messages.success(request, gettext("Flag saved."))
        return HttpResponseRedirect(f"{url}#msg-{message.pk}" if message else url)

    def stats_view(self, request):
        # Aggregates only, so any staff who may view conversations may see them.
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = min(max(int(request.GET.get("days", 30)), 1), 365)
        except ValueError:
            days = 30
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Reply statistics"),
            "days": days,
            "day_choices": (1, 7, 30, 90, 365),
            **stats.reply_stats(days),
        }
        return TemplateResponse(request, "admin/conversations/conversation/stats.html", context)


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    list_filter = ("reason", "resolved", ("reviewer", admin.RelatedOnlyFieldListFilter), "created_at")
    list_select_related = ("reviewer",)
    date_hierarchy = "created_at"
    # Foreign keys are shown by id: a conversation's str() is its title.
    fields = ("conversation_link", "message_ref", "reviewer", "reason", "note", "resolved", "created_at")
    readonly_fields = ("conversation_link", "message_ref", "reviewer", "reason", "created_at")

    def get_list_display(self, request):
        columns = ["created_at", "reason", "conversation_link", "message_ref", "reviewer", "resolved"]
        if can_review(request.user):
            columns.insert(-1, "note")  # reviewers may quote what they read
        return columns

    def get_fields(self, request, obj=None):
        if can_review(request.user):
            return self.fields
        return tuple(f for f in self.fields if f != "note")

    def has_add_permission(self, request) -> bool:
        return False  # flags are raised from the review page, next to what they are about

    @admin.display(description=_("conversation"))
    def conversation_link(self, obj: Flag) -> str:
        url = reverse("admin:conversations_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.conversation_id)[:8])

    @admin.display(description=_("reply"))
    def message_ref(self, obj: Flag) -> str:
        return str(obj.message_id)[:8] if obj.message_id else "–"


class LedgerAdmin(admin.ModelAdmin):
    """Read-only: nobody adds, changes or deletes a ledger's rows here.  They
    go with what they belong to: deleting a user here takes theirs along
    (the admin asks each related model's admin, and refusing blocked it)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        match = getattr(request, "resolver_match", None)
        own = f"{self.opts.app_label}_{self.opts.model_name}_"
        if match is None or (match.url_name or "").startswith(own):
            return False  # never from this model's own pages
        return super().has_delete_permission(request, obj)


# A share's title, messages and token (which opens it) are content.
SHARE_CONTENT_LOOKUPS = ("title", "messages", "token", "conversation__")


@admin.register(Share)
class ShareAdmin(LedgerAdmin):
    """Share links, read-only.  That a conversation was shared, when, and
    whether the link was revoked is for "view share"; the shared title, text
    and the link itself are behind review_conversation, and opening one as a
    reviewer is recorded in the audit log, as for a transcript."""

    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    list_select_related = ("conversation__owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        if lookup.startswith(SHARE_CONTENT_LOOKUPS) and not (request and can_review(request.user)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_list_display(self, request):
        columns = ["id", "conversation_short_id", "owner", "message_count", "created_at", "revoked_at"]
        if can_review(request.user):
            columns.insert(1, "title")
        return columns

    def get_fields(self, request, obj=None):
        fields = ["id", "conversation_short_id", "owner", "message_count", "created_at", "revoked_at"]
        if can_review(request.user):
            fields[1:1] = ["title", "link", "shared_messages"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        share = self.get_object(request, object_id)
        if share is not None and can_review(request.user) and request.method == "GET":
            AuditLog.record(request.user, AuditLog.Action.VIEW, [share.conversation_id], page="share", share=share.pk)
        # Django's default subtitle is str(obj); kept free of content for every viewer.
        return super().change_view(request, object_id, form_url, {"subtitle": str(object_id), **(extra_context or {})})

    @admin.display(description=_("conversation"))
    def conversation_short_id(self, obj: Share) -> str:
        return str(obj.conversation_id)[:8]

    @admin.display(description=_("owner"))
    def owner(self, obj: Share):
        return obj.conversation.owner

    @admin.display(description=_("messages"))
    def message_count(self, obj: Share) -> int:
        return len(obj.messages)

    @admin.display(description=_("link"))
    def link(self, obj: Share) -> str:
        return format_html('<a href="{0}">{0}</a>', obj.get_absolute_url())

    @admin.display(description=_("shared messages"))
    def shared_messages(self, obj: Share) -> str:
        return format_html_join(
            "",
            '<div class="shared-message"><strong>{}</strong> <span class="quiet">{}</span><p>{}</p></div>',
            ((m["role"], m.get("model", ""), m["content"]) for m in obj.messages),
        )


@admin.register(AuditLog)
class AuditLogAdmin(LedgerAdmin):
    list_display = ("created_at", "actor_username", "action", "conversation_list", "details")
    list_filter = ("action", "created_at", ("actor", admin.RelatedOnlyFieldListFilter))
    search_fields = ("actor_username",)
    date_hierarchy = "created_at"
    fields = ("created_at", "actor_username", "actor", "action", "conversation_list", "details")
    readonly_fields = fields

    # Superusers only, and nobody may add, change or delete an entry here.
    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    @admin.display(description=_("conversations"))
    def conversation_list(self, obj: AuditLog):
        shown = obj.conversation_ids[:AUDIT_LINKS]
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:conversations_conversation_change", args=[pk]), pk[:8]) for pk in shown),
        )
        more = len(obj.conversation_ids) - len(shown)
        if more > 0:
            return format_html("{} {}", links, gettext("and %(n)d more") % {"n": more})
        return links or "–"


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("holder", "period", "shared", "max_tokens", "max_cost")
    list_filter = ("period", "shared", ("group", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user", "group")
    search_fields = ("user__username", "group__name")
    autocomplete_fields = ("user",)
    fields = ("user", "group", "shared", "period", "max_tokens", "max_cost")

    @admin.display(description=_("for"))
    def holder(self, obj: Budget) -> str:
        return obj.holder


@admin.register(UsageDay)
class UsageDayAdmin(LedgerAdmin):
    """Every user's tokens and cost by day and model."""

    list_display = ("day", "user", "model_key", "calls", "input_tokens", "output_tokens", "cost", "unmetered")
    list_filter = ("day", "model_key")
    list_select_related = ("user",)
    search_fields = ("user__username", "model_key")
    date_hierarchy = "day"

    @admin.display(description=_("cost (USD)"))
    def cost(self, obj: UsageDay) -> str:
        value = usage.priced(obj.model_key, obj.input_tokens, obj.output_tokens)
        return "–" if value is None else f"{value:.4f}"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """That users have API keys, their names, and when they were made, used and
    revoked; never the keys, which are not stored, nor their digests.  Staff
    with ``conversations.revoke_apikey`` may revoke keys (a leaked one, say);
    nobody adds or changes one here.  Deleting is Django's own permission, so
    that deleting a user here takes their keys along."""

    list_display = ("owner", "name", "shown_prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at", "last_used_at")
    list_select_related = ("owner",)
    search_fields = ("owner__username", "name", "prefix")
    date_hierarchy = "created_at"
    fields = ("owner", "name", "shown_prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke",)

    def has_add_permission(self, request) -> bool:
        return False  # a key is made by its owner, and shown to them alone

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        # Revoking, not deleting, is how staff end keys: the row stays as the record.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("conversations.revoke_apikey")

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # A digest is no secret that opens anything, but it is not for matching against either.
        if lookup.startswith("digest"):
            return False
        return super().lookup_allowed(lookup, value, request)

    @admin.display(description=_("key"), ordering="prefix")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.action(description=_("Revoke the selected API keys"), permissions=["revoke"])
    def revoke(self, request, queryset):
        if not self.has_revoke_permission(request):  # the permissions= check hides it; this one refuses it
            raise PermissionDenied
        count = queryset.revoke()
        self.message_user(
            request,
            ngettext("%(count)d API key revoked.", "%(count)d API keys revoked.", count) % {"count": count},
            messages.SUCCESS,
        )


class AuditedUserAdmin(UserAdmin):
    """Django's user admin, except that deleting a user is audited like a
    transcript view when the confirmation page lists their conversations and
    messages.  (Staff without the review permission cannot reach that list:
    they lack delete permission on conversations, so Django names only the
    kinds of objects they may not delete.)"""

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        if can_review(request.user):
            ids = list(Conversation.objects.filter(owner__in=objs).values_list("pk", flat=True))
            if ids:
                AuditLog.record(request.user, AuditLog.Action.VIEW, ids, page="user delete confirmation")
        return super().get_deleted_objects(objs, request)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
