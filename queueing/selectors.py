"""Reads of the queue, each a QuerySet with its joins already applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FilteredRelation,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Now
from django.utils import timezone

from queueing import sql
from queueing.db import fetch_all, fetch_one, model_from_row
from queueing.models import (
    OPEN_STATES,
    EventType,
    NotifierStatus,
    Order,
    OrderEvent,
    OrderKind,
    OrderState,
    Outlet,
    OutletState,
)


def order_by_token(*, token: str) -> Order | None:
    """The order with this token, its outlet loaded with it; None when there is none.

    A named statement (prepared on the server, no query built per call): every
    customer's page, socket and status call starts here.
    """
    row = fetch_one(sql.ORDER_WITH_OUTLET, {"token": token})
    if row is None:
        return None
    order = model_from_row(Order, _unprefixed(row, ""))
    outlet = _unprefixed(row, "outlet__")
    if outlet["id"] is not None:
        order.outlet = model_from_row(Outlet, outlet)
    return order


def order_events(*, order: Order, after: int = 0) -> list[OrderEvent]:
    """The order's timeline, oldest first, each event's outlets (slug and name) loaded with it."""
    events = []
    for row in fetch_all(sql.ORDER_EVENTS, {"order_id": order.pk, "after": after}):
        event = model_from_row(OrderEvent, _unprefixed(row, ""))
        for relation in ("outlet", "from_outlet"):
            if row[f"{relation}_id"] is not None:
                outlet = {"id": row[f"{relation}_id"], **_unprefixed(row, f"{relation}__")}
                setattr(event, relation, model_from_row(Outlet, outlet))
        events.append(event)
    return events


def _unprefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The columns of ``row`` named ``prefix…``, the prefix taken off; with "", the unprefixed ones."""
    if not prefix:
        return {n: v for n, v in row.items() if "__" not in n}
    return {n.removeprefix(prefix): v for n, v in row.items() if n.startswith(prefix)}


def outlet_queue(*, outlet: Outlet) -> QuerySet[Order]:
    """An outlet's open tickets in the order its kitchen should take them."""
    return Order.objects.filter(
        outlet=outlet, state__in=[OrderState.QUEUED, OrderState.PREPARING, OrderState.READY]
    ).order_by("sort_key", "id")


# How many queued orders ahead an estimate reads at most: a busy Friday has a few dozen
# queued at an outlet; 100 pizzas ahead is hours of work for a kitchen of two stations.
ESTIMATE_DEPTH = 100


def order_ready_estimate(*, order: Order, now: datetime | None = None) -> datetime | None:
    """When the order should be ready: the work queued ahead of it at its outlet, shared by its stations.

    Exact while at most ``ESTIMATE_DEPTH`` orders are queued ahead of it; deeper in the
    queue, only the first ``ESTIMATE_DEPTH`` are counted, so the time is the earliest it
    can be ready, and reading it costs the same however long the queue: every order
    answer carries this estimate.
    """
    now = now or timezone.now()
    if order.state == OrderState.READY:
        return order.ready_at
    if order.state not in (OrderState.QUEUED, OrderState.PREPARING) or order.outlet_id is None:
        return None
    stations = max(int(settings.HEARTH_STATIONS_PER_OUTLET), 1)
    if order.state == OrderState.PREPARING:
        started = order.claimed_at or now
        return max(now, started + timedelta(seconds=order.prep_seconds))
    work = fetch_one(
        sql.ORDER_WORK_AHEAD,
        {
            "outlet_id": order.outlet_id,
            "sort_key": order.sort_key,
            "id": order.pk,
            "now": now,
            "depth": ESTIMATE_DEPTH,
        },
    )
    assert work is not None
    ahead, remaining = work["ahead"], work["remaining"]
    wait = (ahead + remaining) / stations
    return now + timedelta(seconds=wait + order.prep_seconds)


def last_event_id() -> int:
    """The newest event id: a screen's snapshot is at least this fresh, its socket resumes after it."""
    return int(OrderEvent.objects.aggregate(last=Max("id"))["last"] or 0)


