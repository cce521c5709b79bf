"""The customer's side of the API: place an order, follow it."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from queueing.models import Order
from queueing.selectors import order_by_token, order_events, order_ready_estimate
from shop.access import customer_detail, may_rush
from shop.api.common import api_view, json_body, order_token
from shop.models import MenuItem, Payment
from shop.ordering import order_submit
from shop.payments import money, order_payment, order_total
from shop.rate_limit import order_limit, rate_limit_check
from shop.refusal import Refused

MAX_IDEMPOTENCY_KEY = 200


def order_summary(order: Order, request: HttpRequest | None = None) -> dict[str, Any]:
    """The order as every API answer shows it."""
    status_path = reverse("order-status", args=[order.token])
    estimate = order_ready_estimate(order=order)
    total = order_total(order.lines)
    payment = order_payment(order)
    return {
        "number": order.pk,
        "token": order.token,
        "kind": order.kind,
        "state": order.state,
        "outlet": order.outlet.slug if order.outlet else None,
        "zone": order.zone,
        "rush": order.rush,
        "lines": [
            {
                "item": ln["item"],
                "name": ln["name"],
                "qty": ln["qty"],
                "note": ln["note"],
                "price": ln.get("price"),
            }
            for ln in order.lines
        ],
        "total": money(total) if total is not None else None,
        "paid": _paid(payment) if payment else None,
        "cancel_reason": order.cancel_reason,
        "estimated_ready_at": estimate.isoformat() if estimate else None,
        "status_url": request.build_absolute_uri(status_path) if request else status_path,
    }


def _paid(payment: Payment) -> dict[str, Any]:
    return {
        "amount": money(payment.amount),
        "method": payment.method,
        "where": payment.where,
        "at": payment.paid_at.isoformat(),
    }


def _idempotency_key(request: HttpRequest) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY or "\x00" in key:
        raise Refused(
            400,
            "invalid",
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters",
            field="Idempotency-Key",
        )
    return key


@api_view("POST")
def order_create(request: HttpRequest) -> JsonResponse:
    rate_limit_check(limit=order_limit(), request=request)
    data = json_body(request)
    if data.get("rush") is True and not may_rush(request):
        raise Refused(
            403, "forbidden", "only staff or a trusted integration may rush an order", field="rush"
        )
    key = _idempotency_key(request)
    # The same order written with other spacing or key order is the same request.
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    order, created = order_submit(payload=data, idempotency_key=key, body=canonical)
    answer = order_summary(order, request)
    answer["message"] = f"order {order.pk}: we'll tell you when it's ready"
    return JsonResponse(
        answer, status=202, headers={"Idempotent-Replayed": "false" if created else "true"}
    )


@api_view("GET")
def order_detail(request: HttpRequest, token: str) -> JsonResponse:
    order = order_by_token(token=order_token(token))
    if order is None:
        raise Refused(404, "not_found", "no order with this token")
    answer = order_summary(order, request)
    answer["timeline"] = [
        {
            "id": ev.pk,
            "type": ev.type,
            "state": ev.state,
            "at": ev.at.isoformat(),
            "outlet": ev.outlet.slug if ev.outlet else None,
            "from_outlet": ev.from_outlet.slug if ev.from_outlet else None,
            "detail": customer_detail(ev.detail),
        }
        for ev in order_events(order=order)
    ]
    return JsonResponse(answer)


# A phone app may cache the menu briefly; an item taken off is refused at ordering anyway.
MENU_MAX_AGE = 60


@api_view("GET")
def menu(request: HttpRequest) -> JsonResponse:
    """The items on sale today, in one query."""
    items = [
        {**item, "price": money(item["price"])}
        for item in MenuItem.objects.filter(available=True)
        .order_by("name")
        .values("slug", "name", "price", "prep_seconds", "available")
    ]
    response = JsonResponse({"currency": "GBP", "items": items})
    response["Cache-Control"] = f"public, max-age={MENU_MAX_AGE}"
    return response
