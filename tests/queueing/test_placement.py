"""Putting orders into the queue: which outlet takes them, their events, and NOTIFY on commit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections, transaction

from queueing import sql
from queueing.db import model_from_row
from queueing.errors import OutletUnavailable, QueueError
from queueing.events import events_cursor, events_since
from queueing.models import EventType, Order, OrderEvent, OrderState, Outlet, OutletState
from queueing.selectors import order_by_token, order_events
from queueing.services import order_enqueue, outlet_drain, outlet_mark_down, outlet_retire
from queueing.services import orders as orders_service
from queueing.services.routing import active_outlets, ring_of
from tests import processes
from tests.orders import LINES, place
from tests.processes import wait_for

ZONES = [f"zone-{i}" for i in range(12)]

MakeOutlet = Callable[..., tuple[Outlet, str]]


def first_choice(zone: str) -> str:
    """The outlet the ring of the live outlets names first for a zone."""
    return next(iter(ring_of(active_outlets()).walk(zone)))


def events_of(order_id: int) -> list[tuple[str, str, int | None, int]]:
    return list(
        OrderEvent.objects.filter(order_id=order_id)
        .order_by("id")
        .values_list("type", "state", "outlet_id", "fence")
    )


class Rollback(Exception):
    pass


# --- routing -------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue__a_zone_keeps_going_to_the_same_outlet_while_it_lives(
    make_outlet: MakeOutlet, settings: Any
) -> None:
    # Far from the load bound, so only the ring decides (bounded loads have their own tests).
    settings.HEARTH_RING_EPSILON = 1000
    outlets = {o.slug: o for o in (make_outlet(s)[0] for s in ("camden", "hackney", "soho"))}
    placed: dict[str, set[str]] = {zone: set() for zone in ZONES}
    for _ in range(3):
        for zone in ZONES:
            placed[zone].add(Outlet.objects.get(pk=place(zone=zone).outlet_id).slug)
    assert all(len(slugs) == 1 for slugs in placed.values()), placed
    home = {zone: slugs.pop() for zone, slugs in placed.items()}
    assert home == {zone: first_choice(zone) for zone in ZONES}
    assert len(set(home.values())) > 1, "every zone on one outlet: the test proves nothing"

    outlet_mark_down(outlet=outlets["camden"])
    for zone in ZONES:
        now_at = Outlet.objects.get(pk=place(zone=zone).outlet_id).slug
        if home[zone] == "camden":
            assert now_at != "camden"
        else:
            assert now_at == home[zone], f"{zone} left a live outlet"


@pytest.mark.django_db
def test_enqueue__takeaway_goes_to_its_named_outlet_with_one_placed_event(
    make_outlet: MakeOutlet,
) -> None:
    make_outlet("camden")
    soho = make_outlet("soho")[0]
    ticket = place("takeaway", outlet=soho)
    assert (ticket.outlet_id, ticket.state, ticket.fence) == (soho.pk, OrderState.QUEUED, 1)
    assert events_of(ticket.id) == [(EventType.PLACED, OrderState.QUEUED, soho.pk, 1)]
    assert ticket.event_id == OrderEvent.objects.get(order_id=ticket.id).id


@pytest.mark.django_db(transaction=True)
def test_enqueue__takeaway_is_one_statement_in_autocommit(
    make_outlet: MakeOutlet, django_assert_num_queries: Any
) -> None:
    """The outlet's hold, the order and its event in one statement: one round trip, one commit."""
    soho = make_outlet("soho")[0]
    with django_assert_num_queries(1) as ran:
        ticket = place("takeaway", outlet=soho)
    assert "FOR KEY SHARE" in ran.captured_queries[0]["sql"]
    assert Order.objects.get().outlet_id == soho.pk == ticket.outlet_id


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["draining", "down", "retired", "missing"])
def test_enqueue__takeaway_at_an_outlet_not_taking_orders_is_refused(
    make_outlet: MakeOutlet, state: str
) -> None:
    camden = make_outlet("camden")[0]
    make_outlet("soho")
    if state == "draining":
        outlet_drain(outlet=camden)
    elif state == "down":
        outlet_mark_down(outlet=camden)
    elif state == "retired":
        outlet_retire(outlet=camden)
    events_before = OrderEvent.objects.count()
    with pytest.raises(OutletUnavailable) as refused:
        place("takeaway", outlet=None if state == "missing" else camden)
    name = "?" if state == "missing" else "camden"
    assert refused.value.message == f"outlet {name} is not taking orders right now"
    assert refused.value.context == {"field": "outlet"}
    assert not Order.objects.exists()
    assert OrderEvent.objects.count() == events_before


