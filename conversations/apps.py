from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = _("Conversations")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from conversations import actions, lifecycle

        lifecycle.install()
        user_logged_out.connect(actions.sessions_changed, dispatch_uid="chat-sessions-logout")
        post_save.connect(actions.sessions_changed, sender=get_user_model(), dispatch_uid="chat-sessions-user")
        post_delete.connect(actions.account_deleted, sender=get_user_model(), dispatch_uid="chat-sessions-deleted")
