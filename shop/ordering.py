"""Taking an order from a customer: check every field, then queue it in one transaction."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from queueing.db import fetch_all, model_from_row
from queueing.models import Order, OrderKind, Outlet
from queueing.services import order_enqueue
from queueing.services.outlets import outlet_by_slug
from queueing.tickets import Ticket
from shop.models import IdempotentRequest, MenuItem
from shop.refusal import Refused

MAX_QTY = 50
MAX_LINES = 30
MAX_NOTE = 200
QUICK_PREP_LIMIT_KEY = "HEARTH_QUICK_PREP_SECONDS"
# A delivery zone: ASCII letters and digits, inner spaces and dashes, at most 40 ("N1", "SE-12").
ZONE_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 -]{0,38}[A-Za-z0-9])?")

# The menu items an order names: every order reads them, so a named statement (prepared
# on the server, no query built per order); the columns are named, as the engine's are.
MENU_ITEMS = """
    SELECT id, slug, name, price, prep_seconds, available FROM shop_menuitem
    WHERE slug = ANY(%(slugs)s::text[])
"""


IDEMPOTENCY_CONFLICT = "idempotency_conflict"


def invalid(field: str, message: str, *, status: int = 400) -> Refused:
    """The order request is wrong; ``field`` names the part to fix."""
    return Refused(status, "invalid", message, field=field)


def idempotency_conflict() -> Refused:
    return Refused(
        422,
        IDEMPOTENCY_CONFLICT,
        "this key was already used for a different order request",
        field="Idempotency-Key",
    )


@dataclass(frozen=True)
class OrderRequest:
    kind: str
    lines: list[dict[str, Any]]
    customer: dict[str, str]
    zone: str = ""
    outlet: Outlet | None = None
    rush: bool = False
    prep_seconds: int = 0
    quick: bool = False
    menu: dict[str, MenuItem] = field(default_factory=dict)


def _text(value: Any, name: str, *, required: bool, limit: int = 200) -> str:
    if value is None or value == "":
        if required:
            raise invalid(name, "is required")
        return ""
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if "\x00" in value:  # PostgreSQL cannot store NUL in text
        raise invalid(name, "must not contain NUL characters")
    if len(value) > limit:  # as sent, spaces included: the limit the API documents
        raise invalid(name, f"must be at most {limit} characters")
    value = value.strip()
    if required and not value:
        raise invalid(name, "is required")
    return value


def order_request_parse(payload: Any) -> OrderRequest:
    """Check an order request (the JSON body or the form); raises Refused naming the field."""
    from django.conf import settings

    if not isinstance(payload, dict):
        raise invalid("body", "must be a JSON object")
    kind = payload.get("kind")
    if kind not in OrderKind.values:
        raise invalid("kind", "must be 'takeaway' or 'delivery'")
    raw_lines = payload.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise invalid("lines", "must be a non-empty list of {item, qty, note}")
    if len(raw_lines) > MAX_LINES:
        raise invalid("lines", f"at most {MAX_LINES} lines per order")
    slugs = [line.get("item") for line in raw_lines if isinstance(line, dict)]
    rows = fetch_all(MENU_ITEMS, {"slugs": [s for s in slugs if isinstance(s, str)]})
    menu = {r["slug"]: model_from_row(MenuItem, r) for r in rows}
    lines: list[dict[str, Any]] = []
    for i, line in enumerate(raw_lines):
        where = f"lines[{i}]"
        if not isinstance(line, dict):
            raise invalid(where, "must be an object with item and qty")
        slug = line.get("item")
        item = menu.get(slug) if isinstance(slug, str) else None
        if item is None:
            raise invalid(f"{where}.item", f"unknown menu item {line.get('item')!r}")
        if not item.available:
            raise invalid(f"{where}.item", f"{item.name} is not available today")
        qty = line.get("qty", 1)
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
            raise invalid(f"{where}.qty", f"must be a whole number from 1 to {MAX_QTY}")
        note = _text(line.get("note"), f"{where}.note", required=False, limit=MAX_NOTE)
        lines.append(
            {
                "item": item.slug,
                "name": item.name,
                "qty": qty,
                "note": note,
                "prep_seconds": item.prep_seconds,
                # The price it was ordered at: a later menu change leaves this order alone.
                "price": str(item.price),
            }
        )
    raw_customer = payload.get("customer") or {}
    if not isinstance(raw_customer, dict):
        raise invalid("customer", "must be an object with name (and phone, address)")
    customer = {
        "name": _text(raw_customer.get("name"), "customer.name", required=True, limit=100),
        "phone": _text(raw_customer.get("phone"), "customer.phone", required=False, limit=40),
        "address": _text(
            raw_customer.get("address"), "customer.address", required=kind == "delivery", limit=300
        ),
    }
    rush = payload.get("rush", False)
    if not isinstance(rush, bool):
        raise invalid("rush", "must be true or false")
    # Checked whatever the kind, so a request never carries a field this did not look at.
    for name in ("zone", "outlet"):
        if name in payload and not isinstance(payload[name], str):
            raise invalid(name, "must be a string")
    if "zone" in payload and not ZONE_PATTERN.fullmatch(payload["zone"]):
        raise invalid("zone", "must be letters A-Z and digits (spaces and dashes inside), e.g. N1")
    zone = ""
    outlet = None
    if kind == OrderKind.DELIVERY:
        zone = _text(payload.get("zone"), "zone", required=True, limit=40)
        if not ZONE_PATTERN.fullmatch(payload["zone"]):
            raise invalid(
                "zone", "must be letters A-Z and digits (spaces and dashes inside), e.g. N1"
            )
    else:
        slug = _text(payload.get("outlet"), "outlet", required=True, limit=50)
        outlet = outlet_by_slug(slug=slug)
        if outlet is None:
            raise invalid("outlet", f"unknown outlet {slug!r}")
        if not outlet.takes_new_orders:
            raise invalid("outlet", f"outlet {slug} is not taking orders right now", status=422)
    # Kitchens cook an order's lines side by side; the slowest line sets its time.
    prep_seconds = max(line["prep_seconds"] for line in lines)
    quick = prep_seconds <= settings.HEARTH_QUICK_PREP_SECONDS
    return OrderRequest(
        kind=kind,
        lines=lines,
        customer=customer,
        zone=zone,
        outlet=outlet,
        rush=rush,
        prep_seconds=prep_seconds,
        quick=quick,
    )


def order_place(
    *, request: OrderRequest, idempotency_key: str = "", body: bytes = b""
) -> tuple[Order, bool]:
    """Queue a checked order; returns (order, created). A repeated Idempotency-Key returns the first order."""
    if not idempotency_key:
        # order_enqueue is one transaction already: an outer one would only add a savepoint
        # (two more round trips to the database for every order placed).
        return _placed(order_enqueue(**_enqueue_arguments(request)), request), True
    body_hash = hashlib.sha256(body).hexdigest()
    with transaction.atomic():
        try:
            # A concurrent twin blocks here on the unique index until the first commits.
            with transaction.atomic():
                key_row = IdempotentRequest.objects.create(key=idempotency_key, body_hash=body_hash)
        except IntegrityError:
            first = IdempotentRequest.objects.select_related("order__outlet").get(
                key=idempotency_key
            )
            if first.body_hash != body_hash:
                raise idempotency_conflict() from None
            assert first.order is not None
            return first.order, False
        ticket = order_enqueue(**_enqueue_arguments(request))
        key_row.order_id = ticket.id
        key_row.save(update_fields=["order"])
    return _placed(ticket, request), True


def _placed(ticket: Ticket, request: OrderRequest) -> Order:
    """The order just written, built from the row its statement returned (not read back)."""
    written: dict[str, Any] = {name: getattr(ticket, name) for name in Ticket.__dataclass_fields__}
    # What the row does not carry: the customer as sent, and no times past the placing yet.
    written |= {
        "customer": request.customer,
        "claimed_at": None,
        "ready_at": None,
        "finished_at": None,
    }
    order = model_from_row(Order, written)
    if request.outlet is not None and request.outlet.pk == ticket.outlet_id:
        order.outlet = request.outlet  # a takeaway's: a delivery's is read when it is asked for
    return order


def _enqueue_arguments(request: OrderRequest) -> dict[str, Any]:
    return {
        "kind": request.kind,
        "lines": request.lines,
        "customer": request.customer,
        "prep_seconds": request.prep_seconds,
        "quick": request.quick,
        "rush": request.rush,
        "zone": request.zone,
        "outlet": request.outlet,
    }


def order_replay(*, idempotency_key: str, body: bytes) -> Order | None:
    """The order an earlier request with this key placed; a 422 Refused when its body differed."""
    first = (
        IdempotentRequest.objects.select_related("order__outlet")
        .filter(key=idempotency_key, order__isnull=False)
        .first()
    )
    if first is None:
        return None
    if first.body_hash != hashlib.sha256(body).hexdigest():
        raise idempotency_conflict()
    return first.order


def order_submit(
    *, payload: Any, idempotency_key: str = "", body: bytes = b""
) -> tuple[Order, bool]:
    """Check and queue an order request; a retry with the same key gets the first order back.

    The replay is looked up before validating, so a retry still gets its order
    when the outlet has stopped taking new ones since the first request.
    """
    if idempotency_key:
        first = order_replay(idempotency_key=idempotency_key, body=body)
        if first is not None:
            return first, False
    return order_place(
        request=order_request_parse(payload), idempotency_key=idempotency_key, body=body
    )
