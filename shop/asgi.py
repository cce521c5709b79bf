"""The ASGI entry point: HTTP through Django, websockets through Channels.

Run it with Daphne's websocket ping on, so idle sockets stay open through
proxies and dead clients are dropped:
``daphne --ping-interval 20 --ping-timeout 30 shop.asgi:application``.
The LISTEN connection (queueing.listener, fanned out by shop.live) starts with the first socket.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

# Under ASGI every HTTP request runs its view in a thread of its own, so a
# persistent per-thread connection (CONN_MAX_AGE) is in fact one new PostgreSQL
# connection per request, left open until the thread is collected: under load a
# web process alone ran a server out of connections. Django's advice for ASGI is
# its connection pool instead; only the web process uses it (set before setup).
_db: dict[str, Any] = settings.DATABASES["default"]
if _db.get("ENGINE") == "django.db.backends.postgresql" and "pool" not in _db.get("OPTIONS", {}):
    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": int(os.environ.get("HEARTH_WEB_DB_POOL", "20")),
        "timeout": 30,
    }

# Django is set up before anything imports models (the consumers do).
django_application = get_asgi_application()

from django.db import connection  # noqa: E402

from shop.pool_check import pool_check_quietly  # noqa: E402

# No empty query before every request: a dead pooled connection has said so (pool_check).
pool_check_quietly(connection)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from shop.api.fast import ApiFastPath  # noqa: E402
from shop.body_limit import BodyLimit, daphne_refuses_large_bodies  # noqa: E402
from shop.collector import quiet_collector  # noqa: E402
from shop.routing import websocket_urlpatterns  # noqa: E402
from shop.serving import daphne_adjusted  # noqa: E402

# Daphne reads a whole body before any ASGI code runs: refuse oversized ones as they arrive.
daphne_refuses_large_bodies(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
# Connections accepted in small batches, so the web processes on one socket share them.
daphne_adjusted()

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(
            # The order endpoints in one pool thread each, heartbeats and parked claims in the
            # loop (shop.api.fast, shop.api.beats); every other path through Django's.
            ApiFastPath(django_application),  # type: ignore[arg-type]  # Django's narrow type
            settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        ),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# Loaded (the URLconf and its views too, not at the first request): what is here lives
# as long as the process, and is never scanned again.
get_resolver().url_patterns  # noqa: B018 (imports the URLconf and its views now)
quiet_collector(settings.HEARTH_GC_FULL_AFTER)
