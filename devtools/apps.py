from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development tools: installed only with ``CHAT_DEVTOOLS`` (see chatsite/settings.py)."""

    name = "devtools"
    verbose_name = "Development tools"
