"""Reads of the queue, each a QuerySet with its joins already applied."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from queueing.models import Order, OrderEvent, OrderState, Outlet


def order_by_token(*, token: str) -> Order | None:
    return Order.objects.select_related("outlet").filter(token=token).first()


def order_events(*, order: Order, after: int = 0) -> QuerySet[OrderEvent]:
    """The order's timeline, oldest first."""
    return (
        OrderEvent.objects.filter(order=order, id__gt=after)
        .select_related("outlet", "from_outlet")
        .order_by("id")
    )


def outlet_queue(*, outlet: Outlet) -> QuerySet[Order]:
    """An outlet's open tickets in the order its kitchen should take them."""
    return Order.objects.filter(
        outlet=outlet, state__in=[OrderState.QUEUED, OrderState.PREPARING, OrderState.READY]
    ).order_by("sort_key", "id")


def order_ready_estimate(*, order: Order, now: datetime | None = None) -> datetime | None:
    """When the order should be ready: the work queued ahead of it at its outlet, shared by its stations."""
    now = now or timezone.now()
    if order.state == OrderState.READY:
        return order.ready_at
    if order.state not in (OrderState.QUEUED, OrderState.PREPARING) or order.outlet_id is None:
        return None
    stations = max(int(settings.HEARTH_STATIONS_PER_OUTLET), 1)
    if order.state == OrderState.PREPARING:
        started = order.claimed_at or now
        return max(now, started + timedelta(seconds=order.prep_seconds))
    ahead = (
        Order.objects.filter(outlet_id=order.outlet_id, state=OrderState.QUEUED, sort_key__lt=order.sort_key)
        .aggregate(total=Sum("prep_seconds"))["total"]
        or 0
    )
    in_progress = Order.objects.filter(outlet_id=order.outlet_id, state=OrderState.PREPARING).values_list(
        "claimed_at", "prep_seconds"
    )
    remaining = sum(
        max(0.0, prep - (now - (claimed or now)).total_seconds()) for claimed, prep in in_progress
    )
    wait = (ahead + remaining) / stations
    return now + timedelta(seconds=wait + order.prep_seconds)
