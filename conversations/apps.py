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
    call_when_loop_runs(lambda loop: (warm_up(), gc.collect(), gc.freeze()))


def warm_up() -> None:
    """Pay the first reply's one-off costs when the server starts, not while
    the first users' replies stream (they stalled its loop for 50-90 ms):
    compiling the reply templates, markdown-it's and Pygments' first render,
    and each configured provider's SDK client (its SSL context)."""
    import logging

    from django.template.loader import get_template

    from conversations.markdown import render_markdown
    from conversations.providers import anthropic, openai

    for name in ("_message", "_append", "_frame", "_feedback", "_composer_ack", "_composer_error"):
        get_template(f"conversations/{name}.html")
    get_template("conversations/detail.html")
    render_markdown("**warm** `up`\n\n- a\n\n```python\nprint(1)\n```\n")
    for provider in (openai, anthropic):
        try:
            provider._client()
        except Exception:  # no key configured: nothing to build
            logging.getLogger(__name__).debug("no %s client to warm up", provider.__name__)


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
