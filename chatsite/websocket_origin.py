"""Websocket Origin checks by the full origin: scheme, host and port.

channels' ``AllowedHostsOriginValidator`` compares only the host name with
ALLOWED_HOSTS, so ``http://localhost:1`` or ``https://127.0.0.1`` passed for a
site served at ``http://localhost``.  Here a socket is accepted only when its
Origin is the page's own origin (the Host header, with the scheme the browser
used: https when ``DJANGO_HTTPS`` is on and the proxy says so in
X-Forwarded-Proto, or the socket itself is wss) and that host is allowed, or
when the Origin is one of CSRF_TRUSTED_ORIGINS (as Django's CSRF check
accepts them, ``https://*.example.com`` included).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def page_scheme(scope) -> str:
    """The scheme of the page that opened this socket."""
    if scope.get("scheme") == "wss":
        return "https"
    if settings.SECURE_PROXY_SSL_HEADER and _header(scope, b"x-forwarded-proto").split(",")[0].strip() == "https":
        return "https"
    return "http"


def allowed_origin(scope) -> bool:
    """Whether the socket's Origin may open it (see the module docstring)."""
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return False
    try:
        parsed = urlsplit(origin)
        parsed.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        wanted = urlsplit(trusted)
        # "*.example.com" means any subdomain, as in Django's CSRF check (".example.com" to is_same_domain).
        if parsed.scheme == wanted.scheme and is_same_domain(parsed.netloc, wanted.netloc.lstrip("*")):
            return True
    host = _header(scope, b"host")
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed_hosts):
        return False
    return f"{parsed.scheme}://{parsed.netloc}".lower() == f"{page_scheme(scope)}://{host}".lower()


class SameOriginValidator:
    """ASGI middleware: a websocket whose Origin is not allowed is denied (403) before the application runs."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not allowed_origin(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
