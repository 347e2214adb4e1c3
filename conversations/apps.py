import gc
import os

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Young-generation threshold: CPython's default (700) runs a collection every
# few frames under load; long-lived objects are frozen instead (see tune_gc).
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Fewer, shorter garbage collections in a long-running server.

    Everything allocated while starting (modules, settings, templates) lives as
    long as the process: ``gc.freeze()`` moves it out of the collector's sight,
    so a full collection walks only what the requests made, and a higher
    young-generation threshold makes collections rarer.  ``CHAT_GC_TUNING=0``
    keeps CPython's defaults (to measure the difference).  Import-time state
    only: no request is frozen, so nothing it allocates is kept alive.
    """
    if os.environ.get("CHAT_GC_TUNING", "1") == "0":
        return
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()

    from conversations.instrumentation import call_when_loop_runs

    # Once more when the server runs: the URLconf, consumers and SDKs are imported after ready().
    call_when_loop_runs(lambda loop: (gc.collect(), gc.freeze()))


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
        tune_gc()
