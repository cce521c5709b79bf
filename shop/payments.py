"""Money: an order's total from the prices it was placed at, paying at hand-over, the takings.

Prices live in the order's line snapshot (``price``, a decimal string per line),
so the engine's tables stay free of money and a later menu change never alters
what a customer was told. A payment is recorded by staff when the order is
handed over (at the counter, or on delivery), in the same transaction as the
hand-over, so an order is never completed with a payment half-recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import Now
from django.utils import timezone

from queueing.models import Order, OrderKind, OrderState, Outlet
from queueing.services import order_complete, order_hand_over
from queueing.tickets import Ticket
from shop.models import Payment, PaymentMethod, PaymentPlace
from shop.refusal import Refused

PENNY = Decimal("0.01")


def money(value: Decimal) -> str:
    """A sum of money as the API writes it: a decimal string with two places ("12.50")."""
    return str(value.quantize(PENNY))


def order_total(lines: list[dict[str, Any]]) -> Decimal | None:
    """The total of a line snapshot; None for an order placed before prices were recorded."""
    if any("price" not in line for line in lines):
        return None
    return sum((Decimal(line["price"]) * int(line["qty"]) for line in lines), Decimal("0"))


@dataclass(frozen=True)
class PaymentTaken:
    """What staff said was paid at hand-over."""

    method: str


def payment_parse(data: dict[str, Any], *, order: Order) -> PaymentTaken | None:
    """``paid``/``method``/``amount`` from a hand-over request; None when not paid, else checked.

    ``amount`` is optional; when sent it must be the order's total as a decimal string.
    """
    paid = data.get("paid", False)
    if not isinstance(paid, bool):
        raise Refused(400, "invalid", "paid must be true or false", field="paid")
    if not paid:
        return None
    method = data.get("method")
    if method not in PaymentMethod.values:
        raise Refused(
            400, "invalid", "method must be 'cash' or 'card' when paid is true", field="method"
        )
    if "amount" in data:
        amount = _amount(data["amount"])
        if amount != order_total(order.lines):
            raise Refused(
                400, "invalid", "amount must be the order's total (what is owed)", field="amount"
            )
    return PaymentTaken(method=method)


def _amount(value: Any) -> Decimal:
    # A string only: a JSON number is a float to most clients, and money is never a float.
    message = 'amount must be a non-negative decimal string, e.g. "12.50"'
    if not isinstance(value, str) or len(value) > 12:
        raise Refused(400, "invalid", message, field="amount")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise Refused(400, "invalid", message, field="amount") from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(PENNY):
        raise Refused(400, "invalid", message, field="amount")
    return amount


def order_payment(order: Order) -> Payment | None:
    """The order's payment; only a completed order can have one, so open orders cost no query."""
    if order.state != OrderState.COMPLETED:
        return None
    return Payment.objects.filter(order=order).first()


def payment_record(*, order: Order, taken: PaymentTaken, by: str) -> Payment:
    """Record that ``order`` was paid in full; a second record of it returns the first."""
    place = PaymentPlace.DELIVERY if order.kind == OrderKind.DELIVERY else PaymentPlace.COUNTER
    payment, _ = Payment.objects.get_or_create(
        order=order,
        defaults={
            "amount": order_total(order.lines) or Decimal("0"),
            "method": taken.method,
            "where": place,
            "by": by[:150],
        },
    )
    return payment


def order_bump_paid(
    *, token: str, fence: int, outlet: Outlet, data: dict[str, Any], by: str, station: str = ""
) -> Ticket:
    """The kitchen's bump by ``station``: complete the order and, when ``data`` says it was paid, record it."""
    order = Order.objects.filter(token=token, outlet=outlet).first()
    taken = payment_parse(data, order=order) if order is not None else None
    with transaction.atomic():
        ticket = order_complete(token=token, fence=fence, outlet=outlet, by=station)
        if taken is not None and order is not None:
            payment_record(order=order, taken=taken, by=by)
    return ticket


def order_hand_over_paid(*, order: Order, taken: PaymentTaken | None, by: str) -> Ticket:
    """A manager's hand-over, with the payment taken then when there was one."""
    with transaction.atomic():
        ticket = order_hand_over(order_id=order.pk, by=by)
        if taken is not None:
            payment_record(order=order, taken=taken, by=by)
    return ticket


ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Takings:
    """Money taken in the last hour and since the day began."""

    hour: Decimal = ZERO
    today: Decimal = ZERO


NO_TAKINGS = Takings()


def local_day_start(*, now: datetime | None = None) -> datetime:
    """Midnight where the chain is (``TIME_ZONE``) on the day of ``now`` (default: now), aware."""
    today = timezone.localtime(now).date()
    return timezone.make_aware(datetime.combine(today, time.min))


def takings_by_outlet(*, day_start: datetime) -> dict[int | None, Takings]:
    """Money taken per outlet id in the last hour and since ``day_start`` (aware), in one query.

    The last hour is read by the database's clock, which wrote ``paid_at``. An order
    handed over with no outlet (one waiting for any outlet) is counted under None;
    outlets with no payment in either window are left out.
    """
    hour = Q(paid_at__gte=Now() - timedelta(hours=1))
    today = Q(paid_at__gte=day_start)
    rows = (
        Payment.objects.filter(hour | today)
        .values("order__outlet_id")
        .annotate(
            hour=Sum("amount", filter=hour, default=ZERO),
            today=Sum("amount", filter=today, default=ZERO),
        )
        .order_by()
    )
    return {r["order__outlet_id"]: Takings(hour=r["hour"], today=r["today"]) for r in rows}


def takings_total(takings: Iterable[Takings]) -> Takings:
    """The chain's takings: the sum of every outlet's."""
    every = list(takings)
    return Takings(
        hour=sum((t.hour for t in every), ZERO), today=sum((t.today for t in every), ZERO)
    )
