"""When an order should be ready: the work ahead of it at its outlet, read in one statement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queueing.models import Order, OrderState, Outlet
from queueing.selectors import order_ready_estimate
from queueing.services import order_enqueue

MakeOutlet = Callable[..., tuple[Outlet, str]]


def _queued(outlet: Outlet, prep_seconds: int) -> Order:
    line = {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 1}
    ticket = order_enqueue(
        kind="takeaway",
        lines=[line],
        customer={"name": "Ada"},
        prep_seconds=prep_seconds,
        quick=False,
        outlet=outlet,
    )
    return Order.objects.get(pk=ticket.id)


@pytest.mark.django_db
def test_estimate__queued_order_counts_the_queue_ahead_and_the_cooking_in_one_query(
    make_outlet: MakeOutlet, settings: object
) -> None:
    outlet, _ = make_outlet("north")
    now = timezone.now()
    cooking = _queued(outlet, 600)
    Order.objects.filter(pk=cooking.pk).update(
        state=OrderState.PREPARING, claimed_at=now - timedelta(seconds=200)
    )
    unclaimed = _queued(outlet, 100)  # preparing, no claim time yet: all of it remains
    Order.objects.filter(pk=unclaimed.pk).update(state=OrderState.PREPARING)
    ahead = _queued(outlet, 300)
    mine = _queued(outlet, 60)
    behind = _queued(outlet, 900)  # not counted
    # One test transaction places all at the same now(): put them in line by hand.
    Order.objects.filter(pk=ahead.pk).update(sort_key=mine.sort_key - timedelta(seconds=1))
    Order.objects.filter(pk=behind.pk).update(sort_key=mine.sort_key + timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        estimate = order_ready_estimate(order=mine, now=now)
    # (300 queued ahead + 400 left of one + 100 of the other) over 2 stations, then its own 60 s.
    assert estimate == now + timedelta(seconds=(300 + 400 + 100) / 2 + 60)
    assert len(queries.captured_queries) == 1, [q["sql"] for q in queries.captured_queries]


@pytest.mark.django_db
def test_estimate__an_order_first_in_line_waits_for_its_own_time_only(
    make_outlet: MakeOutlet,
) -> None:
    outlet, _ = make_outlet("north")
    now = timezone.now()
    first = _queued(outlet, 90)
    assert order_ready_estimate(order=first, now=now) == now + timedelta(seconds=90)
