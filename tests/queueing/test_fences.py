"""Fences: a write that acts on a claim is refused unless it carries the order's current fence.

The stale fences here come the way they do in a kitchen: a station claims an
order, its outlet is marked down and the order moves to another outlet, where a
new station claims it. The first station is now a zombie: whatever it sends, it
must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db.models import Count

from queueing.errors import InvalidState, NotFound, StaleFence
from queueing.models import EventType, Order, OrderEvent, OrderState, Outlet
from queueing.services import (
    lease_renew,
    order_claim_next,
    order_complete,
    order_mark_ready,
    order_recall,
    orders_complete,
    orders_mark_ready,
    outlet_mark_down,
)
from queueing.tickets import Ticket
from tests.orders import place

pytestmark = pytest.mark.django_db


def snapshot(order_id: int) -> dict[str, Any]:
    """What a refused write must leave alone: the order's row and its timeline."""
    row = Order.objects.filter(pk=order_id).values().get()
    return {**row, "events": list(OrderEvent.objects.filter(order_id=order_id).values_list("id"))}


@dataclass
class Zombie:
    """An order claimed at ``old`` (``stale``), moved to ``new`` and claimed there (``fresh``)."""

    old: Outlet
    new: Outlet
    stale: Ticket
    fresh: Ticket


@pytest.fixture
def zombie(make_outlet: Callable[..., tuple[Outlet, str]]) -> Zombie:
    old = make_outlet("camden")[0]
    stale = place(zone="N1")
    assert stale.outlet_id == old.pk
    (stale,) = order_claim_next(outlet=old, station="camden-1")
    new = make_outlet("hackney")[0]
    moved, _ = outlet_mark_down(outlet=old)
    assert [t.id for t in moved] == [stale.id] and moved[0].outlet_id == new.pk
    (fresh,) = order_claim_next(outlet=new, station="hackney-1")
    assert fresh.id == stale.id and fresh.fence > stale.fence
    return Zombie(old=old, new=new, stale=stale, fresh=fresh)


def _ready(t: Ticket, outlet: Outlet | None) -> object:
    return order_mark_ready(token=t.token, fence=t.fence, outlet=outlet)


def _complete(t: Ticket, outlet: Outlet | None) -> object:
    return order_complete(token=t.token, fence=t.fence, outlet=outlet)


def _renew(t: Ticket, outlet: Outlet | None) -> object:
    return lease_renew(token=t.token, fence=t.fence, outlet=outlet, lease=600)