@pytest.mark.django_db
def test_enqueue__takeaway_refused_when_the_outlet_went_down_after_it_was_loaded(
    make_outlet: MakeOutlet,
) -> None:
    camden = make_outlet("camden")[0]
    make_outlet("soho")
    outlet_mark_down(outlet=Outlet.objects.get(pk=camden.pk))
    assert camden.state == OutletState.ACTIVE  # the caller's copy is stale
    with pytest.raises(OutletUnavailable):
        place("takeaway", outlet=camden)
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_enqueue__delivery_with_no_live_outlet_waits_with_no_outlet(
    make_outlet: MakeOutlet,
) -> None:
    camden = make_outlet("camden")[0]
    outlet_drain(outlet=camden)
    ticket = place(zone="N1")
    assert ticket.outlet_id is None and ticket.state == OrderState.QUEUED
    assert events_of(ticket.id) == [(EventType.WAITING, OrderState.QUEUED, None, 1)]
    event = OrderEvent.objects.get(order_id=ticket.id)
    assert event.detail == {"reason": "no outlet available"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "zone", "message", "field"),
    [
        ("pickup", "N1", "kind must be one of takeaway, delivery, not 'pickup'", "kind"),
        ("delivery", "", "a delivery order needs its delivery zone", "zone"),
    ],
)
def test_enqueue__bad_kind_or_missing_zone_is_refused_and_changes_nothing(
    make_outlet: MakeOutlet, kind: str, zone: str, message: str, field: str
) -> None:
    make_outlet("camden")
    events_before = OrderEvent.objects.count()
    with pytest.raises(QueueError) as refused:
        order_enqueue(
            kind=kind,
            lines=LINES,
            customer={"name": "Ada"},
            prep_seconds=60,
            quick=False,
            zone=zone,
        )
    assert (refused.value.message, refused.value.context) == (message, {"field": field})
    assert not Order.objects.exists() and OrderEvent.objects.count() == events_before


# --- one event per write, in the same transaction ---------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["delivery", "takeaway"])
def test_enqueue__rolled_back_placement_leaves_no_order_and_no_event(
    make_outlet: MakeOutlet, kind: str
) -> None:
    camden = make_outlet("camden")[0]
    events_before = OrderEvent.objects.count()
    with pytest.raises(Rollback), transaction.atomic():
        ticket = place(zone="N1") if kind == "delivery" else place("takeaway", outlet=camden)
        # Inside the transaction the order and its one event are there...
        assert events_of(ticket.id) == [(EventType.PLACED, OrderState.QUEUED, camden.pk, 1)]
        raise Rollback
    # ...and after the rollback neither is.
    assert not Order.objects.exists()
    assert OrderEvent.objects.count() == events_before


