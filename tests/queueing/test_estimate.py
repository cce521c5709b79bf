"""When an order should be ready: the work ahead of it at its outlet, read in one statement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queueing import selectors
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


@pytest.mark.django_db
def test_estimate__deep_in_a_long_queue_counts_the_first_orders_ahead_only(
    make_outlet: MakeOutlet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ESTIMATE_DEPTH orders ahead the estimate is the earliest time: the first ones' work."""
    monkeypatch.setattr(selectors, "ESTIMATE_DEPTH", 3)
    outlet, _ = make_outlet("north")
    now = timezone.now()
    ahead = [_queued(outlet, seconds) for seconds in (100, 200, 300, 400)]
    mine = _queued(outlet, 60)
    for k, order in enumerate(ahead):  # in line by hand: one transaction, one now()
        Order.objects.filter(pk=order.pk).update(sort_key=mine.sort_key - timedelta(seconds=9 - k))
    second = Order.objects.get(pk=ahead[1].pk)
    # Three of the four ahead are counted (100 + 200 + 300), over 2 stations, then its own 60 s.
    assert order_ready_estimate(order=mine, now=now) == now + timedelta(seconds=600 / 2 + 60)
    # Within the depth it is exact: one ahead of the second order.
    assert order_ready_estimate(order=second, now=now) == now + timedelta(seconds=100 / 2 + 200)
