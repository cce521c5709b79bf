"""The HTML pages: home, the order form, the customer's order page and the kitchen screen.

Each live screen renders a snapshot with the id of the newest event it includes;
its script connects the screen's socket after that id and, on every event or
reconnect, fetches the snapshot's fragment again. Refetching instead of patching
the page event by event makes a screen converge on the database whatever it
missed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_GET, require_http_methods

from queueing.errors import QueueError
from queueing.events import events_cursor
from queueing.models import EventType, Order, OrderEvent, OrderKind, OrderState, Outlet
from queueing.selectors import (
    kitchen_tickets,
    last_event_id,
    order_by_token,
    order_events,
    order_ready_estimate,
    outlet_last_bumped,
    outlet_lines_to_make,
    outlet_names,
    outlet_queue,
    outlets_for_user,
    outlets_taking_orders,
)
from queueing.services.routing import OUTLET_CLOSED, OUTLET_UNAVAILABLE
from shop.access import is_manager, kitchen_outlet, works_at
from shop.forms import OrderForm
from shop.kitchen import station_of
from shop.models import MenuItem
from shop.ordering import IDEMPOTENCY_CONFLICT, order_place, order_request_parse
from shop.payments import money, order_payment, order_total
from shop.rate_limit import order_limit, rate_limit_check
from shop.refusal import Refused

# The customer's stepper, one step per state an order goes through. Delivery and
# takeaway differ only in what "ready" means to the customer.
STEPS_DELIVERY = ("Received", "In the kitchen", "Out for delivery", "Done")
STEPS_TAKEAWAY = ("Received", "In the kitchen", "Ready for pickup", "Done")
# The step an order in each state is at; a completed order has done them all.
STEP_OF_STATE: dict[str, int] = {
    OrderState.QUEUED: 0,
    OrderState.PREPARING: 1,
    OrderState.READY: 2,
    OrderState.COMPLETED: 4,
}


def nav_kitchens(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the kitchens the signed-in user works at, for the top bar.

    Lazy, so a page without the top bar (the kitchen screen, a live fragment)
    makes no query; one query where the bar is shown.
    """

    def kitchens() -> list[Outlet]:
        user = request.user
        if not user.is_authenticated:
            return []
        return list(outlets_for_user(user=user, manager=False).order_by("name"))

    return {"nav_kitchens": SimpleLazyObject(kitchens)}


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    manager = is_manager(user)
    kitchens: QuerySet[Outlet] | list[Outlet] = (
        outlets_for_user(user=user, manager=manager) if user.is_authenticated else []
    )
    return render(request, "shop/home.html", {"kitchens": kitchens, "manager": manager})


# --- The order form ---------------------------------------------------------------


def known_delivery_zones() -> list[str]:
    """Zones the order form offers: the configured ones only, never what other customers typed."""
    return sorted(
        settings.HEARTH_DELIVERY_ZONES,
        key=lambda z: [int(p) if p.isascii() and p.isdigit() else p for p in re.split(r"(\d+)", z)],
    )


def _order_form(data: Any = None) -> OrderForm:
    return OrderForm(
        data,
        menu=MenuItem.objects.filter(available=True).order_by("name"),
        outlets=outlets_taking_orders(),
        zones=known_delivery_zones(),
    )


@require_http_methods(["GET", "POST"])
def order_form(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "shop/order_form.html", {"form": _order_form()})
    form = _order_form(request.POST)
    status = 400
    try:
        rate_limit_check(limit=order_limit(), request=request)
    except Refused as exc:
        form.add_error(
            None, f"Too many orders from here just now: try again in {exc.extra['retry_after']} s."
        )
        response = render(request, "shop/order_form.html", {"form": form}, status=429)
        response["Retry-After"] = str(exc.extra["retry_after"])
        return response
    if form.is_valid():
        payload = form.payload()
        try:
            order, _ = order_place(
                request=order_request_parse(payload),
                idempotency_key=form.idempotency_key(),
                body=json.dumps(payload, sort_keys=True).encode(),
            )
        except Refused as exc:
            if exc.code == IDEMPOTENCY_CONFLICT:
                # Back in the browser, changed, and sent again: a new order needs a new form id.
                form.renew_id()
                form.add_error(
                    None,
                    "This form already placed an order. Check your items and press Place order "
                    "again to place another one.",
                )
                status = 409
            else:
                form.add_order_error(exc)
                status = exc.status
        except QueueError as exc:  # the outlet stopped taking orders between check and queue
            field = exc.context.get("field")
            form.add_error(field if field in form.fields else None, exc.message)
            status = exc.status
        else:
            return redirect("order-status", token=order.token)
    return render(request, "shop/order_form.html", {"form": form}, status=status)


