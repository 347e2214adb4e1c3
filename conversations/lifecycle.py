"""What a worker process does when it starts serving and when it stops.

* ``install()`` (from ``AppConfig.ready``): tune the garbage collector, and
  under daphne register, through Twisted's public reactor API, the warm-up for
  when the loop runs and the before-shutdown trigger that saves the replies in
  progress.  Outside daphne (tests, management commands) only the GC tuning
  applies.
* ``serving(app)``: an ASGI wrapper that starts the durability loop on the
  first request, so a restarted worker sweeps what its predecessor left
  streaming (daphne sends no lifespan event).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time

from django.conf import settings

from conversations import durability

logger = logging.getLogger(__name__)

# Young-generation threshold: CPython's default (700) runs a collection every
# few frames under load; long-lived objects are frozen instead (see tune_gc).
GC_THRESHOLDS = (20_000, 20, 20)
SHUTDOWN_GRACE_SECONDS = 10.0


def install() -> None:
    tune_gc()
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return  # not under daphne: no loop to warm up, no shutdown to hook
    # callWhenRunning fires just before daphne's loop runs; the warm-up needs
    # it running (the SDK clients are kept per loop), so it goes on the loop.
    reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(_on_serving))
    # Before daphne cancels the sockets: without this the replies in progress
    # would wait for the sweep, with only their last checkpoint.
    reactor.addSystemEventTrigger("before", "shutdown", _before_shutdown)


def tune_gc() -> None:
    """Fewer, shorter garbage collections in a long-running server.

    Everything allocated while starting (modules, settings, templates) lives as
    long as the process: ``gc.freeze()`` moves it out of the collector's sight,
    so a full collection walks only what requests made, and a higher
    young-generation threshold makes collections rarer.  ``CHAT_GC_TUNING=0``
    keeps CPython's defaults (to measure the difference).
    """
    if not settings.CHAT_GC_TUNING:
        return
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def warm_up() -> None:
    """Pay the first reply's one-off costs when the server starts, not while
    the first users' replies stream (they stalled its loop for 50-90 ms):
    compiling the reply templates, markdown-it's and Pygments' first render,
    and the SDK client of each endpoint offering a model (its SSL context)."""
    from django.template.loader import get_template

    from conversations import providers
    from conversations.markdown import render_markdown

    for name in ("_message", "_append", "_frame", "_feedback", "_composer_ack", "_composer_error"):
        get_template(f"conversations/{name}.html")
    get_template("conversations/detail.html")
    render_markdown("**warm** `up`\n\n- a\n\n```python\nprint(1)\n```\n")
    endpoints = {spec.endpoint_name: spec.endpoint for spec in providers.offered_models() if spec.provider != "demo"}
    for endpoint in endpoints.values():
        providers.get_provider(endpoint.kind).warm_up(endpoint)


def _on_serving() -> None:
    began = time.perf_counter()
    warm_up()
    # The URLconf, consumers and SDKs are imported after ready(): freeze them too.
    if settings.CHAT_GC_TUNING:
        gc.collect()
        gc.freeze()
    logger.info("Warmed up in %d ms", (time.perf_counter() - began) * 1000)


def _before_shutdown():
    from twisted.internet.defer import Deferred

    return Deferred.fromFuture(asyncio.ensure_future(durability.interrupt_all(SHUTDOWN_GRACE_SECONDS)))


def serving(app):
    """Start the worker's checkpoint and sweep loop with its first request."""

    async def wrapper(scope, receive, send):
        durability.ensure_running()
        return await app(scope, receive, send)

    return wrapper
