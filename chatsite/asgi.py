"""ASGI entry point: HTTP through Django, websockets through Channels.

The websocket stack checks the Origin header (the page's own origin, or a
trusted one: chatsite/websocket_origin.py), then
authenticates from the session cookie, then routes.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chatsite.websocket_origin import SameOriginValidator  # noqa: E402
from conversations.lifecycle import serving  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402

# serving(): the worker's durability loop starts with its first request (daphne
# sends no lifespan event), so a restarted worker sweeps its predecessor's replies.
application = serving(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