# --- The customer's order page ------------------------------------------------------


def _notice(order: Order, events: list[OrderEvent]) -> dict[str, str] | None:
    """What the customer must be told in plain words: moved, cancelled, waiting, stuck."""
    if order.state == OrderState.CANCELLED:
        where = order.outlet.name if order.outlet else "The shop"
        if order.cancel_reason == OUTLET_UNAVAILABLE:
            text = f"{where} closed unexpectedly, so it cannot make your order."
        elif order.cancel_reason == OUTLET_CLOSED:
            text = f"{where} has closed for now, so it cannot make your order."
        else:
            text = f"{where} could not make it ({order.cancel_reason or 'no reason given'})."
        return {
            "tone": "bad",
            "title": "Your order was cancelled",
            "text": f"{text} Nothing will be made and there is nothing to collect.",
            "next": "Please place a new order",
        }
    if order.state == OrderState.ATTENTION:
        return {
            "tone": "warn",
            "title": "We are sorting out a problem with your order",
            "text": (
                "A manager is looking at it: they will send it to a kitchen, mark it handed "
                "over, or cancel it and say why. This page shows their decision as soon as "
                "they make it."
            ),
        }
    handed_over = [e for e in events if e.type == EventType.COMPLETED and _by_manager(e)]
    if order.state == OrderState.COMPLETED and handed_over:
        return {
            "tone": "info",
            "title": "Your order was handed over",
            "text": "A manager recorded that your order reached you.",
        }
    if not order.is_open:
        return None
    if order.outlet_id is None:
        return {
            "tone": "warn",
            "title": "Waiting for a kitchen",
            "text": "No kitchen can take it this minute; it goes to the first one that can.",
        }
    moves = [e for e in events if e.type == EventType.REROUTED and e.outlet_id]
    if moves and _by_manager(moves[-1]):
        now_at = moves[-1].outlet.name if moves[-1].outlet else "another outlet"
        return {
            "tone": "info",
            "title": f"A manager sent your order to {now_at}",
            "text": f"{now_at} is making it now.",
        }
    if moves:
        last = moves[-1]
        before = last.from_outlet.name if last.from_outlet else "another outlet"
        now_at = last.outlet.name if last.outlet else "another outlet"
        if before != now_at:
            return {
                "tone": "info",
                "title": f"Your order moved to {now_at}",
                "text": f"{before} could not make it, so {now_at} is making it now.",
            }
    return None


def _by_manager(event: OrderEvent) -> bool:
    """An event a manager's way out wrote (send, hand over): its detail names who."""
    return isinstance(event.detail, dict) and bool(event.detail.get("by"))


TIMELINE_WORDS = {
    EventType.PLACED: "Order received",
    EventType.WAITING: "Waiting for a kitchen",
    EventType.CLAIMED: "A cook started it",
    EventType.READY: "Ready",
    EventType.COMPLETED: "Done",
    EventType.RECALLED: "Back on the pass",
    EventType.REROUTED: "Moved",
    EventType.CANCELLED: "Cancelled",
    EventType.LEASE_EXPIRED: "Restarted",
    EventType.RELEASED: "Restarted",
    EventType.ATTENTION: "Set aside for a manager",
}


def _timeline(events: list[OrderEvent]) -> list[tuple[OrderEvent, str]]:
    """The order's events in the customer's words."""
    lines = []
    for event in events:
        if event.state == "ready" and event.type in (
            EventType.CLAIMED,
            EventType.LEASE_EXPIRED,
            EventType.RELEASED,
        ):
            continue  # who hands a made order over is the kitchen's business
        words = TIMELINE_WORDS.get(event.type, event.get_type_display())  # type: ignore[call-overload]
        if event.type == EventType.REROUTED:
            words = f"Moved to {event.outlet.name}" if event.outlet else "Waiting for a kitchen"
            if _by_manager(event) and event.outlet:
                words = f"A manager sent it to {event.outlet.name}"
        elif event.type == EventType.COMPLETED and _by_manager(event):
            words = "Handed over (recorded by a manager)"
        elif event.type == EventType.CANCELLED and isinstance(event.detail, dict):
            reason = event.detail.get("reason")
            words = f"{words}: {reason}" if reason else words
        elif event.outlet and event.type in (EventType.PLACED, EventType.CLAIMED):
            words = f"{words} · {event.outlet.name}"
        lines.append((event, words))
    return lines


