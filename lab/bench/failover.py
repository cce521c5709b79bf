"""python manage.py bench failover: one outlet of ten dies with 10,000 open orders.

On its own database (``bench_failover`` by default), ten outlets of mixed
capacity weights heartbeat; the survivors hold open orders in proportion to
their weights and the victim holds 10,000. A real notifier runs as its own
process, as in production. The victim stops heartbeating; we measure, on the
database clock:

- detection: from the victim's last heartbeat to the start of the transaction
  that takes it down (target: within the timeout plus one tick);
- reroute: from that start to the commit that moved its last order (target:
  under 2 s for 10,000 orders);

then, from the same kind of load rerouted directly, the spread with bounded
loads and without: the largest survivor's share of the moved orders divided by
its fair, capacity-weighted share (target ≤ 1.25 bounded), and the number of
survivors' orders that changed outlet (must be 0).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from lab.bench.queue import _django_database
from lab.bench.queue_peers import Server
from lab.bench.report import write_section
from queueing.models import (
    NotifierStatus,
    Order,
    OrderEvent,
    OrderKind,
    OrderState,
    Outlet,
    OutletState,
)
from queueing.services import outlet_create, outlet_heartbeat
from queueing.services.outlets import outlet_activate
from queueing.services.routing import outlets_reroute

COMMAND = "python manage.py bench failover"
DB_ENV = "HEARTH_BENCH_FAILOVER_DB"
WEIGHTS = (1, 1, 2, 1, 3, 1, 2, 1, 1, 1)  # the victim is the first
ORDERS = 10_000
QUICK_ORDERS = 2_000
SURVIVOR_ORDERS_PER_WEIGHT = 100
ZONES = 200
MANAGE = Path(__file__).resolve().parent.parent.parent / "manage.py"


@dataclass
class Failover:
    orders: int
    timeout: float
    tick: float
    detection: float
    reroute: float
    moved: int


@dataclass
class Spread:
    bounded: bool
    seconds: float
    moved: int
    worst: str
    ratio: float
    survivors_changed: int


def _load(outlets: list[Outlet], *, victim_orders: int) -> None:
    """Bulk-load open orders: the victim's, and the survivors' in proportion to their weights."""
    Order.objects.all().delete()
    start = timezone.now()
    lines = [{"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 0}]
    plan = [(outlets[0], victim_orders)] + [
        (o, SURVIVOR_ORDERS_PER_WEIGHT * o.weight) for o in outlets[1:]
    ]
    rows = []
    n = 0
    for outlet, count in plan:
        for _ in range(count):
            n += 1
            rows.append(
                Order(
                    token=secrets.token_urlsafe(18),
                    kind=OrderKind.DELIVERY,
                    zone=f"Z{n % ZONES}",
                    lines=lines,
                    state=OrderState.QUEUED if n % 10 else OrderState.PREPARING,
                    outlet=outlet,
                    sort_key=start + timedelta(microseconds=n),
                    fence=1,
                )
            )
    Order.objects.bulk_create(rows, batch_size=2_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queueing_order")


def _outlets() -> list[Outlet]:
    made = []
    for i, weight in enumerate(WEIGHTS):
        outlet = outlet_create(slug=f"outlet-{i}", name=f"Outlet {i}", weight=weight)[0]
        outlet_activate(outlet=outlet)  # vouched for: the bench heartbeats for them itself
        made.append(outlet)
    return made


def _survivor_snapshot(outlets: list[Outlet]) -> dict[int, int | None]:
    return dict(Order.objects.filter(outlet__in=outlets[1:]).values_list("id", "outlet_id"))


def _spread_of(outlets: list[Outlet], moved_to: Counter[int | None]) -> tuple[str, float]:
    survivors = outlets[1:]
    total_weight = sum(o.weight for o in survivors)
    moved = sum(moved_to.values())
    worst, ratio = "", 0.0
    for outlet in survivors:
        fair = moved * outlet.weight / total_weight
        r = moved_to.get(outlet.pk, 0) / fair if fair else 0.0
        if r > ratio:
            worst, ratio = outlet.slug, r
    return worst, ratio


def measure_failover(
    outlets: list[Outlet], *, orders: int, timeout: float, tick: float, conninfo: str
) -> Failover:
    """A real notifier process; the victim stops heartbeating once the notifier's grace is over."""
    _load(outlets, victim_orders=orders)
    victim = outlets[0]
    interval = min(timeout / 3, 1.0)
    silent: set[int] = set()
    stop = threading.Event()
    last_beat: dict[int, datetime] = {}

    def heartbeats() -> None:
        try:
            while not stop.is_set():
                for outlet in outlets:
                    if outlet.pk not in silent:
                        row = outlet_heartbeat(outlet=outlet, source="bench", timeout=timeout)
                        last_beat[outlet.pk] = row["last_heartbeat_at"]
                stop.wait(interval)
        finally:
            connection.close()

    beater = threading.Thread(target=heartbeats, daemon=True)
    beater.start()
    log = tempfile.TemporaryFile()
    notifier = subprocess.Popen(
        [sys.executable, str(MANAGE), "notifier", "--name", "bench"]
        + ["--tick", str(tick), "--timeout", str(timeout)],
        env={**os.environ, "DATABASE_URL": conninfo},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not NotifierStatus.objects.filter(pk=1, leader="bench").exists():
            if notifier.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"the notifier did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.1)
        # Let the notifier's grace pass, so what we time is detection, not the grace.
        time.sleep(timeout + 2 * tick)
        silent.add(victim.pk)
        time.sleep(interval)  # a heartbeat in flight lands before we read the last one
        last = last_beat[victim.pk]
        with psycopg.connect(conninfo, autocommit=True) as watch:
            deadline = time.monotonic() + timeout * 3 + 30
            while True:
                # The bench's own probe: when did the take-down's commit become visible?
                row = watch.execute(
                    "SELECT state, clock_timestamp() FROM queueing_outlet WHERE id = %s",
                    [victim.pk],
                ).fetchone()
                assert row is not None
                state, committed = row
                if state == OutletState.DOWN:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the notifier never declared the silent outlet down")
                time.sleep(0.002)
    finally:
        notifier.terminate()
        notifier.wait(30)
        log.close()
        stop.set()
        beater.join(30)
    down_at = (
        OrderEvent.objects.filter(order=None, outlet=victim, state=OutletState.DOWN)
        .values_list("at", flat=True)
        .get()
    )
    moved = OrderEvent.objects.filter(from_outlet=victim).count()
    return Failover(
        orders=orders,
        timeout=timeout,
        tick=tick,
        detection=(down_at - last).total_seconds(),
        reroute=(committed - down_at).total_seconds(),
        moved=moved,
    )


def measure_spread(outlets: list[Outlet], *, orders: int, bounded: bool) -> Spread:
    """Reroute the victim's orders directly (as the take-down does) and see where they went."""
    _load(outlets, victim_orders=orders)
    victim = outlets[0]
    Outlet.objects.filter(pk__in=[o.pk for o in outlets]).update(state=OutletState.ACTIVE)
    Outlet.objects.filter(pk=victim.pk).update(state=OutletState.DOWN)
    before = _survivor_snapshot(outlets)
    started = time.perf_counter()
    moved, _ = outlets_reroute(outlet_ids=[victim.pk], reason="bench", bounded=bounded)
    seconds = time.perf_counter() - started
    after = dict(Order.objects.filter(id__in=before).values_list("id", "outlet_id"))
    changed = sum(1 for pk, outlet in before.items() if after.get(pk) != outlet)
    worst, ratio = _spread_of(outlets, Counter(t.outlet_id for t in moved))
    return Spread(
        bounded=bounded,
        seconds=seconds,
        moved=len(moved),
        worst=worst,
        ratio=ratio,
        survivors_changed=changed,
    )


def _table(failover: Failover, spreads: list[Spread], *, load: str) -> str:
    weights = ", ".join(str(w) for w in WEIGHTS[1:])
    survivors = sum(SURVIVOR_ORDERS_PER_WEIGHT * w for w in WEIGHTS[1:])
    lines = [
        f"10 outlets (weights {WEIGHTS[0]} for the victim; {weights} for the survivors); "
        f"the victim holds {failover.orders:,} open delivery orders (a tenth of them being "
        f"prepared), the survivors {survivors:,} in proportion to their weights; {ZONES} zones. "
        f"Load average of the machine during the run: {load} (other work shares its cores).",
        "",
        "| measure | figure | target |",
        "| --- | --- | --- |",
        f"| detection: last heartbeat → take-down starts | {failover.detection:.2f} s | "
        f"≤ {failover.timeout + failover.tick:g} s (timeout {failover.timeout:g} s + tick "
        f"{failover.tick:g} s) |",
        f"| reroute: take-down starts → last order moved (commit) | {failover.reroute:.2f} s "
        f"({failover.moved:,} orders) | < 2 s for 10,000 |",
    ]
    for s in spreads:
        label = "bounded loads (ε = 0.25)" if s.bounded else "plain consistent hashing"
        target = "≤ 1.25" if s.bounded else "–"
        lines.append(
            f"| spread, {label}: largest survivor's share ÷ fair share | {s.ratio:.3f} "
            f"({s.worst}; reroute {s.seconds:.2f} s) | {target} |"
        )
    changed = max(s.survivors_changed for s in spreads)
    lines.append(f"| survivors' orders that changed outlet | {changed} | 0 |")
    return "\n".join(lines)


def run(*, stdout: TextIO, quick: bool = False) -> tuple[Failover, list[Spread]]:
    """Measure, print the table, and keep it in docs/benchmarks.md (not with --quick)."""
    orders = QUICK_ORDERS if quick else ORDERS
    timeout = 3.0 if quick else float(settings.HEARTH_HEARTBEAT_TIMEOUT)
    tick = 0.25 if quick else float(settings.HEARTH_NOTIFIER_TICK)
    name = os.environ.get(DB_ENV, "bench_failover")
    server = Server.from_django(settings.DATABASES["default"])

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    say(f"bench failover: {orders:,} orders on the victim, database {name}")
    server.recreate_database(name)
    load_before = os.getloadavg()[0]
    try:
        with _django_database(name):
            outlets = _outlets()
            failover = measure_failover(
                outlets, orders=orders, timeout=timeout, tick=tick, conninfo=server.conninfo(name)
            )
            say(
                f"  detection {failover.detection:.2f} s, reroute {failover.reroute:.2f} s "
                f"({failover.moved:,} orders)"
            )
            spreads = []
            for bounded in (True, False):
                spread = measure_spread(outlets, orders=orders, bounded=bounded)
                spreads.append(spread)
                say(
                    f"  {'bounded' if bounded else 'unbounded'}: spread {spread.ratio:.3f} "
                    f"({spread.worst}), reroute {spread.seconds:.2f} s, "
                    f"survivors changed {spread.survivors_changed}"
                )
    finally:
        server.drop_database(name)
    table = _table(failover, spreads, load=f"{load_before:.1f} → {os.getloadavg()[0]:.1f}")
    say("\n" + table)
    if quick:
        say("\n(--quick: figures not written to docs/benchmarks.md)")
    else:
        say(f"\nwritten to {write_section('failover', table, command=COMMAND)}")
    return failover, spreads
