from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve as static_serve
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from shop import kitchen, metrics, ops, pages
from shop.api import agents, openapi, orders

handler404 = "shop.refusal.not_found"

api = [
    path("menu", orders.menu, name="api-menu"),
    path("orders", orders.order_create, name="api-order-create"),
    path("orders/<str:token>", orders.order_detail, name="api-order-detail"),
    path("orders/<str:token>/ready", agents.ready, name="api-order-ready"),
    path("orders/<str:token>/complete", agents.complete, name="api-order-complete"),
    path("orders/<str:token>/renew", agents.renew, name="api-order-renew"),
    path("outlets/<slug:slug>/heartbeat", agents.heartbeat, name="api-outlet-heartbeat"),
    path("outlets/<slug:slug>/claim", agents.claim, name="api-outlet-claim"),
    path("outlets/<slug:slug>/complete", agents.complete_batch, name="api-outlet-complete"),
    path(
        "outlets/<slug:slug>/stations/release",
        agents.release,
        name="api-outlet-stations-release",
    ),
    path("openapi.json", openapi.openapi_json, name="api-openapi"),
    path("docs/", openapi.docs, name="api-docs"),
]

kitchen_actions = [
    path("start", kitchen.start, name="kitchen-start"),
    path("next", kitchen.start_next, name="kitchen-next"),
    path("ready", kitchen.ready, name="kitchen-ready"),
    path("complete", kitchen.complete, name="kitchen-complete"),
    path("recall", kitchen.recall, name="kitchen-recall"),
]

urlpatterns = [
    path("api/", include(api)),
    path("", pages.home, name="home"),
    path("order/", pages.order_form, name="order-form"),
    path("o/<str:token>/", pages.order_status, name="order-status"),
    path("o/<str:token>/part/", pages.order_status_part, name="order-status-part"),
    path("kitchen/<slug:slug>/", pages.kitchen_screen, name="kitchen"),
    path("kitchen/<slug:slug>/tickets/", pages.kitchen_tickets_part, name="kitchen-tickets"),
    path("kitchen/<slug:slug>/", include(kitchen_actions)),
    path("metrics", metrics.metrics, name="metrics"),
    path("ops/", ops.ops_screen, name="ops"),
    path("ops/overview/", ops.ops_overview_part, name="ops-overview"),
    path("ops/outlets/add/", ops.outlet_add, name="ops-outlet-add"),
    path("ops/outlets/<slug:slug>/<slug:action>/", ops.outlet_action, name="ops-outlet-action"),
    path("ops/orders/<int:number>/<slug:action>/", ops.order_action, name="ops-order-action"),
    path("accounts/", include("django.contrib.auth.urls")),
    # One login page for the screens and the admin.
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    # Daphne serves no files; the screens' few static files come through Django
    # (behind a proxy in production, serve STATIC_ROOT after collectstatic instead).
    re_path(r"^static/(?P<path>.*)$", static_serve, {"insecure": True}),
]
