"""Putting an order into the queue: its priority and its first outlet."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import fetch_all, fetch_one
from queueing.errors import OutletUnavailable, QueueError
from queueing.models import OrderKind, Outlet
from queueing.services.routing import RingMember, Router
from queueing.tickets import Ticket


def order_boost(*, quick: bool, rush: bool) -> float:
    """Seconds an order is moved ahead: it passes newer orders, never older ones waiting longer."""
    boost = 0.0
    if quick:
        boost = max(boost, settings.HEARTH_BOOST_QUICK)
    if rush:
        boost = max(boost, settings.HEARTH_BOOST_RUSH)
    return boost


def order_enqueue(
    *,
    kind: str,
    lines: list[dict[str, Any]],
    customer: dict[str, Any],
    prep_seconds: int,
    quick: bool,
    rush: bool = False,
    zone: str = "",
    outlet: Outlet | None = None,
) -> Ticket:
    """Queue an order: takeaway at its named outlet, delivery through the ring.

    One statement and, outside a transaction, one commit (``sql.ORDER_INSERT``).
    A delivery order with no outlet alive is queued with no outlet and a
    "no outlet available" event; the notifier assigns it when one comes back.
    """
    if kind not in OrderKind.values:
        raise QueueError(
            f"kind must be one of {', '.join(OrderKind.values)}, not {kind!r}", field="kind"
        )
    if kind == OrderKind.DELIVERY and not zone:
        # The zone is the routing key: without one the order would land anywhere.
        raise QueueError("a delivery order needs its delivery zone", field="zone")
    placed = {
        "token": secrets.token_urlsafe(18),
        "kind": kind,
        "zone": zone,
        "rush": rush,
        "quick": quick,
        "lines": Jsonb(lines),
        "customer": Jsonb(customer),
        "prep_seconds": prep_seconds,
        "boost": order_boost(quick=quick, rush=rush),
        "event_type": "placed",
        "detail": Jsonb({}),
    }
    if kind == OrderKind.TAKEAWAY:
        row = _insert_held(placed, outlet) if outlet is not None else None
        if not row:
            name = outlet.slug if outlet else "?"
            raise OutletUnavailable(f"outlet {name} is not taking orders right now", field="outlet")
        return Ticket.from_row(row)
    # An outlet can go down between reading the live outlets and placing the order there;
    # the next look no longer sees it. Should outlets keep dying under it, the order waits
    # with no outlet and the notifier assigns it, rather than this looping on.
    for _ in range(10):
        chosen = Router.for_live_outlets(incoming=1).choose(zone)
        if chosen is None:
            break
        row = _insert_held(placed, chosen)
        if row:
            return Ticket.from_row(row)
    waiting = {
        **placed,
        "event_type": "waiting",
        "detail": Jsonb({"reason": "no outlet available"}),
    }
    return Ticket.from_row(fetch_all(sql.ORDER_INSERT_WAITING, waiting)[0])


def _insert_held(placed: dict[str, Any], outlet: RingMember) -> dict[str, Any] | None:
    """Insert the order at ``outlet`` if it still takes orders (held until the commit); its row."""
    return fetch_one(sql.ORDER_INSERT, {**placed, "outlet_id": outlet.pk})
