"""A manager's ways out for an order no one else will move: send it, hand it over, cancel it.

An order set aside as needing attention, or ready at an outlet that died, has no
holder who will finish it. Each action here locks the order row, refuses a
finished order, and writes its event in the same transaction; the fence grows, so
a cook or agent still holding the order can no longer act on it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import fetch_all, fetch_one
from queueing.errors import InvalidState, NotFound, OutletUnavailable
from queueing.models import Outlet
from queueing.tickets import Ticket

log = logging.getLogger("hearth.orders")

# What a manager can act on: open, or set aside.
ACTIONABLE_STATES = ("queued", "preparing", "ready", "attention")
REASON_MAX = 200  # Order.cancel_reason


def _order_locked(order_id: int) -> dict[str, Any]:
    """Lock the order row; refuse an unknown or finished order. Caller is in a transaction."""
    row = fetch_one(sql.ORDER_LOCK, {"order_id": order_id})
    if row is None:
        raise NotFound(f"no order {order_id}")
    if row["state"] not in ACTIONABLE_STATES:
        raise InvalidState(f"order {order_id} is {row['state']} already; nothing to do")
    return row


def order_send(*, order_id: int, outlet: Outlet, by: str) -> Ticket:
    """Queue an open or set-aside order at ``outlet`` (which must be active), to be made there."""
    with transaction.atomic():
        before = _order_locked(order_id)
        # Key-share on the outlet: a take-down waits for this send and then moves the
        # order with the rest, or this waits for it and refuses.
        if fetch_one(sql.OUTLET_HOLD_ACTIVE, {"outlet_id": outlet.pk}) is None:
            raise OutletUnavailable(
                f"outlet {outlet.slug} is not taking orders; send it to an active outlet"
            )
        row = fetch_one(
            sql.ORDER_SEND,
            {
                "order_id": order_id,
                "outlet_id": outlet.pk,
                "event_type": "rerouted",
                "detail": Jsonb({"reason": f"sent by {by}", "by": by, "was": before["state"]}),
            },
        )
    assert row is not None  # the row is locked and exists
    log.info(
        "order %s (%s at %s) sent to %s by %s",
        order_id,
        before["state"],
        before["outlet_slug"] or "no outlet",
        outlet.slug,
        by,
    )
    return Ticket.from_row(row)


def order_hand_over(*, order_id: int, by: str) -> Ticket:
    """Record that an open or set-aside order reached its customer: completed."""
    with transaction.atomic():
        before = _order_locked(order_id)
        row = fetch_one(
            sql.ORDER_HAND_OVER,
            {
                "order_id": order_id,
                "event_type": "completed",
                "detail": Jsonb(
                    {"reason": f"handed over, marked by {by}", "by": by, "was": before["state"]}
                ),
            },
        )
    assert row is not None
    log.info("order %s (%s) marked handed over by %s", order_id, before["state"], by)
    return Ticket.from_row(row)


def order_cancel(*, order_id: int, reason: str, by: str) -> Ticket:
    """Cancel an open or set-aside order; ``reason`` is shown to the customer."""
    reason = " ".join(reason.split())
    if not reason:
        raise InvalidState("say why the order is cancelled: the customer is shown the reason")
    if len(reason) > REASON_MAX:
        raise InvalidState(f"the reason must be at most {REASON_MAX} characters")
    with transaction.atomic():
        before = _order_locked(order_id)
        rows = fetch_all(
            sql.ORDERS_CANCEL, {"ids": [order_id], "reason": reason, "event_type": "cancelled"}
        )
    log.info("order %s (%s) cancelled by %s: %s", order_id, before["state"], by, reason)
    return Ticket.from_row(rows[0])
