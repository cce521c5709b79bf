"""Websocket URLs (served by shop.asgi); the protocol is in docs/live.md."""

from __future__ import annotations

from django.urls import path, re_path

from shop.consumers import KitchenConsumer, OpsConsumer, OrderConsumer, UnknownSocket

websocket_urlpatterns = [
    path("ws/kitchen/<slug:slug>/", KitchenConsumer.as_asgi(), name="ws-kitchen"),
    path("ws/orders/<str:token>/", OrderConsumer.as_asgi(), name="ws-order"),
    path("ws/ops/", OpsConsumer.as_asgi(), name="ws-ops"),
    re_path(r"", UnknownSocket.as_asgi(), name="ws-unknown"),  # 4404, not a 500
]
