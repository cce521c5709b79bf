"""Every state has a way out: a manager sends, hands over or cancels an order no one else moves."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from queueing.db import fetch_one
from queueing.errors import InvalidState, NotFound, OutletNotEmpty, OutletUnavailable, StaleFence
from queueing.models import Order, OrderEvent, OrderState, Outlet, OutletState
from queueing.services import (
    order_cancel,
    order_claim_next,
    order_complete,
    order_hand_over,
    order_mark_ready,
    order_send,
    outlet_mark_down,
    outlet_retire,
)
from queueing.tickets import Ticket
from tests.orders import place
from tests.processes import wait_for

pytestmark = pytest.mark.django_db

MakeOutlet = Callable[..., tuple[Outlet, str]]


@pytest.fixture
def outlets(make_outlet: MakeOutlet) -> tuple[Outlet, Outlet]:
    return make_outlet("north")[0], make_outlet("south")[0]


def set_aside(outlet: Outlet) -> Order:
    """An order at ``outlet`` whose lease ran out too often: needs attention."""
    ticket = place("takeaway", outlet=outlet)
    Order.objects.filter(pk=ticket.id).update(state="attention", attempts=3, fence=5)
    return Order.objects.get(pk=ticket.id)


def ready_at_dead_outlet(north: Outlet) -> tuple[Order, Ticket]:
    """A ready takeaway order left at north after north went down.

    A take-down moves ready orders too; one is left behind only as a race leaves it
    (it reached north as north went down), until the notifier's next sweep. The state
    is written directly to stand for that moment.
    """
    place("takeaway", outlet=north)
    [claimed] = order_claim_next(outlet=north, station="s1")
    order_mark_ready(token=claimed.token, fence=claimed.fence, outlet=north)
    Outlet.objects.filter(pk=north.pk).update(state=OutletState.DOWN)
    order = Order.objects.get(pk=claimed.id)
    assert (order.state, order.outlet_id) == (OrderState.READY, north.pk)
    return order, claimed


def last_event(order: Order | Ticket) -> OrderEvent:
    return OrderEvent.objects.filter(
        order_id=order.pk if isinstance(order, Order) else order.id
    ).latest("id")


def test_send__attention_order_queues_at_the_chosen_outlet(outlets: tuple[Outlet, Outlet]) -> None:
    north, south = outlets
    order = set_aside(north)

    ticket = order_send(order_id=order.pk, outlet=south, by="manager")

    order.refresh_from_db()
    assert (order.state, order.outlet_id, order.fence, order.attempts) == ("queued", south.pk, 6, 0)
    assert ticket.fence == 6
    event = last_event(order)
    assert (event.type, event.outlet_id, event.from_outlet_id) == ("rerouted", south.pk, north.pk)
    assert event.detail["by"] == "manager" and event.detail["was"] == "attention"
    [claimed] = order_claim_next(outlet=south, station="s1")  # south's cooks see it
    assert claimed.id == order.pk


def test_hand_over__attention_order_completes(outlets: tuple[Outlet, Outlet]) -> None:
    north, _ = outlets
    order = set_aside(north)

    order_hand_over(order_id=order.pk, by="manager")

    order.refresh_from_db()
    assert (order.state, order.fence) == ("completed", 6)
    assert order.finished_at is not None
    event = last_event(order)
    assert (event.type, event.state, event.detail["by"]) == ("completed", "completed", "manager")


def test_cancel__attention_order_with_a_reason_the_customer_sees(
    outlets: tuple[Outlet, Outlet],
) -> None:
    north, _ = outlets
    order = set_aside(north)

    order_cancel(order_id=order.pk, reason="  our oven  broke ", by="manager")

    order.refresh_from_db()
    assert (order.state, order.cancel_reason, order.fence) == ("cancelled", "our oven broke", 6)
    event = last_event(order)
    assert (event.type, event.detail["reason"]) == ("cancelled", "our oven broke")


@pytest.mark.parametrize("way", ["hand_over", "send", "cancel"])
def test_ready_at_a_dead_outlet__a_way_out_then_retire_works(
    outlets: tuple[Outlet, Outlet], way: str
) -> None:
    north, south = outlets
    order, claimed = ready_at_dead_outlet(north)
    with pytest.raises(OutletNotEmpty):
        outlet_retire(outlet=north)

    if way == "hand_over":
        order_hand_over(order_id=order.pk, by="manager")
    elif way == "send":
        order_send(order_id=order.pk, outlet=south, by="manager")
    else:
        order_cancel(order_id=order.pk, reason="north closed", by="manager")

    outlet_retire(outlet=north)
    north.refresh_from_db()
    assert north.state == "retired"
    # The fence grew: the dead outlet's agent, if it wakes, can no longer act on it.
    # (Or it is another outlet's order now, and north is told nothing about it.)
    with pytest.raises((StaleFence, InvalidState, NotFound)):
        order_complete(token=claimed.token, fence=claimed.fence, outlet=north)


def snapshot() -> tuple[list[tuple[Any, ...]], int]:
    orders = list(Order.objects.order_by("id").values_list("id", "state", "outlet_id", "fence"))
    return orders, OrderEvent.objects.count()


def test_refusals__unknown_finished_and_bad_targets_change_nothing(
    outlets: tuple[Outlet, Outlet],
) -> None:
    north, south = outlets
    order = set_aside(north)
    done = set_aside(north)
    order_hand_over(order_id=done.pk, by="manager")
    outlet_mark_down(outlet=south)
    before = snapshot()

    with pytest.raises(NotFound, match="no order 999999"):
        order_hand_over(order_id=999_999, by="manager")
    with pytest.raises(InvalidState, match=f"order {done.pk} is completed already"):
        order_cancel(order_id=done.pk, reason="x", by="manager")
    with pytest.raises(InvalidState, match="completed already"):
        order_send(order_id=done.pk, outlet=north, by="manager")
    with pytest.raises(OutletUnavailable, match="south is not taking orders"):
        order_send(order_id=order.pk, outlet=south, by="manager")
    with pytest.raises(InvalidState, match="say why"):
        order_cancel(order_id=order.pk, reason="   ", by="manager")
    with pytest.raises(InvalidState, match="at most 200"):
        order_cancel(order_id=order.pk, reason="x" * 201, by="manager")

    assert snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_hand_over__waits_for_a_cooks_write_in_flight_then_wins_by_the_fence(
    make_outlet: MakeOutlet,
) -> None:
    """Real concurrency: the manager's action waits on the row lock a cook's write holds."""
    north, _ = make_outlet("north")
    place("takeaway", outlet=north)
    [claimed] = order_claim_next(outlet=north, station="s1")
    outcome: dict[str, Any] = {}

    def manager() -> None:
        try:
            outcome["ticket"] = order_hand_over(order_id=claimed.id, by="manager")
        finally:
            connection.close()

    def manager_waits() -> bool:
        # Statistics views are a snapshot per transaction: clear it to see the live state.
        fetch_one("SELECT pg_stat_clear_snapshot()", {})
        row = fetch_one(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %(q)s",
            {"q": "%FOR NO KEY UPDATE OF o%"},
        )
        return bool(row and row["n"])

    with transaction.atomic():
        order_mark_ready(token=claimed.token, fence=claimed.fence, outlet=north)
        thread = threading.Thread(target=manager)
        thread.start()
        wait_for(
            manager_waits,
            timeout=30,
            message="the manager's action never waited on the cook's lock",
        )
    thread.join(timeout=30)
    order = Order.objects.get(pk=claimed.id)
    assert (order.state, order.fence) == ("completed", claimed.fence + 1)
    assert outcome["ticket"].state == "completed"
    with pytest.raises(StaleFence):  # the cook's bump, a moment late, changes nothing
        order_complete(token=claimed.token, fence=claimed.fence, outlet=north)
