"""The ASGI entry point: HTTP through Django, websockets through Channels.

Run it with Daphne's websocket ping on, so idle sockets stay open through
proxies and dead clients are dropped:
``daphne --ping-interval 20 --ping-timeout 30 shop.asgi:application``.
The LISTEN connection (queueing.listener) starts with the first socket.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django is set up before anything imports models (the consumers do).
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from shop.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
