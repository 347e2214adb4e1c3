from django.apps import AppConfig
from django.conf import settings


class DevtoolsConfig(AppConfig):
    """Development tools: installed only with ``CHAT_DEVTOOLS`` (see chatsite/settings.py)."""

    name = "devtools"
    verbose_name = "Development tools"

    def ready(self) -> None:
        # Benchmark instrumentation, only when a benchmark asks for it.
        if settings.CHAT_SQL_WRITES_FILE:
            from devtools.instrumentation import count_writes_to

            count_writes_to(settings.CHAT_SQL_WRITES_FILE)
        if settings.CHAT_STALLS_FILE:
            from devtools.instrumentation import record_stalls_to

            record_stalls_to(settings.CHAT_STALLS_FILE)
        if settings.CHAT_TRACEMALLOC_DIR:
            from devtools.instrumentation import snapshot_on_signal

            snapshot_on_signal(settings.CHAT_TRACEMALLOC_DIR)