def kitchen_tickets(*, outlet: Outlet) -> QuerySet[Order]:
    """``outlet_queue`` with ``moved_from_id``: for a ticket that arrived by reroute, where from.

    Slice it to what a screen shows: the reroute lookup runs once per ticket.
    """
    moved_here = OrderEvent.objects.filter(
        order=OuterRef("pk"), type=EventType.REROUTED, outlet=OuterRef("outlet")
    ).order_by("-id")
    return outlet_queue(outlet=outlet).annotate(
        moved_from_id=Subquery(moved_here.values("from_outlet_id")[:1])
    )


def outlet_lines_to_make(*, outlet: Outlet) -> list[list[dict[str, Any]]]:
    """The lines of the outlet's queued and cooking orders (for the kitchen's all-day count)."""
    return list(
        Order.objects.filter(
            outlet=outlet, state__in=[OrderState.QUEUED, OrderState.PREPARING]
        ).values_list("lines", flat=True)
    )


def outlet_names() -> dict[int, str]:
    return dict(Outlet.objects.values_list("id", "name"))


RECALL_LOOKBACK = 50  # of an outlet's newest bumps: a station's own last bump is among them


def outlet_last_bumped(*, outlet: Outlet, station: str | None = None) -> Order | None:
    """The order the outlet (or only ``station`` of it) bumped last, while it is still done.

    That is what a recall brings back: a station is offered only what it bumped itself.
    """
    # Read from the outlet's events (newest first on its index) rather than from the
    # orders: the outlet's completed orders are most of the table and have no index.
    events = (
        OrderEvent.objects.filter(outlet=outlet, type=EventType.COMPLETED)
        .select_related("order")
        .order_by("-id")
    )
    if station is None:
        event = events.first()
    else:
        event = next(
            (e for e in events[:RECALL_LOOKBACK] if (e.detail or {}).get("by") == station), None
        )
    if event is None or event.order is None or event.order.state != OrderState.COMPLETED:
        return None
    return event.order


def outlet_open_orders_count(*, outlet: Outlet) -> int:
    """Open orders at the outlet (retiring waits for none)."""
    return Order.objects.filter(outlet=outlet, state__in=OPEN_STATES).count()


def outlets_taking_orders() -> QuerySet[Outlet]:
    """Outlets a customer can order from now, by name."""
    return Outlet.objects.filter(state=OutletState.ACTIVE).order_by("name")


def outlets_for_user(*, user: Any, manager: bool) -> QuerySet[Outlet]:
    """The kitchens a user may open: every outlet that is not retired for a manager, else theirs."""
    outlets = Outlet.objects.exclude(state=OutletState.RETIRED)
    if manager:
        return outlets
    return outlets.filter(memberships__user=user).distinct()


def outlets_health() -> QuerySet[Outlet]:
    """Every outlet with its live figures, in one query.

    Ages come from the database clock. The join is restricted to open orders so it
    reads the partial index of open orders, not an outlet's whole history.
    """
    return (
        Outlet.objects.annotate(
            open_orders=FilteredRelation("orders", condition=Q(orders__state__in=OPEN_STATES)),
        )
        .annotate(
            queued=Count("open_orders", filter=Q(open_orders__state=OrderState.QUEUED)),
            preparing=Count("open_orders", filter=Q(open_orders__state=OrderState.PREPARING)),
            ready=Count("open_orders", filter=Q(open_orders__state=OrderState.READY)),
            heartbeat_age=ExpressionWrapper(
                Now() - F("last_heartbeat_at"), output_field=DurationField()
            ),
            oldest_age=ExpressionWrapper(
                Now()
                - Min(
                    "open_orders__created_at",
                    filter=Q(open_orders__state__in=[OrderState.QUEUED, OrderState.PREPARING]),
                ),
                output_field=DurationField(),
            ),
        )
        .order_by("slug")
    )