@pytest.fixture
def listener(db: None) -> Iterator[psycopg.Connection[Any]]:
    """A separate connection LISTENing on the events channel, as a web process does."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as conn:
        conn.execute(sql.EVENTS_LISTEN)
        yield conn


@pytest.mark.django_db(transaction=True)
def test_enqueue__wakes_listeners_on_commit_only_and_readers_see_only_the_commit(
    make_outlet: MakeOutlet, listener: psycopg.Connection[Any]
) -> None:
    make_outlet("camden")
    for _ in listener.notifies(timeout=0.5):  # the outlet being added woke it; not this test's
        pass
    cursor, _ = events_cursor()
    with pytest.raises(Rollback), transaction.atomic():
        rolled_back = place(zone="N1")
        raise Rollback
    # Nothing committed: no wake-up (the waker sends at once when one is due).
    assert list(listener.notifies(timeout=0.5)) == []
    committed = place(zone="N2")
    wakes = list(listener.notifies(timeout=10, stop_after=1))
    # A wake-up carries nothing: readers read the table.
    assert [(n.channel, n.payload) for n in wakes] == [(sql.EVENTS_CHANNEL, "")]
    events, _ = events_since(cursor)
    assert [e["order"] for e in events] == [committed.token]
    (payload,) = events
    assert rolled_back.token != committed.token
    assert payload["type"] == EventType.PLACED and payload["outlet"] == "camden"
    assert payload["id"] == committed.event_id and payload["number"] == committed.id
    assert payload["state"] == OrderState.QUEUED and payload["fence"] == 1


# --- placements racing an outlet going down -----------------------------------------------


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = target()
        except BaseException as exc:  # noqa: BLE001 (checked by the test)
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _lock_waiters() -> int:
    with connections["default"].cursor() as cur:
        # Inside a transaction pg_stat_activity is read once and kept: look afresh each time.
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cur.fetchone()[0])


def _someone_waits_for_a_lock() -> bool:
    return _lock_waiters() > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["delivery", "takeaway"])
def test_enqueue__placement_waiting_on_a_take_down_does_not_land_on_the_dead_outlet(
    make_outlet: MakeOutlet, kind: str
) -> None:
    camden, soho = make_outlet("camden")[0], make_outlet("soho")[0]
    zone = next(z for z in ZONES if first_choice(z) == "camden")
    with psycopg.connect(processes.test_database_url()) as notifier:
        # The notifier is taking camden down: it holds the outlet's row lock (as
        # outlet_take_down does), has moved the orders it saw, and has not committed yet.
        notifier.execute("SELECT id FROM queueing_outlet WHERE id = %s FOR UPDATE", [camden.pk])
        thread, result = _in_thread(
            lambda: place(zone=zone) if kind == "delivery" else place("takeaway", outlet=camden)
        )
        wait_for(_someone_waits_for_a_lock, timeout=10, message="the placement to wait")
        notifier.execute("UPDATE queueing_outlet SET state = 'down' WHERE id = %s", [camden.pk])
        notifier.commit()
    thread.join(10)
    assert not thread.is_alive()
    if kind == "delivery":
        assert "error" not in result, result
        assert result["value"].outlet_id == soho.pk
        assert Order.objects.get().outlet_id == soho.pk
    else:
        assert isinstance(result.get("error"), OutletUnavailable), result
        assert not Order.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_enqueue__take_down_waiting_on_a_placement_moves_the_new_order(
    make_outlet: MakeOutlet,
) -> None:
    camden, soho = make_outlet("camden")[0], make_outlet("soho")[0]
    zone = next(z for z in ZONES if first_choice(z) == "camden")
    with transaction.atomic():
        placed = place(zone=zone)
        assert placed.outlet_id == camden.pk
        thread, result = _in_thread(lambda: outlet_mark_down(outlet=camden))
        wait_for(_someone_waits_for_a_lock, timeout=10, message="the take-down to wait")
    thread.join(10)
    assert not thread.is_alive() and "error" not in result, result
    moved, _ = result["value"]
    assert [t.id for t in moved] == [placed.id]
    assert Order.objects.get().outlet_id == soho.pk


@pytest.mark.django_db(transaction=True)
def test_enqueue__take_down_waiting_on_a_placement_in_autocommit_moves_the_new_order(
    make_outlet: MakeOutlet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A placement outside any transaction holds its outlet until its own statement commits."""
    camden, soho = make_outlet("camden")[0], make_outlet("soho")[0]
    zone = next(z for z in ZONES if first_choice(z) == "camden")
    token = "placement-stalled-on-a-twin"
    monkeypatch.setattr(orders_service.secrets, "token_urlsafe", lambda _: token)
    with psycopg.connect(processes.test_database_url()) as twin:
        # An uncommitted order with the same token at soho: the placement's insert, camden
        # already held by its FROM, waits on the token's unique index until the twin ends.
        twin.execute(
            "INSERT INTO queueing_order (token, kind, zone, rush, quick, lines, customer,"
            " prep_seconds, state, cancel_reason, outlet_id, sort_key, fence, claimed_by,"
            " attempts, created_at) VALUES (%s, 'takeaway', '', false, false, '[]', '{}',"
            " 60, 'queued', '', %s, now(), 1, '', 0, now())",
            [token, soho.pk],
        )
        placing, placed = _in_thread(lambda: place(zone=zone))
        wait_for(lambda: _lock_waiters() >= 1, timeout=10, message="the placement to wait")
        taking, took = _in_thread(lambda: outlet_mark_down(outlet=camden))
        wait_for(lambda: _lock_waiters() >= 2, timeout=10, message="the take-down to wait")
        twin.rollback()
    placing.join(10)
    taking.join(10)
    assert not placing.is_alive() and not taking.is_alive()
    assert "error" not in placed and "error" not in took, (placed, took)
    assert placed["value"].outlet_id == camden.pk  # placed there, then moved with the rest
    moved, _ = took["value"]
    assert [t.id for t in moved] == [placed["value"].id]
    assert Order.objects.get().outlet_id == soho.pk