def _order_context(order: Order) -> dict[str, Any]:
    cursor, _ = events_cursor()  # read first: what follows is at least this fresh
    events = list(order_events(order=order))
    steps = STEPS_DELIVERY if order.kind == OrderKind.DELIVERY else STEPS_TAKEAWAY
    at = STEP_OF_STATE.get(order.state)  # None: cancelled or set aside
    stepper = [
        {
            "label": label,
            "status": "off" if at is None else ("done" if i < at else "now" if i == at else "todo"),
        }
        for i, label in enumerate(steps)
    ]
    # Events are ordered by id, which a later-committing writer can undercut; the
    # newest id overall bounds what this snapshot has seen.
    total = order_total(order.lines)
    return {
        "order": order,
        "total": money(total) if total is not None else None,
        "payment": order_payment(order),
        "timeline": _timeline(events),
        "stepper": stepper,
        "estimate": order_ready_estimate(order=order),
        "notice": _notice(order, events),
        "last_event_id": max([last_event_id()] + [e.pk for e in events]),
        "cursor": cursor,
        "server_now": timezone.now(),
    }


def _order_or_404(token: str) -> Order:
    order = order_by_token(token=token)
    if order is None:
        raise Http404("no such order")
    return order


@require_GET
def order_status(request: HttpRequest, token: str) -> HttpResponse:
    context = _order_context(_order_or_404(token))
    context["refresh_seconds"] = 10
    response = render(request, "shop/order_status.html", context)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def order_status_part(request: HttpRequest, token: str) -> HttpResponse:
    """The live part of the order page, fetched again on every event."""
    response = render(request, "shop/_order_status.html", _order_context(_order_or_404(token)))
    response["Cache-Control"] = "no-store"
    return response


# --- The kitchen screen --------------------------------------------------------------


# A screen shows a few rows of tickets; the rest wait off screen and are only counted.
KITCHEN_MAX_TICKETS = 40


def all_day(orders_lines: list[list[dict[str, Any]]]) -> list[tuple[str, int]]:
    """Items still to make across the queue (queued and cooking), most first: the kitchen's 'all day'."""
    counts: Counter[str] = Counter()
    for lines in orders_lines:
        for line in lines:
            counts[line["name"]] += int(line["qty"])
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _kitchen_context(outlet: Outlet, station: str) -> dict[str, Any]:
    cursor, newest = events_cursor()  # read first: the tickets below are at least this fresh
    queue = kitchen_tickets(outlet=outlet)
    tickets = list(queue[:KITCHEN_MAX_TICKETS])
    if len(tickets) < KITCHEN_MAX_TICKETS:
        more = 0
    else:  # counted without the per-ticket reroute lookup
        more = outlet_queue(outlet=outlet).count() - len(tickets)
    names = outlet_names() if any(t.moved_from_id for t in tickets) else {}  # type: ignore[attr-defined]
    now = timezone.now()
    for ticket in tickets:
        ticket.moved_from_name = names.get(ticket.moved_from_id)  # type: ignore[attr-defined]
        age = max(0, int((now - ticket.created_at).total_seconds()))
        ticket.age_text = f"{age // 60}:{age % 60:02d}"  # type: ignore[attr-defined]
        ticket.age_level = (  # type: ignore[attr-defined]
            "red" if age >= outlet.red_after else "amber" if age >= outlet.amber_after else "ok"
        )
    return {
        "outlet": outlet,
        "tickets": tickets,
        "more_tickets": more,
        "all_day": all_day(outlet_lines_to_make(outlet=outlet)),
        "last_bumped": outlet_last_bumped(outlet=outlet, station=station),  # what it may recall
        "last_event_id": newest,
        "cursor": cursor,
        "server_now": now,
    }


def _station(request: HttpRequest) -> str:
    """The screen asking: its user and the tab id it sends (``?tab=``), as its actions name it."""
    return station_of(request.user.get_username(), request.GET.get("tab"))


@require_GET
def kitchen_screen(request: HttpRequest, slug: str) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    outlet = kitchen_outlet(user=request.user, slug=slug)
    context = _kitchen_context(outlet, _station(request))
    context["heartbeat_interval"] = settings.HEARTH_HEARTBEAT_INTERVAL
    context["watching_only"] = not works_at(request.user, outlet)
    response = render(request, "shop/kitchen.html", context)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def kitchen_tickets_part(request: HttpRequest, slug: str) -> HttpResponse:
    """The tickets of the kitchen screen, fetched again on every event of the outlet."""
    if not request.user.is_authenticated:
        return HttpResponse("Signed out: sign in again.", status=401, content_type="text/plain")
    response = render(
        request,
        "shop/_kitchen_tickets.html",
        _kitchen_context(kitchen_outlet(user=request.user, slug=slug), _station(request)),
    )
    response["Cache-Control"] = "no-store"
    return response
