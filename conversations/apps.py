import os

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = _("Conversations")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        writes_file = os.environ.get("CHAT_SQL_WRITES_FILE")
        if writes_file:
            from conversations.instrumentation import count_writes_to

            count_writes_to(writes_file)
        stalls_file = os.environ.get("CHAT_STALLS_FILE")
        if stalls_file:
            from conversations.instrumentation import record_stalls_to

            record_stalls_to(stalls_file)
        from conversations import lifecycle

        lifecycle.install()
