"""``manage.py checkproviders``: is every model endpoint reachable and set up right?

For each endpoint (the built-in ``openai`` and ``anthropic`` when they have
models, then those of CHAT_ENDPOINTS_FILE / CHAT_ENDPOINTS) it makes one
short real request, listing the endpoint's models, and prints one verdict
line: reachable, key accepted, base URL right, the configured models listed.
``--complete`` also asks the endpoint's first model for a one-token reply.
An endpoint with ``"models": "discover"`` has the list it gave remembered
(what ``--refresh`` alone is for).  A built-in endpoint whose key is unset is
skipped.  The exit status is 1 when any endpoint failed.  Keys are never
printed: only the names of the variables holding them.
"""

from __future__ import annotations

import asyncio

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from conversations.providers import anthropic as anthropic_provider
from conversations.providers import get_provider
from conversations.providers import openai as openai_provider
from conversations.providers.base import (
    ChatMessage,
    ChatRequest,
    Endpoint,
    ErrorKind,
    ModelSpec,
    ProviderError,
    TextDelta,
)
from conversations.providers.catalog import ConfiguredEndpoint, all_endpoints, refresh_discovered

BUILT_IN = ("openai", "anthropic")


class Command(BaseCommand):
    help = "Make one short request to every model endpoint and say, per endpoint, whether it works."

    def add_arguments(self, parser):
        parser.add_argument(
            "--complete", action="store_true", help="Also ask each endpoint's first model for a one-token reply."
        )
        parser.add_argument(
            "--refresh",
            action="store_true",
            help='Only fetch the model lists of the "discover" endpoints again (no other check).',
        )

    def handle(self, *args, **options):
        try:
            endpoints = all_endpoints()
        except ImproperlyConfigured as exc:
            raise CommandError(f"The endpoints are misconfigured: {exc}") from None
        failed = 0
        for configured in endpoints:
            if options["refresh"] and configured.models is not None:
                continue
            verdict, ok = self._check(configured, complete=options["complete"])
            failed += not ok
            self.stdout.write(f"{'ok' if ok else 'FAIL'}  {configured.endpoint.name}: {verdict}")
        if failed:
            raise CommandError(f"{failed} endpoint(s) failed.")

    def _check(self, configured: ConfiguredEndpoint, *, complete: bool) -> tuple[str, bool]:
        endpoint = configured.endpoint
        if not endpoint.is_available():
            if endpoint.name in BUILT_IN:
                return f"skipped, {endpoint.key_env} is not set", True
            return f"{endpoint.key_env} is not set", False
        where = f"{endpoint.kind} at {endpoint.base_url or 'the default URL'}"
        try:
            if configured.models is None:
                listed = refresh_discovered(endpoint)
            else:
                listed = get_provider(endpoint.kind).list_models(endpoint)
        except ProviderError as exc:
            return f"{where}: {_explain(endpoint, exc)}", False
        key = f"key {endpoint.key_env} accepted" if endpoint.key_env else "no key needed"
        verdict = f"{where}: reachable, {key}, {len(listed)} models listed"
        wanted = [name for name, _label, _values in configured.models or ()]
        missing = [name for name in wanted if name not in listed]
        if configured.models is None:
            verdict += " (remembered for discovery)"
        elif missing:
            return f"{verdict}, but not {', '.join(missing)}", False
        else:
            verdict += ", all configured models among them"
        if complete:
            first = wanted[0] if wanted else (listed[0] if listed else "")
            if not first:
                return f"{verdict}; no model to complete with", False
            try:
                text = asyncio.run(_one_token(endpoint, first))
            except ProviderError as exc:
                return f"{verdict}; a one-token completion on {first} failed: {_explain(endpoint, exc)}", False
            verdict += f"; {first} answered {text!r}"
        return verdict, True


def _explain(endpoint: Endpoint, exc: ProviderError) -> str:
    """What went wrong, in the words an operator acts on."""
    if exc.status == 404 or exc.kind is ErrorKind.NOT_FOUND:
        if endpoint.kind == "anthropic":
            hint = "drop the /v1" if (endpoint.base_url or "").rstrip("/").endswith("/v1") else "check it"
        else:
            hint = "it usually ends in /v1"
        return f"HTTP 404, check the base URL: {hint} ({exc.detail})"
    if exc.kind is ErrorKind.AUTH:
        return f"the key was refused: check {endpoint.key_hint} ({exc.detail})"
    if exc.kind is ErrorKind.CONNECTION:
        return f"cannot reach the server ({exc.detail})"
    if exc.kind is ErrorKind.TIMEOUT:
        return "no answer in time"
    status = f"HTTP {exc.status}, " if exc.status else ""
    return f"{status}{exc.message} ({exc.detail})"


async def _one_token(endpoint: Endpoint, model: str) -> str:
    spec = ModelSpec(provider=endpoint.kind, name=model, label=model, endpoint=endpoint, streaming=False)
    request = ChatRequest(spec, [ChatMessage("user", "Say OK.")], max_tokens=1, tags=("check",))
    text = []
    try:
        async for event in get_provider(endpoint.kind).events(request):
            if isinstance(event, TextDelta):
                text.append(event.text)
    finally:
        await openai_provider.clients.aclose()
        await anthropic_provider.clients.aclose()
    return "".join(text)
