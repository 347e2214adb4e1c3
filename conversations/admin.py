from django.contrib import admin
from django.db.models import Count
from django.utils.translation import gettext_lazy as _

from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("created_at", "id")
    fields = ("created_at", "role", "content", "status", "provider", "model", "input_tokens", "output_tokens")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("display_title", "owner", "model_key", "message_count", "updated_at")
    list_filter = ("model_key", "owner", "updated_at", "archived")
    list_select_related = ("owner",)
    search_fields = ("title", "messages__content")
    date_hierarchy = "updated_at"
    ordering = ("-updated_at",)
    readonly_fields = ("id", "owner", "created_at", "updated_at")
    fields = (
        "id",
        "owner",
        "title",
        "model_key",
        "system_prompt",
        "temperature",
        "max_tokens",
        "archived",
        "created_at",
        "updated_at",
    )
    inlines = (MessageInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(description=_("title"), ordering="title")
    def display_title(self, obj: Conversation) -> str:
        return obj.display_title

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count
