"""The kitchen screen's actions: start, next, ready, bump, recall. Each checks access and calls one service.

They answer JSON for the screen's fetch() calls. Session authentication means
CSRF applies (the screen sends the token in ``X-CSRFToken``). A refusal of the
queue (a stale fence, a ticket taken by another station) is a 4xx with a
message fit to show a cook; it is never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse

from queueing.errors import NotFound, QueueError, StaleFence, TicketTaken
from queueing.models import Order, Outlet
from queueing.selectors import order_by_token
from queueing.services import (
    order_claim_next,
    order_claim_ticket,
    order_mark_ready,
    order_recall,
)
from queueing.tickets import Ticket
from shop.access import kitchen_outlet
from shop.api.common import fence_of, json_body, token_of
from shop.payments import order_bump_paid
from shop.refusal import Refused, refusal_response

STATE_WORDS = {
    "queued": "waiting",
    "preparing": "being made",
    "ready": "ready",
    "completed": "done",
    "cancelled": "cancelled",
    "attention": "set aside for a manager",
}


TICKET_GONE = "This ticket is not at this outlet any more; the screen has been refreshed."

KitchenAction = Callable[[HttpRequest, Outlet, dict[str, Any]], JsonResponse]


def kitchen_action(view: KitchenAction) -> Callable[..., JsonResponse]:
    """POST only; the user must work at the outlet; the body is a JSON object; refusals become JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, slug: str) -> JsonResponse:
        try:
            if request.method != "POST":
                raise Refused(
                    405, "method_not_allowed", f"{request.method} is not allowed here; use POST"
                )
            if not request.user.is_authenticated:
                raise Refused(
                    401,
                    "unauthenticated",
                    "This screen is signed out: sign in again.",
                    login_url=f"{settings.LOGIN_URL}?{REDIRECT_FIELD_NAME}=/kitchen/{slug}/",
                )
            try:
                outlet = kitchen_outlet(user=request.user, slug=slug)
            except Http404:
                raise Refused(404, "not_found", f"There is no outlet {slug}.") from None
            except PermissionDenied:
                raise Refused(403, "forbidden", "You do not work at this outlet.") from None
            return view(request, outlet, json_body(request, required=False))
        except Refused as exc:
            response = refusal_response(
                Refused(exc.status, exc.code, _sentence(exc.message), field=exc.field, **exc.extra)
            )
        except StaleFence as exc:
            response = refusal_response(Refused(exc.status, exc.code, _stale_message(exc)))
        except NotFound as exc:  # no such order, or another outlet's: both said the same way
            response = refusal_response(Refused(exc.status, exc.code, TICKET_GONE))
        except QueueError as exc:
            response = refusal_response(Refused(exc.status, exc.code, _sentence(exc.message)))
        if response.status_code == 405:
            response["Allow"] = "POST"
        return response

    return wrapper


TAB = re.compile(r"[A-Za-z0-9]{1,8}")


def station_of(username: str, tab: object) -> str:
    """A screen's station: always its signed-in user's name, with the tab id when it is a valid one."""
    tab = tab if isinstance(tab, str) and TAB.fullmatch(tab) else ""
    user = username[:50]
    return f"{user}·{tab}" if tab else user


def station_name(request: HttpRequest, data: dict[str, Any]) -> str:
    """Who is cooking, as other stations see it: the user's name and the screen's tab id."""
    return station_of(request.user.get_username(), data.get("tab"))


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


def _stale_message(exc: StaleFence) -> str:
    token = exc.context.get("token")
    order = order_by_token(token=token) if isinstance(token, str) else None
    if order is None:
        return "This ticket changed since the screen last saw it; the screen has been refreshed."
    where = f" at {order.outlet.name}" if order.outlet else ""
    return (
        f"Order {order.pk} changed since this screen saw it: it is now "
        f"{STATE_WORDS.get(order.state, order.state)}{where}. This station no longer holds it."
    )


def _ticket_json(ticket: Ticket | Order) -> dict[str, Any]:
    return {
        "token": ticket.token,
        "number": ticket.pk if isinstance(ticket, Order) else ticket.id,
        "state": ticket.state,
        "fence": ticket.fence,
        "claimed_by": ticket.claimed_by,
    }


def _answer(ticket: Ticket, message: str) -> JsonResponse:
    return JsonResponse({"ok": True, "message": message, "ticket": _ticket_json(ticket)})


def _taken_message(request: HttpRequest, number: str, by: str, station: str) -> str:
    """Why a ticket cannot be started: this station, this cook on another screen, or someone else."""
    if by == station:
        return f"{number} is already yours: it was started at this station."
    if by.split("·")[0] == request.user.get_username():
        return f"{number} is already yours: you started it at another screen ({by})."
    return f"{number} is taken by {by}."


@kitchen_action
def start(request: HttpRequest, outlet: Outlet, data: dict[str, Any]) -> JsonResponse:
    station = station_name(request, data)
    try:
        ticket = order_claim_ticket(outlet=outlet, token=token_of(data), station=station)
    except TicketTaken as exc:
        by = exc.context.get("claimed_by")
        order = order_by_token(token=data["token"])
        number = f"Order {order.pk}" if order else "This ticket"
        if not isinstance(by, str) or not by:
            raise Refused(exc.status, exc.code, exc.message, claimed_by="") from None
        message = _taken_message(request, number, by, station)
        if by == station and order is not None:
            # Pressing Start again on your own ticket changes nothing and is no mistake.
            return JsonResponse({"ok": True, "message": message, "ticket": _ticket_json(order)})
        raise Refused(exc.status, exc.code, message, claimed_by=by) from None
    return _answer(ticket, f"Order {ticket.id} started.")


@kitchen_action
def start_next(request: HttpRequest, outlet: Outlet, data: dict[str, Any]) -> JsonResponse:
    tickets = order_claim_next(outlet=outlet, station=station_name(request, data))
    if not tickets:
        return JsonResponse({"ok": True, "message": "Nothing is waiting.", "ticket": None})
    if tickets[0].state == "ready":  # made already; its station went away before handing it over
        return _answer(tickets[0], f"Order {tickets[0].id} is made already: hand it over.")
    return _answer(tickets[0], f"Order {tickets[0].id} started.")


@kitchen_action
def ready(request: HttpRequest, outlet: Outlet, data: dict[str, Any]) -> JsonResponse:
    ticket = order_mark_ready(token=token_of(data), fence=fence_of(data), outlet=outlet)
    return _answer(ticket, f"Order {ticket.id} is ready.")


@kitchen_action
def complete(request: HttpRequest, outlet: Outlet, data: dict[str, Any]) -> JsonResponse:
    # Handed over: ``paid: true`` with ``method`` records the payment taken at the same time.
    ticket = order_bump_paid(
        token=token_of(data),
        fence=fence_of(data),
        outlet=outlet,
        data=data,
        by=request.user.get_username(),
        station=station_name(request, data),
    )
    paid = " and marked paid" if data.get("paid") is True else ""
    return _answer(ticket, f"Order {ticket.id} bumped{paid}.")


@kitchen_action
def recall(request: HttpRequest, outlet: Outlet, data: dict[str, Any]) -> JsonResponse:
    ticket = order_recall(token=token_of(data), fence=fence_of(data), outlet=outlet)
    return _answer(ticket, f"Order {ticket.id} recalled to the pass.")
