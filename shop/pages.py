"""The HTML pages: the customer's order page, the order form, the kitchen and operations screens."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from queueing.selectors import order_by_token, order_events, order_ready_estimate


def order_status(request: HttpRequest, token: str) -> HttpResponse:
    order = order_by_token(token=token)
    if order is None:
        raise Http404("no such order")
    return render(
        request,
        "shop/order_status.html",
        {
            "order": order,
            "events": order_events(order=order),
            "estimate": order_ready_estimate(order=order),
        },
    )
