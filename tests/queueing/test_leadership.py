"""The notifier's leadership: a lease with a term, and the term fence on every write of a tick.

These run on real concurrent connections (threads, and a real frozen process), so
they commit (``transaction=True``) and every connection sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from queueing import sql
from queueing.db import fetch_all, fetch_one
from queueing.models import NotifierStatus, Order, OrderEvent, Outlet, OutletState
from queueing.notifier import Notifier
from queueing.services import outlet_heartbeat
from queueing.services.failover import notifier_tick
from queueing.services.leadership import LostLeadership, leader_fence
from queueing.services.outlets import outlet_take_down
from tests.orders import place
from tests.processes import PROJECT_DIR, process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 15.0  # the live outlets stay fresh for the whole test; "dead" is an hour silent
MakeOutlet = Callable[..., tuple[Outlet, str]]


class InThread(threading.Thread):
    """Run ``work`` on a connection of its own; keeps its result, error and how long it took."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.took = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.result = self.work()
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.took = time.monotonic() - started
            connection.close()


def lapse_lease() -> None:
    """End the current lease now, as if its holder had stopped renewing it a while ago."""
    fetch_all(
        "UPDATE queueing_notifierstatus SET lease_expires_at = now() - interval '1 second'", {}
    )


def lease_lapsed() -> bool:
    """A plain read (it waits for no lock): has the lease run out on the database clock?"""
    row = fetch_one("SELECT lease_expires_at < now() AS lapsed FROM queueing_notifierstatus", {})
    return bool(row and row["lapsed"])


def silent_outlet(make_outlet: MakeOutlet) -> tuple[Outlet, list[Outlet]]:
    """One outlet silent for longer than the timeout, two heartbeating, a few orders everywhere."""
    dead, *live = (make_outlet(slug)[0] for slug in ("dead", "live-1", "live-2"))
    Outlet.objects.filter(pk=dead.pk).update(last_heartbeat_at=None)
    fetch_all(
        "UPDATE queueing_outlet SET created_at = now() - interval '1 hour' WHERE id = %(id)s",
        {"id": dead.pk},
    )
    for outlet in live:
        outlet_heartbeat(outlet=outlet, source="test", timeout=TIMEOUT)
    for i in range(12):
        place(zone=f"z{i}")
    for outlet in (dead, *live):
        place("takeaway", outlet=outlet)
    return dead, live


def test_lease__one_leads_a_standby_takes_over_only_when_it_lapses_and_the_term_grows(
    settings: Any,
) -> None:
    first, second = Notifier(name="first", lease=30), Notifier(name="second", lease=30)
    assert first._lead() is not None and first.term is not None
    assert second._lead() is None  # the lease is first's
    assert first._lead() is not None  # renewed under its own term
    status = NotifierStatus.objects.get(pk=1)
    assert (status.leader, status.term) == ("first", first.term)

    lapse_lease()  # first stopped renewing (killed, frozen, cut off)
    assert second._lead() is not None
    assert second.term is not None and second.term > first.term
    assert NotifierStatus.objects.get(pk=1).leader == "second"

    # first wakes: its renewal under the old term matches nothing; it stands by.
    assert first._lead() is None
    assert first.term is None and not first.leading

    second_term = second.term
    second.release()  # a clean stop: a standby takes over at once
    assert first._lead() is not None and first.term is not None and first.term > second_term
    first.release()


def test_lease__a_tick_that_outlasts_the_lease_writes_nothing_more_then_keeps_its_term(
    make_outlet: MakeOutlet,
) -> None:
    dead, live = silent_outlet(make_outlet)
    notifier = Notifier(name="slow", lease=30, timeout=TIMEOUT)
    now = notifier._lead()
    assert now is not None and notifier.term is not None
    term = notifier.term
    lapse_lease()  # the tick was starved past its lease; nobody took it meanwhile
    with pytest.raises(LostLeadership):
        notifier._tick(now)
    assert Outlet.objects.get(pk=dead.pk).state == OutletState.ACTIVE
    notifier._fence_failed(term)
    assert notifier.term == term  # no other term can have written: it renews, no takeover
    assert notifier._lead() is not None and notifier.term == term
    notifier.release()


