"""Priority without starvation: kitchens take the smallest ``sort_key = queued_at - boost`` first.

Placements here go through ``order_enqueue`` (which computes the boost from the
settings); only their age is set afterwards, by moving ``created_at`` and
``sort_key`` back by the same amount, as if the order had been placed that long
ago. That keeps the test deterministic without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.db.models import F
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from queueing.models import Order, Outlet
from queueing.services import order_claim_next, order_enqueue
from queueing.services.orders import order_boost

pytestmark = pytest.mark.django_db

PIZZA = [{"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 600}]
COLA = [{"item": "cola", "name": "Cola", "qty": 1, "note": "", "prep_seconds": 10}]

QUICK_BOOST = 120
RUSH_BOOST = 300


@pytest.fixture(autouse=True)
def boosts(settings: Any) -> None:
    settings.HEARTH_BOOST_QUICK = QUICK_BOOST
    settings.HEARTH_BOOST_RUSH = RUSH_BOOST


@pytest.fixture
def outlet(make_outlet: Callable[..., tuple[Outlet, str]]) -> Outlet:
    return make_outlet("camden")[0]


def place(
    outlet: Outlet, name: str, *, quick: bool = False, rush: bool = False, age: float = 0
) -> int:
    """Place a takeaway order as if ``age`` seconds ago; returns its id."""
    ticket = order_enqueue(
        kind="takeaway",
        lines=COLA if quick else PIZZA,
        customer={"name": name},
        prep_seconds=10 if quick else 600,
        quick=quick,
        rush=rush,
        outlet=outlet,
    )
    if age:
        Order.objects.filter(pk=ticket.id).update(
            created_at=F("created_at") - timedelta(seconds=age),
            sort_key=F("sort_key") - timedelta(seconds=age),
        )
    return ticket.id


def claim_all(outlet: Outlet) -> list[int]:
    """Claim one at a time, as a single station would, until the queue is empty."""
    order: list[int] = []
    while tickets := order_claim_next(outlet=outlet, station="s"):
        order.extend(t.id for t in tickets)
    return order


def test_sort_key__is_placement_time_minus_the_boost(outlet: Outlet) -> None:
    for quick, rush, boost in [
        (False, False, 0),
        (True, False, 120),
        (False, True, 300),
        (True, True, 300),
    ]:
        order = Order.objects.get(pk=place(outlet, "x", quick=quick, rush=rush))
        assert order.created_at - order.sort_key == timedelta(seconds=boost), (quick, rush)


def test_priority__quick_and_rush_orders_jump_ahead_of_newer_plain_orders(outlet: Outlet) -> None:
    plain_old = place(outlet, "plain, 60 s ago", age=60)
    plain_new = place(outlet, "plain, just now", age=1)
    quick = place(outlet, "cola, just now", quick=True)
    rush = place(outlet, "rush, just now", rush=True)
    # rush (now - 300) < quick (now - 120) < plain 60 s ago < plain 1 s ago.
    assert claim_all(outlet) == [rush, quick, plain_old, plain_new]


def test_priority__a_boosted_order_never_passes_one_that_waited_longer_than_its_boost(
    outlet: Outlet,
) -> None:
    waited_200 = place(outlet, "plain, 200 s ago", age=200)
    waited_400 = place(outlet, "plain, 400 s ago", age=400)
    quick = place(outlet, "cola, just now", quick=True)
    rush = place(outlet, "rush, just now", rush=True)
    waited_100 = place(outlet, "plain, 100 s ago", age=100)
    # The quick order (boost 120) passes the order 100 s old but not the one 200 s old;
    # rush (boost 300) passes 200 s but not 400 s. Nothing waits forever behind boosts.
    assert claim_all(outlet) == [waited_400, rush, waited_200, quick, waited_100]


def test_priority__boosts_come_from_the_settings(outlet: Outlet, settings: Any) -> None:
    settings.HEARTH_BOOST_QUICK = 30
    waited_60 = place(outlet, "plain, 60 s ago", age=60)
    quick = place(outlet, "cola, just now", quick=True)
    assert order_boost(quick=True, rush=False) == 30
    assert claim_all(outlet) == [waited_60, quick]


def test_priority__a_batch_claim_takes_the_best_orders_in_priority_order(outlet: Outlet) -> None:
    ids = [place(outlet, f"plain {i}", age=10 * i) for i in range(6)]
    rush = place(outlet, "rush", rush=True)
    batch = order_claim_next(outlet=outlet, station="s", limit=3)
    # Rush counts as 300 s old, older than every plain order here (0 to 50 s).
    assert [t.id for t in batch] == [rush, ids[5], ids[4]]


PLACEMENTS = st.lists(
    st.tuples(
        st.booleans(),  # quick
        st.booleans(),  # rush
        st.integers(min_value=0, max_value=900_000),  # age in milliseconds
    ),
    min_size=1,
    max_size=15,
)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(placements=PLACEMENTS)
def test_priority__claim_order_is_queued_at_minus_boost(
    outlet: Outlet, placements: list[tuple[bool, bool, int]]
) -> None:
    with transaction.atomic():
        expected: list[tuple[int, int]] = []
        for i, (quick, rush, age_ms) in enumerate(placements):
            order_id = place(outlet, f"o{i}", quick=quick, rush=rush, age=age_ms / 1000)
            boost = max(QUICK_BOOST if quick else 0, RUSH_BOOST if rush else 0)
            # Placed in one transaction, so every order's now() is the same instant:
            # queued_at - boost is -(age + boost), ties broken by number. Whole
            # milliseconds, so ties are exact here as in the database.
            expected.append((-(age_ms + boost * 1000), order_id))
        assert claim_all(outlet) == [order_id for _, order_id in sorted(expected)]
        transaction.set_rollback(True)