def open_delivery_zones() -> list[tuple[int, str, int]]:
    """(outlet id, zone, open delivery orders) for every zone with open orders at an outlet."""
    rows = (
        Order.objects.filter(state__in=OPEN_STATES, kind=OrderKind.DELIVERY, outlet__isnull=False)
        .values_list("outlet_id", "zone")
        .annotate(n=Count("id"))
        .order_by("outlet_id", "zone")
    )
    return [(outlet_id, zone, n) for outlet_id, zone, n in rows]


# What the operations screen lists as "what happened lately".
NOTABLE_EVENTS = (
    EventType.REROUTED,
    EventType.LEASE_EXPIRED,
    EventType.ATTENTION,
    EventType.CANCELLED,
    EventType.WAITING,
    EventType.OUTLET,
)


def events_notable(*, limit: int = 25) -> QuerySet[OrderEvent]:
    """Recent reroutes, lease expiries, cancellations and outlet changes, newest first."""
    return (
        OrderEvent.objects.filter(type__in=NOTABLE_EVENTS)
        .select_related("order", "outlet", "from_outlet")
        .order_by("-id")[:limit]
    )


def orders_needing_attention(*, limit: int = 50) -> QuerySet[Order]:
    """Orders set aside after too many lease expiries, oldest first."""
    return (
        Order.objects.filter(state=OrderState.ATTENTION)
        .select_related("outlet")
        .order_by("created_at")[:limit]
    )


def orders_stranded(*, limit: int = 50) -> QuerySet[Order]:
    """Open orders at outlets that are down or retired (ready ones stay there): a manager's to move."""
    return (
        Order.objects.filter(
            state__in=OPEN_STATES, outlet__state__in=[OutletState.DOWN, OutletState.RETIRED]
        )
        .select_related("outlet")
        .order_by("created_at")[:limit]
    )


def notifier_status() -> NotifierStatus | None:
    """The notifiers' one status row, with ``tick_age`` (database clock) since the last tick."""
    return (
        NotifierStatus.objects.filter(pk=1)
        .annotate(
            tick_age=ExpressionWrapper(Now() - F("last_tick_at"), output_field=DurationField())
        )
        .first()
    )


def events_counted_since(*, seconds: float) -> dict[str, int]:
    """How many events of each type were written in the last ``seconds`` (database clock)."""
    rows = (
        OrderEvent.objects.filter(at__gte=Now() - timedelta(seconds=seconds))
        .values_list("type")
        .annotate(n=Count("id"))
        .order_by()
    )
    return dict(rows)


def orders_waiting_count() -> int:
    """Open orders that no outlet holds (every outlet was down when they had to move)."""
    return Order.objects.filter(state=OrderState.QUEUED, outlet__isnull=True).count()


def orders_needing_attention_count() -> int:
    return Order.objects.filter(state=OrderState.ATTENTION).count()


LAST_HOUR_BUCKET = 300  # seconds: the operations screen's charts, 12 buckets of 5 minutes
LAST_HOUR_BUCKETS = 12


@dataclass
class LastHour:
    """One outlet's last hour, oldest bucket first (a bucket with no claims has no median)."""

    placed: list[int] = field(default_factory=lambda: [0] * LAST_HOUR_BUCKETS)
    wait: list[float | None] = field(default_factory=lambda: [None] * LAST_HOUR_BUCKETS)
    reroutes: list[int] = field(default_factory=lambda: [0] * LAST_HOUR_BUCKETS)


def outlets_last_hour() -> dict[int, LastHour]:
    """Orders placed, median wait to claim and reroutes away, per outlet and 5 minutes, in one query."""
    hours: dict[int, LastHour] = {}
    rows = fetch_all(
        sql.OUTLETS_LAST_HOUR, {"bucket": LAST_HOUR_BUCKET, "buckets": LAST_HOUR_BUCKETS}
    )
    for row in rows:
        hour = hours.setdefault(row["outlet_id"], LastHour())
        i = row["bucket"]
        hour.placed[i] = row["placed"]
        hour.wait[i] = row["wait_median"]
        hour.reroutes[i] = row["reroutes"]
    return hours