def test_lease__a_deleted_status_row_never_hands_out_a_term_twice() -> None:
    first = Notifier(name="first", lease=30)
    assert first._lead() is not None
    old = first.term
    NotifierStatus.objects.all().delete()
    second = Notifier(name="second", lease=30)
    assert second._lead() is not None and second.term is not None and old is not None
    assert second.term > old
    with pytest.raises(LostLeadership), transaction.atomic():
        leader_fence(term=old)
    second.release()


def test_tick__under_a_stale_term_changes_nothing_even_racing_a_takeover(
    make_outlet: MakeOutlet, settings: Any
) -> None:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    dead, live = silent_outlet(make_outlet)
    old = Notifier(name="old", lease=1, timeout=TIMEOUT)
    assert old._lead() is not None and old.term is not None
    old_term = old.term
    in_fence = threading.Event()
    go_on = threading.Event()

    def old_leader_mid_tick() -> Any:
        """The old leader is inside a fenced take-down when the standby tries to take over."""
        with transaction.atomic():
            leader_fence(term=old_term)
            in_fence.set()
            go_on.wait(20)
            fetch_all(sql.DATABASE_NOW, {})
            return "committed"

    writer = InThread(old_leader_mid_tick)
    writer.start()
    assert in_fence.wait(10)
    wait_for(lease_lapsed, timeout=10, message="the old leader's lease to lapse")
    new = Notifier(name="new", lease=30, timeout=TIMEOUT)
    taking = InThread(new._lead)
    taking.start()
    time.sleep(0.5)  # long enough for the takeover to reach the row lock and wait on it
    assert taking.is_alive(), "the takeover waits for the old leader's fenced transaction"
    go_on.set()
    writer.join(10)
    taking.join(10)
    assert writer.result == "committed" and taking.error is None and taking.result is not None
    assert new.term is not None and new.term > old_term

    before_events = OrderEvent.objects.order_by("-id").values_list("id", flat=True).first()
    before_orders = list(Order.objects.order_by("id").values_list("id", "outlet_id", "fence"))

    # The old leader wakes and runs a whole tick, while the new one's first ticks race it.
    stale = InThread(lambda: notifier_tick(may_declare_down=True, timeout=TIMEOUT, term=old_term))
    stale.start()
    stale.join(20)
    assert isinstance(stale.error, LostLeadership) and stale.error.term == old_term
    assert Outlet.objects.get(pk=dead.pk).state == OutletState.ACTIVE
    assert OrderEvent.objects.order_by("-id").values_list("id", flat=True).first() == before_events
    assert list(Order.objects.order_by("id").values_list("id", "outlet_id", "fence")) == (
        before_orders
    )
    with pytest.raises(LostLeadership):
        outlet_take_down(
            outlet_id=dead.pk,
            reason="test",
            silent_before=fetch_one(sql.DATABASE_NOW, {})["now"],  # type: ignore[index]
            timeout=TIMEOUT,
            term=old_term,
        )
    assert Outlet.objects.get(pk=dead.pk).state == OutletState.ACTIVE

    # The new term acts.
    report = notifier_tick(may_declare_down=True, timeout=TIMEOUT, term=new.term)
    assert report.down == ["dead"]
    assert Outlet.objects.get(pk=dead.pk).state == OutletState.DOWN
    new.release()


