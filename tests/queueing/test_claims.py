"""Claims against real PostgreSQL: many stations, one queue, every order claimed exactly once.

Concurrency runs on real connections: threads (Django gives each thread its own
connection) and separate processes. The data is committed
(``transaction=True``) so every connection sees it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import OperationalError, connection, connections
from django.db.models import Count

from queueing.errors import InvalidState, NotFound, QueueError, TicketTaken
from queueing.models import EventType, Order, OrderEvent, OrderState, Outlet
from queueing.services import (
    order_claim_next,
    order_claim_ticket,
    order_complete,
    order_enqueue,
    order_mark_ready,
    orders_complete,
)
from queueing.tickets import Ticket
from tests import processes
from tests.processes import PROJECT_DIR, process_env, wait_for

ORDERS = 2000
WORKERS = 8
# Batch sizes a worker picks from: mostly one at a time, sometimes a busy outlet's batch.
LIMITS = (1, 1, 1, 5, 17)

LINES = [{"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 0}]


def queue_orders(outlet: Outlet, count: int) -> list[int]:
    """Queue ``count`` takeaway orders at the outlet through the service; returns their ids."""
    return [
        order_enqueue(
            kind="takeaway",
            lines=LINES,
            customer={"name": f"c{i}"},
            prep_seconds=0,
            quick=False,
            outlet=outlet,
        ).id
        for i in range(count)
    ]


def work_queue(outlet: Outlet, station: str, seed: int) -> list[int]:
    """A station: claim (one, or a batch) and complete with the fence, until the queue is empty."""
    rng = random.Random(seed)
    claimed: list[int] = []
    while True:
        limit = rng.choice(LIMITS)
        tickets = order_claim_next(outlet=outlet, station=station, limit=limit)
        if not tickets:
            return claimed
        assert len(tickets) <= limit
        claimed.extend(t.id for t in tickets)
        if len(tickets) == 1:
            order_complete(token=tickets[0].token, fence=tickets[0].fence, outlet=outlet)
        else:
            done, refused = orders_complete(
                claims=[(t.token, t.fence) for t in tickets], outlet=outlet
            )
            assert refused == [] and len(done) == len(tickets)


def assert_each_claimed_once(ids: list[int], claimed_per_worker: list[list[int]]) -> None:
    everything = [i for claimed in claimed_per_worker for i in claimed]
    duplicates = [i for i, n in Counter(everything).items() if n > 1]
    assert duplicates == [], f"claimed more than once: {duplicates[:10]}"
    assert sorted(everything) == sorted(ids), "some orders were never claimed"
    states = dict(Order.objects.values_list("state").annotate(n=Count("id")))
    assert states == {OrderState.COMPLETED: len(ids)}
    # Placed with fence 1, claimed once: fence 2, and nothing else bumped it.
    assert set(Order.objects.values_list("fence", flat=True)) == {2}
    for event_type in (EventType.CLAIMED, EventType.COMPLETED):
        per_order = Counter(
            OrderEvent.objects.filter(type=event_type).values_list("order_id", flat=True)
        )
        assert set(per_order) == set(ids), f"an order has no {event_type} event"
        assert set(per_order.values()) == {1}, f"an order has two {event_type} events"
    # Every claimed event names the station that holds the order, as the row does.
    holders = dict(Order.objects.values_list("id", "claimed_by"))
    for order_id, station in OrderEvent.objects.filter(type=EventType.CLAIMED).values_list(
        "order_id", "detail__station"
    ):
        assert station == holders[order_id]


def run_threads(target: Callable[[int], list[int]], count: int, timeout: float) -> list[list[int]]:
    """Run ``target(i)`` in ``count`` threads, each with its own connection; re-raise any failure."""
    results: list[list[int]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"workers still running after {timeout}s"
    if errors:
        raise errors[0]
    return results


@contextmanager
def statement_timeout(value: str) -> Iterator[None]:
    """Make a statement that would wait on a lock fail after ``value`` instead of hanging the run."""
    with connection.cursor() as cur:
        cur.execute("SELECT set_config('statement_timeout', %s, false)", [value])
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("RESET statement_timeout")


@pytest.fixture
def outlet(make_outlet: Callable[..., tuple[Outlet, str]]) -> Outlet:
    return make_outlet("camden")[0]


@pytest.mark.django_db(transaction=True)
def test_claim_next__eight_threads_claim_every_order_exactly_once(outlet: Outlet) -> None:
    ids = queue_orders(outlet, ORDERS)
    claimed = run_threads(lambda i: work_queue(outlet, f"station-{i}", seed=i), WORKERS, 120)
    assert_each_claimed_once(ids, claimed)
    assert all(claimed), "a worker claimed nothing: the run was not concurrent"


WORKER_SCRIPT = """
import json, random, sys
import django
django.setup()
from queueing.models import Outlet
from tests.queueing.test_claims import work_queue
outlet = Outlet.objects.get(pk=int(sys.argv[1]))
sys.stdin.readline()  # start together
print(json.dumps(work_queue(outlet, sys.argv[2], seed=int(sys.argv[3]))))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_claim_next__eight_processes_claim_every_order_exactly_once(outlet: Outlet) -> None:
    ids = queue_orders(outlet, ORDERS)
    env = process_env()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(outlet.pk), f"proc-{i}", str(i)],
            cwd=PROJECT_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    # Start all of them at once, after the slow part (importing Django) is done everywhere.
    wait_for(lambda: _backends_connected() >= WORKERS, timeout=60, message="workers connected")
    claimed = []
    try:
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in workers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            claimed.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_each_claimed_once(ids, claimed)


