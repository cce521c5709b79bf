"""A claim lives exactly as long as its holder.

A holder renews what it holds (an agent per claim, a kitchen screen for its
whole station); a ready order keeps its holder's lease until it is handed over,
and when that lease runs out it waits at its outlet's pass for the next claim; a
holder that restarts hands back at once; a claim whose answer was lost is
answered again; a down outlet claims nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connections

from queueing.errors import InvalidState, StaleFence
from queueing.models import Order, OrderEvent, OrderState, Outlet, OutletState
from queueing.services import (
    lease_renew,
    order_claim_next,
    order_claim_ticket,
    order_complete,
    order_mark_ready,
    outlet_heartbeat,
    outlet_mark_down,
    station_claims_renew,
    stations_release,
)
from queueing.services.failover import database_now, notifier_tick
from queueing.services.routing import OUTLET_CLOSED
from queueing.tickets import Ticket
from tests.orders import place

pytestmark = pytest.mark.django_db

TIMEOUT = 15.0
LEASE = 30.0
MakeOutlet = Callable[..., tuple[Outlet, str]]


@pytest.fixture
def t0(db: None) -> datetime:
    return database_now()


@pytest.fixture
def two(make_outlet: MakeOutlet, settings: Any, t0: datetime) -> tuple[Outlet, Outlet]:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.HEARTH_LEASE_SECONDS = LEASE
    settings.HEARTH_MAX_ATTEMPTS = 3
    outlets = make_outlet("north")[0], make_outlet("south")[0]
    beat(outlets, t0)
    return outlets


def beat(outlets: tuple[Outlet, ...] | list[Outlet], at: datetime) -> None:
    for outlet in outlets:
        outlet_heartbeat(outlet=outlet, source="test", now=at, timeout=TIMEOUT)


def after(t: datetime, seconds: float) -> datetime:
    return t + timedelta(seconds=seconds)


def ready_at(outlet: Outlet, station: str = "north-1") -> Ticket:
    """A takeaway order of ``outlet`` claimed by ``station`` and marked ready."""
    place("takeaway", outlet=outlet)
    (claim,) = order_claim_next(outlet=outlet, station=station)
    return order_mark_ready(token=claim.token, fence=claim.fence, outlet=outlet)


def events(order_id: int) -> list[tuple[str, str]]:
    return list(
        OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("type", "state")
    )


# --- ready always has a holder or a lease -----------------------------------------------


def test_mark_ready__keeps_the_holder_and_a_lease_it_can_renew(two: tuple[Outlet, Outlet]) -> None:
    north, _ = two
    ready = ready_at(north)
    order = Order.objects.get(pk=ready.id)
    assert (order.state, order.claimed_by) == (OrderState.READY, "north-1")
    assert order.lease_expires_at is not None
    renewed = lease_renew(token=ready.token, fence=ready.fence, outlet=north, lease=600)
    assert renewed > order.lease_expires_at


def test_tick__ready_orders_lease_runs_out__it_waits_at_its_pass_and_the_next_claim_hands_it_over(
    two: tuple[Outlet, Outlet], t0: datetime
) -> None:
    north, _ = two
    ready = ready_at(north)
    place("takeaway", outlet=north)  # queued behind it: the ready one is handed over first
    at = after(t0, LEASE + 5)
    beat(two, at)
    report = notifier_tick(now=at, timeout=TIMEOUT)

    order = Order.objects.get(pk=ready.id)
    assert (report.expired, report.released, report.down) == (1, 1, [])
    assert (order.state, order.outlet_id, order.claimed_by) == (OrderState.READY, north.pk, "")
    assert order.fence > ready.fence and order.lease_expires_at is None
    assert order.attempts == ready.attempts  # made once; handing over is no new attempt
    assert events(ready.id)[-1] == ("lease_expired", "ready")
    with pytest.raises(StaleFence):  # the old holder woke up: it no longer holds it
        order_complete(token=ready.token, fence=ready.fence, outlet=north)

    (handed,) = order_claim_next(outlet=north, station="north-2")
    assert (handed.id, handed.state, handed.claimed_by) == (ready.id, "ready", "north-2")
    assert handed.fence == order.fence + 1 and handed.lease_expires_at is not None
    assert events(ready.id)[-1] == ("claimed", "ready")
    assert order_complete(token=handed.token, fence=handed.fence, outlet=north).state == "completed"
    # The next claim cooks the queued one as usual.
    (cook,) = order_claim_next(outlet=north, station="north-2")
    assert cook.state == "preparing" and cook.id != ready.id


def test_tick__ready_order_of_a_live_outlet_with_a_renewed_lease_stays_with_its_holder(
    two: tuple[Outlet, Outlet], t0: datetime
) -> None:
    north, _ = two
    ready = ready_at(north)
    lease_renew(token=ready.token, fence=ready.fence, outlet=north, lease=LEASE * 3)
    at = after(t0, LEASE + 5)
    beat(two, at)
    assert notifier_tick(now=at, timeout=TIMEOUT).expired == 0
    order = Order.objects.get(pk=ready.id)
    assert (order.claimed_by, order.fence) == ("north-1", ready.fence)


def test_take_down__ready_orders_move_delivery_made_again_takeaway_cancelled(
    two: tuple[Outlet, Outlet],
) -> None:
    north, south = two
    takeaway = ready_at(north)
    delivery = next(t for t in (place(zone=f"z{i}") for i in range(50)) if t.outlet_id == north.pk)
    (claim,) = order_claim_next(outlet=north, station="north-3")
    assert claim.id == delivery.id
    order_mark_ready(token=claim.token, fence=claim.fence, outlet=north)

    outlet_mark_down(outlet=north)

    moved, gone = Order.objects.get(pk=delivery.id), Order.objects.get(pk=takeaway.id)
    assert (moved.state, moved.outlet_id, moved.claimed_by) == (OrderState.QUEUED, south.pk, "")
    assert moved.ready_at is None and moved.fence > claim.fence  # a planned mark-down
    assert (gone.state, gone.cancel_reason) == (OrderState.CANCELLED, OUTLET_CLOSED)
    north.refresh_from_db()
    assert not Order.objects.filter(outlet=north, state__in=["queued", "preparing", "ready"])


# --- a holder that restarts hands back at once ------------------------------------------


def test_stations_release__being_made_goes_back_to_the_queue_ready_waits_without_holder(
    two: tuple[Outlet, Outlet],
) -> None:
    north, _ = two
    ready = ready_at(north, "north-1")
    place("takeaway", outlet=north)
    (cooking,) = order_claim_next(outlet=north, station="north-2")
    place("takeaway", outlet=north)
    (other,) = order_claim_next(outlet=north, station="north-9")  # not this agent's

    released = stations_release(outlet=north, stations=["north-1", "north-2"], reason="restart")

    assert sorted(t.id for t in released) == sorted([ready.id, cooking.id])
    back = Order.objects.get(pk=cooking.id)
    assert (back.state, back.outlet_id, back.claimed_by) == (OrderState.QUEUED, north.pk, "")
    assert back.fence == cooking.fence + 1 and back.attempts == cooking.attempts
    still = Order.objects.get(pk=ready.id)
    assert (still.state, still.claimed_by, still.fence) == (OrderState.READY, "", ready.fence + 1)
    assert events(cooking.id)[-1] == ("released", "queued")
    assert events(ready.id)[-1] == ("released", "ready")
    assert Order.objects.get(pk=other.id).claimed_by == "north-9"
    for stale in (ready, cooking):
        with pytest.raises(StaleFence):
            order_complete(token=stale.token, fence=stale.fence, outlet=north)
    # Nothing waits for a lease: the restarted station gets them straight back.
    again = order_claim_next(outlet=north, station="north-1", limit=5)
    assert [t.id for t in again] == [ready.id, cooking.id]
    assert [t.state for t in again] == ["ready", "preparing"]


# --- a kitchen screen renews its whole station --------------------------------------------


def test_station_claims_renew__renews_this_stations_claims_only(
    two: tuple[Outlet, Outlet], t0: datetime
) -> None:
    north, _ = two
    ready = ready_at(north, "ana·k3x9")
    place("takeaway", outlet=north)
    (cooking,) = order_claim_next(outlet=north, station="ana·k3x9")
    place("takeaway", outlet=north)
    (other,) = order_claim_next(outlet=north, station="ben·a1")

    assert station_claims_renew(outlet=north, station="ana·k3x9", lease=LEASE * 10) == 2

    at = after(t0, LEASE + 5)
    beat(two, at)
    report = notifier_tick(now=at, timeout=TIMEOUT)
    assert report.expired == 1
    assert Order.objects.get(pk=other.id).claimed_by == ""
    for held in (ready, cooking):
        order = Order.objects.get(pk=held.id)
        assert (order.claimed_by, order.fence) == ("ana·k3x9", held.fence)


# --- a lost claim answer is answered again ----------------------------------------------


def test_claim_next__the_answer_was_lost__the_retry_gets_the_same_claim(
    two: tuple[Outlet, Outlet],
) -> None:
    north, _ = two
    first_order, second_order = place("takeaway", outlet=north), place("takeaway", outlet=north)
    (lost,) = order_claim_next(outlet=north, station="north-1", resend_held=True)
    claimed_events = OrderEvent.objects.filter(type="claimed").count()

    (retry,) = order_claim_next(outlet=north, station="north-1", resend_held=True)

    assert (retry.token, retry.fence, retry.state) == (lost.token, lost.fence, "preparing")
    assert retry.id == first_order.id
    assert retry.lease_expires_at is not None and retry.lease_expires_at >= lost.lease_expires_at
    assert OrderEvent.objects.filter(type="claimed").count() == claimed_events
    assert Order.objects.get(pk=second_order.id).state == OrderState.QUEUED
    # A batch: what it holds first, then new ones up to the limit.
    batch = order_claim_next(outlet=north, station="north-1", limit=3, resend_held=True)
    assert [t.id for t in batch] == [first_order.id, second_order.id]
    assert batch[0].fence == lost.fence
    # Acknowledged (completed), it is not sent again.
    for t in batch:
        order_complete(token=t.token, fence=t.fence, outlet=north)
    assert order_claim_next(outlet=north, station="north-1", resend_held=True) == []


# --- a down outlet claims nothing -----------------------------------------------------------


def test_claim__a_down_outlet_claims_nothing(two: tuple[Outlet, Outlet]) -> None:
    north, _ = two
    stranded = place("takeaway", outlet=north)
    Outlet.objects.filter(pk=north.pk).update(state=OutletState.DOWN)  # went down just now
    assert order_claim_next(outlet=north, station="north-1") == []
    with pytest.raises(InvalidState, match="not taking orders"):
        order_claim_ticket(outlet=north, token=stranded.token, station="ana·k3x9")
    assert Order.objects.get(pk=stranded.id).state == OrderState.QUEUED
    Outlet.objects.filter(pk=north.pk).update(state=OutletState.DRAINING)
    assert [t.id for t in order_claim_next(outlet=north, station="north-1")] == [stranded.id]


@pytest.mark.django_db(transaction=True)
def test_claim_next__stations_racing_for_one_ready_order__exactly_one_is_handed_it(
    make_outlet: MakeOutlet,
) -> None:
    north = make_outlet("north")[0]
    ready = ready_at(north)
    stations_release(outlet=north, stations=["north-1"], reason="restart")
    start = threading.Barrier(6)
    got: list[list[Ticket]] = []

    def station(n: int) -> None:
        try:
            start.wait(timeout=30)
            got.append(order_claim_next(outlet=north, station=f"north-{n + 10}"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=station, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    handed = [t for claims in got for t in claims]
    assert len(got) == 6 and [t.id for t in handed] == [ready.id]
    order = Order.objects.get(pk=ready.id)
    assert (order.state, order.claimed_by, order.fence) == (
        "ready",
        handed[0].claimed_by,
        handed[0].fence,
    )