WRITES: dict[str, tuple[Callable[[Ticket, Outlet | None], object], str]] = {
    "ready": (_ready, "mark it ready"),
    "complete": (_complete, "complete it"),
    "renew": (_renew, "renew the lease on it"),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("as_agent", [True, False], ids=["agent", "screen"])
def test_fenced_write__stale_fence_changes_nothing_and_the_fresh_one_works(
    zombie: Zombie, write: str, as_agent: bool
) -> None:
    act, verb = WRITES[write]
    before = snapshot(zombie.stale.id)
    if as_agent:
        # The order is another outlet's now: told exactly what a token of no order is told.
        with pytest.raises(NotFound) as gone:
            act(zombie.stale, zombie.old)
        assert gone.value.message == "no order with this token"
        assert set(gone.value.context) == {"token"}
    else:
        with pytest.raises(StaleFence) as refused:
            act(zombie.stale, None)
        assert refused.value.message == (
            f"fence {zombie.stale.fence} is stale for order {zombie.stale.id} "
            f"(current fence {zombie.fresh.fence}, now preparing at hackney); "
            f"this station no longer holds it and must not {verb}"
        )
        assert refused.value.context["current_fence"] == zombie.fresh.fence
    assert snapshot(zombie.stale.id) == before
    act(zombie.fresh, zombie.new if as_agent else None)
    assert snapshot(zombie.stale.id) != before


def test_mark_ready_then_complete__fresh_fence_writes_one_event_each(zombie: Zombie) -> None:
    ready = order_mark_ready(token=zombie.fresh.token, fence=zombie.fresh.fence, outlet=zombie.new)
    assert ready.state == OrderState.READY and ready.fence == zombie.fresh.fence
    # Ready keeps its holder and a lease: someone must still hand it over.
    assert ready.lease_expires_at is not None and ready.claimed_by == "hackney-1"
    done = order_complete(token=zombie.fresh.token, fence=zombie.fresh.fence, outlet=zombie.new)
    assert done.state == OrderState.COMPLETED and done.lease_expires_at is None
    events = list(
        OrderEvent.objects.filter(order_id=done.id, type__in=[EventType.READY, EventType.COMPLETED])
        .order_by("id")
        .values_list("type", "state", "outlet_id", "fence")
    )
    assert events == [
        (EventType.READY, OrderState.READY, zombie.new.pk, zombie.fresh.fence),
        (EventType.COMPLETED, OrderState.COMPLETED, zombie.new.pk, zombie.fresh.fence),
    ]
    assert ready.event_id is not None and done.event_id is not None
    assert ready.event_id < done.event_id


def test_recall__stale_fence_refused_fresh_one_brings_the_ticket_back(zombie: Zombie) -> None:
    order_complete(token=zombie.fresh.token, fence=zombie.fresh.fence)
    before = snapshot(zombie.stale.id)
    with pytest.raises(NotFound, match="no order with this token"):  # another outlet's now
        order_recall(token=zombie.stale.token, fence=zombie.stale.fence, outlet=zombie.old)
    with pytest.raises(StaleFence, match="must not recall it"):
        order_recall(token=zombie.stale.token, fence=zombie.stale.fence)
    assert snapshot(zombie.stale.id) == before
    recalled = order_recall(token=zombie.fresh.token, fence=zombie.fresh.fence, outlet=zombie.new)
    assert recalled.state == OrderState.READY and recalled.fence == zombie.fresh.fence
    assert Order.objects.get(pk=recalled.id).finished_at is None
    assert OrderEvent.objects.filter(order_id=recalled.id, type=EventType.RECALLED).count() == 1


def test_renew__moves_the_lease_on_with_the_database_clock(zombie: Zombie) -> None:
    first = Order.objects.get(pk=zombie.fresh.id).lease_expires_at
    expires = lease_renew(token=zombie.fresh.token, fence=zombie.fresh.fence, lease=3600)
    assert expires > first
    assert Order.objects.get(pk=zombie.fresh.id).lease_expires_at == expires


def test_orders_complete__one_stale_row_is_reported_and_the_rest_complete(
    zombie: Zombie,
) -> None:
    place(zone="E1")
    place(zone="E2")
    others = order_claim_next(outlet=zombie.new, station="hackney-2", limit=2)
    assert len(others) == 2
    claims = [(others[0].token, others[0].fence), (zombie.stale.token, zombie.stale.fence)]
    claims.append((others[1].token, others[1].fence))
    done, refused = orders_complete(claims=claims, outlet=zombie.new)
    assert sorted(t.id for t in done) == sorted(t.id for t in others)
    assert all(t.state == OrderState.COMPLETED for t in done)
    assert len(refused) == 1 and isinstance(refused[0], StaleFence)
    assert refused[0].context["token"] == zombie.stale.token
    # The order behind the stale claim is still the fresh holder's.
    row = Order.objects.get(pk=zombie.stale.id)
    assert (row.state, row.fence, row.claimed_by) == (
        OrderState.PREPARING,
        zombie.fresh.fence,
        "hackney-1",
    )
    completed = OrderEvent.objects.filter(type=EventType.COMPLETED)
    assert sorted(completed.values_list("order_id", flat=True)) == sorted(t.id for t in others)


def test_orders_mark_ready__each_row_checked_against_its_own_fence(zombie: Zombie) -> None:
    place(zone="E1")
    (other,) = order_claim_next(outlet=zombie.new, station="hackney-2")
    done, refused = orders_mark_ready(
        claims=[(zombie.stale.token, zombie.fresh.fence), (other.token, other.fence - 1)]
    )
    # Right fence for the first, a stale one for the second: only the first is ready.
    assert [t.id for t in done] == [zombie.stale.id]
    assert [type(e) for e in refused] == [StaleFence]
    assert Order.objects.get(pk=other.id).state == OrderState.PREPARING


WRITES_ON_ANOTHER_OUTLET = {
    **WRITES,
    "recall": (lambda t, o: order_recall(token=t.token, fence=t.fence, outlet=o), "recall it"),
}


@pytest.mark.parametrize("write", list(WRITES_ON_ANOTHER_OUTLET))
def test_fenced_write__another_outlets_agent_is_told_not_found_whatever_the_fence(
    zombie: Zombie, make_outlet: Callable[..., tuple[Outlet, str]], write: str
) -> None:
    act, _ = WRITES_ON_ANOTHER_OUTLET[write]
    if write == "recall":
        order_complete(token=zombie.fresh.token, fence=zombie.fresh.fence)
    intruder = make_outlet("islington")[0]
    before = snapshot(zombie.fresh.id)
    with pytest.raises(NotFound, match="^no order with this token$"):
        act(zombie.fresh, intruder)
    # The old outlet's agent, which did hold it once, gets the same answer for the fresh fence.
    with pytest.raises(NotFound, match="^no order with this token$"):
        act(zombie.fresh, zombie.old)
    assert snapshot(zombie.fresh.id) == before


def test_complete__twice_with_the_same_fence_is_refused_as_invalid_state(zombie: Zombie) -> None:
    order_complete(token=zombie.fresh.token, fence=zombie.fresh.fence)
    with pytest.raises(
        InvalidState, match=f"cannot complete order {zombie.fresh.id}: it is completed"
    ):
        order_complete(token=zombie.fresh.token, fence=zombie.fresh.fence)
    assert OrderEvent.objects.filter(type=EventType.COMPLETED).count() == 1


def test_mark_ready__a_queued_order_that_nobody_claimed_is_refused(
    make_outlet: Callable[..., tuple[Outlet, str]],
) -> None:
    make_outlet("camden")
    queued = place(zone="N1")
    with pytest.raises(InvalidState, match=f"cannot mark order {queued.id} ready: it is queued"):
        order_mark_ready(token=queued.token, fence=queued.fence)
    with pytest.raises(InvalidState, match="renew"):
        lease_renew(token=queued.token, fence=queued.fence)
    assert Order.objects.get(pk=queued.id).state == OrderState.QUEUED


def test_fenced_write__unknown_token_is_not_found(
    make_outlet: Callable[..., tuple[Outlet, str]],
) -> None:
    with pytest.raises(NotFound, match="no order with this token"):
        order_complete(token="nope", fence=2)
    done, refused = orders_complete(claims=[("nope", 2), ("nope-2", 3)])
    assert done == [] and [type(e) for e in refused] == [NotFound, NotFound]


def test_orders_complete__every_completed_row_has_exactly_one_event(
    make_outlet: Callable[..., tuple[Outlet, str]],
) -> None:
    outlet = make_outlet("camden")[0]
    for zone in ("A", "B", "C", "D"):
        place(zone=zone)
    tickets = order_claim_next(outlet=outlet, station="s", limit=4)
    # The same claim twice in one batch completes once.
    claims = [(t.token, t.fence) for t in tickets] + [(tickets[0].token, tickets[0].fence)]
    done, refused = orders_complete(claims=claims)
    assert len(done) == 4 and refused == []
    per_order = (
        OrderEvent.objects.filter(type=EventType.COMPLETED)
        .values("order_id")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    assert list(per_order) == [1, 1, 1, 1]