def _backends_connected() -> int:
    """Backends other than ours connected to the test database."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return int(cur.fetchone()[0])


# --- claim_next, one connection -------------------------------------------------------


@pytest.mark.django_db
def test_claim_next__batch_returns_best_first_and_bumps_each_fence(outlet: Outlet) -> None:
    ids = queue_orders(outlet, 5)
    tickets = order_claim_next(outlet=outlet, station="s1", limit=3)
    assert [t.id for t in tickets] == ids[:3]
    assert all(t.state == OrderState.PREPARING and t.fence == 2 for t in tickets)
    assert all(t.claimed_by == "s1" and t.lease_expires_at is not None for t in tickets)
    assert all(isinstance(t.lines, list) and t.lines[0]["item"] == "margherita" for t in tickets)
    assert [t.id for t in order_claim_next(outlet=outlet, station="s2", limit=10)] == ids[3:]
    assert order_claim_next(outlet=outlet, station="s2") == []


@pytest.mark.django_db
def test_claim_next__takes_only_its_outlets_orders(
    make_outlet: Callable[..., tuple[Outlet, str]],
) -> None:
    a, b = make_outlet("a")[0], make_outlet("b")[0]
    queue_orders(a, 2)
    assert order_claim_next(outlet=b, station="s", limit=5) == []
    assert len(order_claim_next(outlet=a, station="s", limit=5)) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, -1])
def test_claim_next__limit_below_one_is_refused(outlet: Outlet, limit: int) -> None:
    queue_orders(outlet, 1)
    with pytest.raises(QueueError, match=f"limit must be at least 1, got {limit}"):
        order_claim_next(outlet=outlet, station="s", limit=limit)
    assert Order.objects.get().state == OrderState.QUEUED


@pytest.mark.django_db(transaction=True)
def test_claim_next__skips_locked_rows(outlet: Outlet) -> None:
    first, second = queue_orders(outlet, 2)
    with psycopg.connect(processes.test_database_url()) as other, statement_timeout("5s"):
        # Another station is in the middle of claiming the first order.
        other.execute("SELECT id FROM queueing_order WHERE id = %s FOR UPDATE", [first])
        started = time.monotonic()
        tickets = order_claim_next(outlet=outlet, station="s", limit=2)
        assert time.monotonic() - started < 2.5, "the claim waited for a locked row"
        assert [t.id for t in tickets] == [second]


# --- claiming a named ticket ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_claim_ticket__two_stations_tapping_at_once_one_wins(outlet: Outlet) -> None:
    rounds = 15
    ids = queue_orders(outlet, rounds)
    tokens = dict(Order.objects.values_list("id", "token"))
    outcomes: list[list[Ticket | TicketTaken]] = []
    for order_id in ids:
        gate = threading.Barrier(2)

        def tap(i: int, token: str = tokens[order_id], gate: threading.Barrier = gate) -> list:
            gate.wait()
            try:
                return [order_claim_ticket(outlet=outlet, token=token, station=f"station-{i}")]
            except TicketTaken as exc:
                return [exc]

        results = run_threads(tap, 2, timeout=30)
        outcomes.append([r for pair in results for r in pair])
    for order_id, pair in zip(ids, outcomes, strict=True):
        winners = [r for r in pair if isinstance(r, Ticket)]
        losers = [r for r in pair if isinstance(r, TicketTaken)]
        assert len(winners) == 1 and len(losers) == 1, pair
        winner = winners[0]
        assert winner.id == order_id and winner.fence == 2
        message = losers[0].message
        # Either the winner had committed ("already taken by <station>") or the loser's
        # NOWAIT hit the winner's row lock ("being taken").
        assert (
            message == f"order {order_id} is already taken by {winner.claimed_by}"
            or message == "this ticket is being taken by another station"
        ), message
    assert OrderEvent.objects.filter(type=EventType.CLAIMED).count() == rounds
    assert set(Order.objects.values_list("state", flat=True)) == {OrderState.PREPARING}


@pytest.mark.django_db(transaction=True)
def test_claim_ticket__nowait_answers_at_once_while_another_holds_the_row(
    outlet: Outlet,
) -> None:
    (order_id,) = queue_orders(outlet, 1)
    token = Order.objects.get(pk=order_id).token
    with psycopg.connect(processes.test_database_url()) as holder, statement_timeout("5s"):
        holder.execute("SELECT id FROM queueing_order WHERE id = %s FOR NO KEY UPDATE", [order_id])
        started = time.monotonic()
        with pytest.raises(TicketTaken, match="being taken by another station"):
            order_claim_ticket(outlet=outlet, token=token, station="station-2")
        # At once, not after the 5 s the holder would have made it wait (a loaded box
        # takes its time even for the refusal).
        assert time.monotonic() - started < 2.5
        holder.rollback()
    # The holder let go: the ticket can be claimed, and the refused tap changed nothing.
    assert OrderEvent.objects.filter(type=EventType.CLAIMED).count() == 0
    ticket = order_claim_ticket(outlet=outlet, token=token, station="station-2")
    assert ticket.claimed_by == "station-2" and ticket.fence == 2


@pytest.mark.django_db
def test_claim_ticket__already_claimed_names_the_station(outlet: Outlet) -> None:
    (order_id,) = queue_orders(outlet, 1)
    token = Order.objects.get(pk=order_id).token
    order_claim_ticket(outlet=outlet, token=token, station="station-1")
    with pytest.raises(TicketTaken, match=f"order {order_id} is already taken by station-1"):
        order_claim_ticket(outlet=outlet, token=token, station="station-2")
    assert Order.objects.get().claimed_by == "station-1"


@pytest.mark.django_db
def test_claim_ticket__of_another_outlet_is_not_found(
    make_outlet: Callable[..., tuple[Outlet, str]],
) -> None:
    a, b = make_outlet("a")[0], make_outlet("b")[0]
    (order_id,) = queue_orders(a, 1)
    token = Order.objects.get(pk=order_id).token
    with pytest.raises(NotFound, match=f"no ticket {token} at outlet b"):
        order_claim_ticket(outlet=b, token=token, station="s")
    with pytest.raises(NotFound):
        order_claim_ticket(outlet=a, token="no-such-token", station="s")
    assert Order.objects.get().state == OrderState.QUEUED


@pytest.mark.django_db
def test_claim_ticket__ready_order_cannot_be_started(outlet: Outlet) -> None:
    (order_id,) = queue_orders(outlet, 1)
    token = Order.objects.get(pk=order_id).token
    ticket = order_claim_ticket(outlet=outlet, token=token, station="s")
    order_mark_ready(token=token, fence=ticket.fence)
    with pytest.raises(InvalidState, match=f"order {order_id} is ready, it cannot be started"):
        order_claim_ticket(outlet=outlet, token=token, station="s2")


@pytest.mark.django_db(transaction=True)
def test_claim_ticket__a_lost_connection_is_an_error_not_a_taken_ticket(outlet: Outlet) -> None:
    (order_id,) = queue_orders(outlet, 1)
    token = Order.objects.get(pk=order_id).token
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    try:
        with pytest.raises(OperationalError) as raised:
            order_claim_ticket(outlet=outlet, token=token, station="s")
        assert not isinstance(raised.value, TicketTaken)
    finally:
        connection.close()
    assert Order.objects.get(pk=order_id).state == OrderState.QUEUED
