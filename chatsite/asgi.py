"""ASGI entry point: HTTP through Django, websockets through Channels.

The websocket stack checks the Origin header against ALLOWED_HOSTS, then
authenticates from the session cookie, then routes.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from conversations import durability  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402


def starts_durability(app):
    """Start the worker's checkpoint and sweep loop with its first request
    (ASGI servers such as daphne send no start-up event), so that a restarted
    worker marks the replies its predecessor left streaming as interrupted."""

    async def wrapper(scope, receive, send):
        durability.ensure_running()
        return await app(scope, receive, send)

    return wrapper


application = starts_durability(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
