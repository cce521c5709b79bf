"""Orders for the engine's tests, queued straight through the service (no HTTP, no menu)."""

from __future__ import annotations

from queueing.models import Outlet
from queueing.services import order_enqueue
from queueing.tickets import Ticket

LINES = [{"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 60}]


def place(kind: str = "delivery", *, zone: str = "", outlet: Outlet | None = None) -> Ticket:
    """Queue a one-pizza order: delivery to ``zone``, or takeaway at ``outlet``."""
    return order_enqueue(
        kind=kind,
        lines=LINES,
        customer={"name": "Ada", "address": "1 Loop Lane" if kind == "delivery" else ""},
        prep_seconds=60,
        quick=False,
        zone=zone,
        outlet=outlet,
    )
