"""The notifier's tick, driven by a clock the test moves: no sleeping.

Inside a test transaction PostgreSQL's now() is the transaction's start, so
``t0`` below is also the time every claim's lease counts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest

from queueing.errors import (
    InvalidState,
    NotFound,
    OutletNotEmpty,
    OutletUnavailable,
    StaleFence,
)
from queueing.models import NotifierStatus, Order, OrderEvent, OrderState, Outlet, OutletState
from queueing.notifier import Notifier
from queueing.services import (
    order_claim_next,
    order_complete,
    order_mark_ready,
    outlet_drain,
    outlet_heartbeat,
    outlet_mark_down,
    outlet_retire,
)
from queueing.services.failover import database_now, notifier_tick
from queueing.services.outlets import outlet_take_down
from queueing.services.routing import ring_of
from tests.orders import place

TIMEOUT = 15.0
LEASE = 30.0
MakeOutlet = Callable[..., tuple[Outlet, str]]


@pytest.fixture
def t0(db: None) -> datetime:
    return database_now()


@pytest.fixture
def settings_fast(settings: Any) -> Any:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.HEARTH_LEASE_SECONDS = LEASE
    settings.HEARTH_FLAP_GUARD = 2
    settings.HEARTH_MAX_ATTEMPTS = 3
    settings.HEARTH_RING_EPSILON = 0.25
    return settings


def beat(outlets: Iterable[Outlet], at: datetime) -> None:
    for outlet in outlets:
        outlet_heartbeat(outlet=outlet, source="test", now=at, timeout=TIMEOUT)


def tick(at: datetime, **kwargs: Any) -> Any:
    return notifier_tick(now=at, timeout=TIMEOUT, **kwargs)


def after(t: datetime, seconds: float) -> datetime:
    return t + timedelta(seconds=seconds)


def snapshot(**filters: Any) -> dict[int, tuple[int | None, int, str]]:
    return {
        o.pk: (o.outlet_id, o.fence, o.state)
        for o in Order.objects.filter(**filters).order_by("id")
    }


def state_of(outlet: Outlet) -> str:
    return Outlet.objects.get(pk=outlet.pk).state


@pytest.fixture
def four(make_outlet: MakeOutlet, settings_fast: Any, t0: datetime) -> list[Outlet]:
    outlets = [make_outlet(slug)[0] for slug in ("north", "south", "east", "west")]
    beat(outlets, t0)
    return outlets


def test_tick__silent_outlet_goes_down_and_its_orders_move_or_are_cancelled(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    for i in range(120):
        place(zone=f"zone-{i % 40}")
    for outlet in four:
        for _ in range(3):
            place("takeaway", outlet=outlet)
    claimed = order_claim_next(outlet=north, station="north-1", limit=2)
    ready = order_claim_next(outlet=north, station="north-2")[0]
    order_mark_ready(token=ready.token, fence=ready.fence, outlet=north)
    # Ready ones too: a pizza in a dark shop reaches nobody (made again, or cancelled).
    north_open = snapshot(outlet=north, state__in=["queued", "preparing", "ready"])
    assert north_open[ready.id][2] == "ready"
    survivors_before = snapshot(outlet__in=survivors)
    assert north_open and survivors_before

    beat(survivors, after(t0, 20))
    report = tick(after(t0, 20))

    assert report.down == ["north"]
    assert state_of(north) == OutletState.DOWN
    # Invariant 3: the survivors' orders kept their outlet, fence and state.
    assert snapshot(pk__in=survivors_before) == survivors_before
    for order in Order.objects.filter(pk__in=north_open):
        old_fence = north_open[order.pk][1]
        assert order.fence > old_fence
        if order.kind == "takeaway":
            assert order.state == OrderState.CANCELLED
            assert order.cancel_reason == "outlet unavailable"
            assert order.outlet_id == north.pk
        else:
            assert order.state == OrderState.QUEUED
            assert order.outlet_id in {o.pk for o in survivors}
            assert order.claimed_by == ""
            event = OrderEvent.objects.filter(order=order).latest("id")
            assert (event.type, event.from_outlet_id, event.outlet_id) == (
                "rerouted",
                north.pk,
                order.outlet_id,
            )
    # Stations that held claims at north can change nothing now: the order is another
    # outlet's, and north is told nothing about it (not even its fence).
    for ticket in claimed:
        if ticket.kind == "delivery":
            with pytest.raises(NotFound):
                order_complete(token=ticket.token, fence=ticket.fence, outlet=north)
    moved = sum(1 for o in Order.objects.filter(pk__in=north_open) if o.kind == "delivery")
    assert sum(report.rerouted.values()) == moved
    assert report.cancelled == 3


def test_tick__reroute_spreads_by_capacity_within_the_bounded_share(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    dead = make_outlet("dead")[0]
    survivors = [make_outlet(s, weight=w)[0] for s, w in (("a", 1), ("b", 2), ("c", 1), ("d", 3))]
    beat([dead, *survivors], t0)
    Outlet.objects.filter(pk__in=[o.pk for o in survivors]).update(state=OutletState.DRAINING)
    for i in range(400):  # only "dead" is active: every order lands there
        place(zone=f"z{i % 7}")  # few zones: pure hashing would pile them up
    Outlet.objects.filter(pk__in=[o.pk for o in survivors]).update(state=OutletState.ACTIVE)

    beat(survivors, after(t0, 20))
    tick(after(t0, 20))

    loads = {o.slug: Order.objects.filter(outlet=o, state="queued").count() for o in survivors}
    assert sum(loads.values()) == 400
    total_weight = sum(o.weight for o in survivors)
    for outlet in survivors:
        cap = math.ceil(1.25 * 400 * outlet.weight / total_weight)
        assert loads[outlet.slug] <= cap, (loads, outlet.slug, cap)


def test_tick__more_than_half_silent__nobody_down_and_an_alert_until_heartbeats_return(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    outlets = [make_outlet(f"o{i}")[0] for i in range(5)]
    beat(outlets, t0)
    orders = [place(zone=f"z{i}") for i in range(30)]
    before = snapshot()
    beat(outlets[:2], after(t0, 20))

    report = tick(after(t0, 20))

    assert report.down == [] and sorted(report.held) == ["o2", "o3", "o4"]
    assert "3 of 5 outlets fell silent" in report.alert
    assert NotifierStatus.objects.get(pk=1).alert == report.alert
    assert all(state_of(o) == OutletState.ACTIVE for o in outlets)
    assert snapshot() == before and len(before) == len(orders)

    beat(outlets, after(t0, 25))
    report = tick(after(t0, 25))
    assert report.alert == "" and NotifierStatus.objects.get(pk=1).alert == ""


def test_tick__outlets_cut_off_together_count_together_though_their_beats_were_apart(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    outlets = [make_outlet(f"o{i}")[0] for i in range(5)]
    beat(outlets, t0)
    beat(outlets[2:], after(t0, 4))  # o2..o4 beat 4 s later, then all but o0 fall silent
    beat(outlets[:1], after(t0, 16))

    report = tick(after(t0, 16))  # only o1 is past the timeout yet; o2..o4 are quiet

    assert report.down == [] and report.held == ["o1"]
    assert "4 of 5 outlets fell silent" in report.alert


def test_tick__two_of_five_silent__both_go_down(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    outlets = [make_outlet(f"o{i}")[0] for i in range(5)]
    beat(outlets, t0)
    beat(outlets[2:], after(t0, 20))
    report = tick(after(t0, 20))
    assert sorted(report.down) == ["o0", "o1"] and report.alert == ""


def test_tick__during_grace__nobody_down_and_no_lease_reaped(
    four: list[Outlet], t0: datetime
) -> None:
    north = four[0]
    place("takeaway", outlet=four[1])
    claim = order_claim_next(outlet=four[1], station="s")[0]
    report = tick(after(t0, LEASE + 5), may_declare_down=False)
    assert report.down == [] and report.expired == 0
    assert set(report.held) == {"north", "south", "east", "west"}
    assert state_of(north) == OutletState.ACTIVE
    assert Order.objects.get(pk=claim.id).fence == claim.fence


def test_take_down__an_outlet_that_heartbeated_after_the_scan_stays(
    four: list[Outlet], t0: datetime
) -> None:
    north = four[0]
    beat([north], after(t0, 19))  # lands after the scan at t0 + 20 saw it silent
    assert (
        outlet_take_down(
            outlet_id=north.pk, reason="test", silent_before=after(t0, 20), timeout=TIMEOUT
        )
        is None
    )
    assert state_of(north) == OutletState.ACTIVE


def test_tick__expired_lease_moves_to_the_next_outlet_and_counts_attempts(
    four: list[Outlet], t0: datetime
) -> None:
    order = place(zone="harbour")
    holders = []
    for attempt in (1, 2):
        current = Order.objects.get(pk=order.id)
        holder = Outlet.objects.get(pk=current.outlet_id)
        claim = order_claim_next(outlet=holder, station=f"{holder.slug}-1", lease=LEASE)[0]
        assert claim.id == order.id
        holders.append(holder)
        at = after(t0, (LEASE + 5) * attempt)
        beat(four, at)
        report = tick(at)
        moved = Order.objects.get(pk=order.id)
        assert report.expired == 1 and report.down == []
        assert moved.outlet_id != holder.pk and moved.outlet_id is not None
        assert (moved.state, moved.attempts) == (OrderState.QUEUED, attempt)
        assert moved.fence > claim.fence
        event = OrderEvent.objects.filter(order_id=order.id).latest("id")
        assert (event.type, event.from_outlet_id, event.outlet_id) == (
            "lease_expired",
            holder.pk,
            moved.outlet_id,
        )
        # Refused: a stale fence at its own outlet, "no such order" once it is another's.
        with pytest.raises(StaleFence if moved.outlet_id == holder.pk else NotFound):
            order_mark_ready(token=claim.token, fence=claim.fence, outlet=holder)

    holder = Outlet.objects.get(pk=Order.objects.get(pk=order.id).outlet_id)
    order_claim_next(outlet=holder, station="last", lease=LEASE)
    at = after(t0, (LEASE + 5) * 3)
    beat(four, at)
    report = tick(at)
    final = Order.objects.get(pk=order.id)
    assert report.attention == 1
    assert (final.state, final.attempts) == (OrderState.ATTENTION, 3)


def test_tick__expired_takeaway_lease_goes_back_to_its_own_outlets_queue(
    four: list[Outlet], t0: datetime
) -> None:
    south = four[1]
    order = place("takeaway", outlet=south)
    claim = order_claim_next(outlet=south, station="south-1", lease=LEASE)[0]
    beat(four, after(t0, LEASE + 5))
    tick(after(t0, LEASE + 5))
    again = Order.objects.get(pk=order.id)
    assert (again.outlet_id, again.state, again.attempts) == (south.pk, OrderState.QUEUED, 1)
    assert again.fence > claim.fence


def test_last_active_outlet_marked_down__orders_wait_then_move_when_an_outlet_is_back(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    a, b = make_outlet("a")[0], make_outlet("b")[0]
    beat([a, b], t0)
    beat([a], after(t0, 20))
    assert tick(after(t0, 20)).down == ["b"]
    orders = [place(zone=f"z{i}") for i in range(10)]
    takeaway = place("takeaway", outlet=a)
    assert all(o.outlet_id == a.pk for o in orders)

    moved, cancelled = outlet_mark_down(outlet=a)

    assert [t.id for t in cancelled] == [takeaway.id]
    assert {t.id for t in moved} == {o.id for o in orders}
    for order in Order.objects.filter(pk__in=[o.id for o in orders]):
        assert (order.outlet_id, order.state) == (None, OrderState.QUEUED)
        event = OrderEvent.objects.filter(order=order).latest("id")
        assert event.type == "waiting" and event.from_outlet_id == a.pk
        assert event.detail["reason"] == "no outlet available"
    late = place(zone="late")
    assert late.outlet_id is None
    assert OrderEvent.objects.get(order_id=late.id).type == "waiting"

    # a keeps heartbeating without a break: a manager's mark-down holds.
    beat([a], after(t0, 25))
    beat([a], after(t0, 30))
    assert tick(after(t0, 30)).back == []
    # b comes back; the flap guard holds it for 2 s and 3 heartbeats, then every waiting
    # order moves to it.
    beat([b], after(t0, 40))
    report = tick(after(t0, 40))
    assert report.back == [] and report.assigned == 0
    assert Order.objects.filter(outlet__isnull=True, state="queued").count() == 11
    beat([b], after(t0, 41.5))
    beat([b], after(t0, 43))
    report = tick(after(t0, 43))
    assert report.back == ["b"] and report.assigned == 11
    assert state_of(a) == OutletState.DOWN
    assert Order.objects.filter(outlet=b, state="queued").count() == 11
    event = OrderEvent.objects.filter(order_id=late.id).latest("id")
    assert (event.type, event.from_outlet_id, event.outlet_id) == ("rerouted", None, b.pk)


def test_returning_outlet__gets_new_orders_only_nothing_moves_back(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    for i in range(40):
        place(zone=f"z{i}")
    beat(survivors, after(t0, 20))
    tick(after(t0, 20))
    moved_away = snapshot(outlet__in=survivors)

    beat(four, after(t0, 30))
    assert tick(after(t0, 30)).back == []  # flap guard
    beat(four, after(t0, 31.5))
    beat(four, after(t0, 33))
    assert tick(after(t0, 33)).back == ["north"]

    assert snapshot(pk__in=moved_away) == moved_away
    assert not Order.objects.filter(outlet=north, state__in=["queued", "preparing"]).exists()
    new = [place(zone=f"new-{i}") for i in range(40)]
    assert any(t.outlet_id == north.pk for t in new)


def test_flapping_outlet__restarts_its_flap_guard(four: list[Outlet], t0: datetime) -> None:
    north, *survivors = four
    beat(survivors, after(t0, 20))
    tick(after(t0, 20))
    beat([north], after(t0, 21))  # back for one beat, then silent again
    beat(survivors, after(t0, 50))
    beat([north], after(t0, 50))  # a new return: the guard counts from here
    beat([north], after(t0, 51))
    assert tick(after(t0, 51)).back == []
    beat(four, after(t0, 52.5))
    assert tick(after(t0, 52.5)).back == ["north"]


def test_silent_draining_outlet__goes_down_and_its_orders_move(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    for i in range(30):
        place(zone=f"z{i}")
    outlet_drain(outlet=north)
    beat(survivors, after(t0, 20))
    assert tick(after(t0, 20)).down == ["north"]
    assert not Order.objects.filter(outlet=north, state="queued").exists()


def test_drain__takes_no_new_orders_and_finishes_its_own(four: list[Outlet], t0: datetime) -> None:
    north = four[0]
    for i in range(40):
        place(zone=f"z{i}")
    mine = snapshot(outlet=north)
    assert mine

    assert outlet_drain(outlet=north) == []

    assert state_of(north) == OutletState.DRAINING
    assert snapshot(outlet=north) == mine
    new = [place(zone=f"z{i}") for i in range(40)]  # the same zones
    assert all(t.outlet_id != north.pk for t in new)
    with pytest.raises(OutletUnavailable):
        place("takeaway", outlet=Outlet.objects.get(pk=north.pk))
    with pytest.raises(OutletNotEmpty):
        outlet_retire(outlet=north)
    while claims := order_claim_next(outlet=north, station="north-1", limit=10):
        for claim in claims:
            order_complete(token=claim.token, fence=claim.fence, outlet=north)
    outlet_retire(outlet=north)
    assert state_of(north) == OutletState.RETIRED
    with pytest.raises(InvalidState):
        outlet_heartbeat(outlet=north, source="test")


def test_drain_and_move__moves_only_unclaimed_delivery_orders(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    for i in range(40):
        place(zone=f"z{i}")
    takeaway = place("takeaway", outlet=north)
    claim = order_claim_next(outlet=north, station="north-1")[0]
    others = snapshot(outlet__in=survivors)

    moved = outlet_drain(outlet=north, move_queued=True)

    assert moved and all(t.outlet_id in {o.pk for o in survivors} for t in moved)
    left = set(Order.objects.filter(outlet=north).values_list("id", flat=True))
    assert left == {claim.id, takeaway.id}
    assert snapshot(pk__in=others) == others
    for ticket in moved:
        event = OrderEvent.objects.filter(order_id=ticket.id).latest("id")
        assert (event.from_outlet_id, event.outlet_id) == (north.pk, ticket.outlet_id)
    order_complete(token=claim.token, fence=claim.fence, outlet=north)


def test_drain_and_move__with_no_other_live_outlet_keeps_its_orders(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    only = make_outlet("only")[0]
    orders = [place(zone=f"z{i}") for i in range(5)]
    assert outlet_drain(outlet=only, move_queued=True) == []
    assert set(Order.objects.filter(outlet=only).values_list("id", flat=True)) == {
        o.id for o in orders
    }


def test_retire__refuses_an_outlet_with_ready_orders(four: list[Outlet], t0: datetime) -> None:
    south = four[1]
    place("takeaway", outlet=south)
    claim = order_claim_next(outlet=south, station="s")[0]
    order_mark_ready(token=claim.token, fence=claim.fence, outlet=south)
    outlet_drain(outlet=south)
    with pytest.raises(OutletNotEmpty, match="1 open orders"):
        outlet_retire(outlet=south)


def test_tick__orders_that_reach_an_outlet_after_it_went_down_are_swept_up(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    north, south = make_outlet("north")[0], make_outlet("south")[0]
    beat([north, south], t0)
    order = place("takeaway", outlet=south)
    zone = next(
        z for z in (f"z{i}" for i in range(100)) if ring_of([north, south]).owner(z) == "south"
    )
    assert place(zone=zone).outlet_id == south.pk
    assert len(order_claim_next(outlet=south, station="s", limit=2)) == 2
    stale = [Outlet.objects.get(pk=north.pk), Outlet.objects.get(pk=south.pk)]
    outlet_mark_down(outlet=north)  # a manager, while the notifier still sees north live
    monkeypatch.setattr("queueing.services.routing.active_outlets", lambda: stale)
    beat([north, south], after(t0, LEASE + 5))
    tick(after(t0, LEASE + 5))  # the expired claim moves on, to north: just gone down
    monkeypatch.undo()
    assert Order.objects.filter(outlet=north, state="queued").exists()

    report = tick(after(t0, LEASE + 6))

    assert report.stranded >= 1
    assert not Order.objects.filter(outlet=north, state__in=["queued", "preparing"]).exists()
    assert Order.objects.get(pk=order.id).outlet_id == south.pk


# --- the notifier loop's own rules, with the clock passed to its tick ---------------


def test_notifier__one_leads_and_a_standby_takes_over_when_the_lease_lapses(
    settings_fast: Any, t0: datetime
) -> None:
    first, second = Notifier(name="first"), Notifier(name="second")
    try:
        assert first.run_once() is not None
        assert second.run_once() is None  # the lease is first's
        assert NotifierStatus.objects.get(pk=1).leader == "first"
        # The leader stops renewing (killed, frozen, cut off) and its lease runs out.
        NotifierStatus.objects.filter(pk=1).update(lease_expires_at=after(t0, -1))
        assert second.run_once() is not None
        status = NotifierStatus.objects.get(pk=1)
        assert status.leader == "second" and status.term == second.term
        assert first.run_once() is None and not first.leading  # woken: it stands by
    finally:
        first.release()
        second.release()


def test_notifier__declares_nobody_down_until_a_timeout_after_it_starts_leading(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    notifier = Notifier(name="n", timeout=TIMEOUT)
    try:
        assert notifier._lead()
        for seconds, down in ((20, []), (30, []), (34.9, []), (35, ["north"])):
            beat(survivors, after(t0, seconds))
            assert notifier._tick(after(t0, seconds)).down == down, seconds
    finally:
        notifier.release()


def test_notifier__a_gap_between_ticks_longer_than_the_timeout_restarts_the_grace(
    four: list[Outlet], t0: datetime
) -> None:
    north, *survivors = four
    notifier = Notifier(name="n", timeout=TIMEOUT)
    try:
        assert notifier._lead()
        notifier._tick(t0)
        beat(four, after(t0, 16))
        notifier._tick(after(t0, 16))  # grace over, everyone heartbeating
        # The notifier is paused for 20 s; north really did fall silent meanwhile.
        beat(survivors, after(t0, 36))
        report = notifier._tick(after(t0, 36))
        assert report.down == [] and report.held == ["north"]
        beat(survivors, after(t0, 51))
        assert notifier._tick(after(t0, 51)).down == ["north"]
    finally:
        notifier.release()


def test_notifier__outlets_waking_one_by_one_from_a_mass_silence_are_not_declared_down(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    outlets = [make_outlet(f"o{i}")[0] for i in range(5)]
    beat(outlets, t0)
    place("takeaway", outlet=outlets[2])
    claim = order_claim_next(outlet=outlets[2], station="o2-1", lease=LEASE)[0]
    notifier = Notifier(name="n", timeout=TIMEOUT)
    try:
        assert notifier._lead()
        notifier._grace_from = after(t0, -TIMEOUT)  # past its start-up grace
        for seconds in (20, 30):
            beat(outlets[:2], after(t0, seconds))
            assert "3 of 5 outlets fell silent" in notifier._tick(after(t0, seconds)).alert
        # They wake one by one: o2 is heard from first (its claim's lease ran out while
        # it was silent), o3 and o4 not yet; the silent ones are now a minority.
        beat(outlets[:3], after(t0, 40))
        report = notifier._tick(after(t0, 40))
        assert report.alert == "" and report.alert_cleared
        assert report.down == [] and sorted(report.held) == ["o3", "o4"]
        assert report.expired == 0
        assert Order.objects.get(pk=claim.id).fence == claim.fence
        # A full timeout's grace: o3 wakes meanwhile; o4 never does.
        for seconds in (44, 52):
            beat(outlets[:4], after(t0, seconds))
            assert notifier._tick(after(t0, seconds)).down == [], seconds
        beat(outlets[:4], after(t0, 59.5))
        assert notifier._tick(after(t0, 59.5)).down == ["o4"]
    finally:
        notifier.release()


def test_tick__expired_lease_at_the_only_live_outlet_goes_back_to_its_queue(
    make_outlet: MakeOutlet, settings_fast: Any, t0: datetime
) -> None:
    only = make_outlet("only")[0]
    beat([only], t0)
    order = place(zone="harbour")
    claim = order_claim_next(outlet=only, station="only-1", lease=LEASE)[0]
    beat([only], after(t0, LEASE + 5))
    assert tick(after(t0, LEASE + 5)).expired == 1
    again = Order.objects.get(pk=order.id)
    assert (again.outlet_id, again.state, again.attempts) == (only.pk, OrderState.QUEUED, 1)
    assert again.fence > claim.fence
    assert OrderEvent.objects.filter(order_id=order.id).latest("id").type == "lease_expired"