@pytest.mark.django_db
@pytest.mark.parametrize("has_outlet", [True, False], ids=["at an outlet", "waiting for one"])
def test_order_by_token__is_the_stored_order_with_its_outlet(
    make_outlet: MakeOutlet, django_assert_num_queries: Any, has_outlet: bool
) -> None:
    if has_outlet:
        make_outlet("soho")
    ticket = place(zone="zone-1")  # with no outlet alive it waits, outlet None
    stored = Order.objects.select_related("outlet").get(pk=ticket.id)
    with django_assert_num_queries(1):  # the outlet comes with it
        found = order_by_token(token=ticket.token)
        assert found is not None
        assert found.outlet == stored.outlet
    for name in (f.attname for f in Order._meta.concrete_fields):
        assert getattr(found, name) == getattr(stored, name), name
    assert isinstance(found.lines, list) and isinstance(found.customer, dict)
    assert order_by_token(token="no-such-token") is None


@pytest.mark.django_db
def test_order_events__the_stored_timeline_with_both_outlets_in_one_query(
    make_outlet: MakeOutlet, django_assert_num_queries: Any
) -> None:
    make_outlet("soho")
    make_outlet("camden")
    ticket = place(zone="zone-1")
    first = Outlet.objects.get(pk=ticket.outlet_id)
    outlet_mark_down(outlet=first)  # the delivery order moves to the other outlet
    stored = list(
        OrderEvent.objects.filter(order_id=ticket.id)
        .select_related("outlet", "from_outlet")
        .order_by("id")
    )
    assert [e.type for e in stored] == ["placed", "rerouted"]
    order = Order.objects.get(pk=ticket.id)
    with django_assert_num_queries(1):  # the outlets' slugs and names come with it
        found = order_events(order=order)
        seen = [
            (e.pk, e.type, e.state, e.fence, e.detail, e.at, e.outlet, e.from_outlet) for e in found
        ]
        names = [(e.outlet.slug, e.outlet.name) for e in found]
        assert found[1].from_outlet is not None
        assert (found[1].from_outlet.slug, found[1].from_outlet.name) == (first.slug, first.name)
    assert seen == [
        (e.pk, e.type, e.state, e.fence, e.detail, e.at, e.outlet, e.from_outlet) for e in stored
    ]
    assert names == [(e.outlet.slug, e.outlet.name) for e in stored]
    assert found[0].from_outlet is None
    assert order_events(order=order, after=stored[0].pk) == [found[1]]


@pytest.mark.django_db
def test_model_from_row__columns_by_name_in_any_order__a_missing_one_deferred(
    make_outlet: MakeOutlet,
) -> None:
    soho = make_outlet("soho")[0]
    built = model_from_row(Outlet, {"slug": "soho", "state": soho.state, "id": soho.pk})
    assert (built.pk, built.slug, built.state) == (soho.pk, "soho", soho.state)
    assert "name" in built.get_deferred_fields()
    assert built.name == soho.name  # read when it is used
