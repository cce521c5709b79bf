from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from shop import pages
from shop.api import agents, openapi, orders

api = [
    path("orders", orders.order_create, name="api-order-create"),
    path("orders/<str:token>", orders.order_detail, name="api-order-detail"),
    path("orders/<str:token>/ready", agents.ready, name="api-order-ready"),
    path("orders/<str:token>/complete", agents.complete, name="api-order-complete"),
    path("orders/<str:token>/renew", agents.renew, name="api-order-renew"),
    path("outlets/<slug:slug>/heartbeat", agents.heartbeat, name="api-outlet-heartbeat"),
    path("outlets/<slug:slug>/claim", agents.claim, name="api-outlet-claim"),
    path("outlets/<slug:slug>/complete", agents.complete_batch, name="api-outlet-complete"),
    path("openapi.json", openapi.openapi_json, name="api-openapi"),
    path("docs/", openapi.docs, name="api-docs"),
]

urlpatterns = [
    path("api/", include(api)),
    path("o/<str:token>/", pages.order_status, name="order-status"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