def test_tick__a_stale_term_racing_ticks_of_the_new_term__only_the_new_term_writes(
    make_outlet: MakeOutlet, settings: Any
) -> None:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    dead, live = silent_outlet(make_outlet)
    old = Notifier(name="old", lease=30, timeout=TIMEOUT)
    assert old._lead() is not None and old.term is not None
    old_term = old.term
    lapse_lease()
    new = Notifier(name="new", lease=30, timeout=TIMEOUT)
    start = threading.Barrier(2)

    def ticks(term: int) -> list[Any]:
        start.wait(10)
        outcomes: list[Any] = []
        for _ in range(5):
            try:
                outcomes.append(notifier_tick(may_declare_down=True, timeout=TIMEOUT, term=term))
            except LostLeadership as exc:
                outcomes.append(exc)
        return outcomes

    def new_leader_ticks() -> list[Any]:
        assert new._lead() is not None and new.term is not None
        return ticks(new.term)

    stale, fresh = InThread(lambda: ticks(old_term)), InThread(new_leader_ticks)
    stale.start()
    fresh.start()
    stale.join(30)
    fresh.join(30)
    assert stale.error is None and fresh.error is None, (stale.error, fresh.error)
    assert all(isinstance(o, LostLeadership) for o in stale.result)
    assert not any(isinstance(o, LostLeadership) for o in fresh.result)
    assert sum(len(r.down) for r in fresh.result) == 1
    assert Outlet.objects.get(pk=dead.pk).state == OutletState.DOWN
    assert (
        OrderEvent.objects.filter(
            order=None, outlet=dead, state="down", detail__action="down"
        ).count()
        == 1
    )  # (a new outlet is added "down" too: that event is not a take-down)
    new.release()


# A process that froze inside a take-down: it holds the leader's fence, the outlet-change
# lock and the outlet's row, then stops itself. Run with the project's own settings.
FROZEN_TAKE_DOWN = """
import os, signal, sys
import django
django.setup()
from django.db import transaction
from queueing import sql
from queueing.db import execute, fetch_all
from queueing.services.outlets import _outlet_locked

try:
    with transaction.atomic():
        # As a fence does (this process's term is stale: it need not match).
        fetch_all("SELECT id FROM queueing_notifierstatus WHERE id = 1 FOR SHARE", {})
        _outlet_locked(int(sys.argv[2]))
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        execute(sql.DATABASE_NOW, {})  # woken: PostgreSQL ended this session meanwhile
    print("committed", flush=True)
except Exception as exc:
    print(f"failed: {type(exc).__name__}", flush=True)
"""


def test_timeouts__a_process_frozen_inside_a_take_down_blocks_nobody_past_the_idle_timeout(
    make_outlet: MakeOutlet, settings: Any, tmp_path: Any
) -> None:
    idle = 2.0
    outlet = make_outlet("frozen")[0]
    outlet_heartbeat(outlet=outlet, source="test")
    old = Notifier(name="old", lease=30)
    assert old._lead() is not None and old.term is not None
    lapse_lease()
    log_path = tmp_path / "frozen.log"
    with open(log_path, "wb") as log:
        frozen = subprocess.Popen(
            [sys.executable, "-c", FROZEN_TAKE_DOWN, str(old.term), str(outlet.pk)],
            cwd=PROJECT_DIR,
            env=process_env(HEARTH_DB_IDLE_IN_TRANSACTION_TIMEOUT=str(idle)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "locked" in log_path.read_text(), timeout=30, message="the lock taken")
        wait_for(
            lambda: open(f"/proc/{frozen.pid}/stat").read().split()[2] == "T",
            timeout=10,
            message="the process frozen",
        )
        frozen_at = time.monotonic()
        placing = InThread(lambda: place("takeaway", outlet=Outlet.objects.get(pk=outlet.pk)))
        new = Notifier(name="new", lease=5)
        taking = InThread(new._lead)
        placing.start()
        taking.start()
        placing.join(idle + 8)
        taking.join(idle + 8)
        assert not placing.is_alive(), "order placement still blocked by the frozen process"
        assert not taking.is_alive(), "the next leader still blocked by the frozen process"
        assert placing.error is None and taking.error is None, (placing.error, taking.error)
        waited = time.monotonic() - frozen_at
        print(f"placement waited {placing.took:.2f}s, takeover {taking.took:.2f}s (idle {idle}s)")
        assert max(placing.took, taking.took) <= idle + 3
        assert new.term is not None and new.term > old.term
        assert waited <= idle + 8
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        try:
            frozen.wait(20)
        except subprocess.TimeoutExpired:
            frozen.kill()
            frozen.wait(5)
    output = log_path.read_text()
    assert "failed:" in output and "committed" not in output
    assert "idle_in_transaction_session_timeout fired" in output, output
