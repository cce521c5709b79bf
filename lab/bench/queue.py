"""python manage.py bench queue: Hearth's claim → complete beside Procrastinate, PGQueuer and pgbench -N.

Every system drains the same number of queued no-op jobs on its own fresh
database of the same server, in the same run. Hearth goes through its real
service functions (``order_claim_next``, ``order_complete``,
``orders_complete``), so each claim and each completion writes its order event
and wakes listeners (one NOTIFY per process per 20 ms window) exactly as in
production; only the loading of the queue is a
bulk insert, and it is not timed (the peers defer theirs in bulk too).
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TextIO

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone

from lab.bench.queue_peers import (
    Drained,
    Server,
    WaitSampler,
    pgbench_init,
    pgbench_tps,
    pgqueuer_drain,
    procrastinate_drain,
)
from lab.bench.report import write_section
from queueing.errors import StaleFence
from queueing.models import Order, OrderEvent, OrderKind, OrderState, Outlet
from queueing.services import order_claim_next, order_complete, orders_complete, outlet_create
from queueing.services.outlets import outlet_activate
from queueing.wake import waker

ORDERS = 20_000
QUICK_ORDERS = 2_000
OUTLETS = 10
WORKERS = 4
BATCH = 100
BATCH_WORKERS = (1, 4)  # one connection, as PGQueuer's one QueueManager; and four
COMMAND = "python manage.py bench queue"

# Each system's database on the server (HEARTH_BENCH_DB_PREFIX lets two people share a server).
DB_PREFIX_ENV = "HEARTH_BENCH_DB_PREFIX"


def _db_names() -> dict[str, str]:
    prefix = os.environ.get(DB_PREFIX_ENV, "bench_")
    return {s: f"{prefix}{s}" for s in ("hearth", "procrastinate", "pgqueuer", "pgbench")}


@dataclass
class HearthRun:
    """One timed Hearth drain and what it proved on the way."""

    mode: str
    workers: int
    batch: int
    orders: int
    seconds: float
    statements: int = 0
    refusals: list[str] = field(default_factory=list)
    waits: str = ""
    wakes: int = 0  # NOTIFYs this process sent during the drain

    @property
    def rate(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0


def hearth_load(*, orders: int, outlets: int = OUTLETS, prefix: str = "bench") -> list[Outlet]:
    """Queue ``orders`` orders round-robin over ``outlets`` outlets (a bulk insert, not timed)."""
    made = []
    for i in range(outlets):
        outlet = Outlet.objects.filter(slug=f"{prefix}-{i}").first()
        if outlet is None:
            outlet = outlet_create(slug=f"{prefix}-{i}", name=f"Bench {i}")[0]
            outlet_activate(outlet=outlet)  # vouched for: the bench has no agents to prove it
        made.append(outlet)
    start = timezone.now()
    lines = [{"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 0}]
    Order.objects.bulk_create(
        (
            Order(
                token=secrets.token_urlsafe(18),
                kind=OrderKind.DELIVERY,
                zone=f"Z{i % 50}",
                lines=lines,
                state=OrderState.QUEUED,
                outlet=made[i % outlets],
                sort_key=start + timedelta(microseconds=i),
                fence=1,  # as order_enqueue leaves it
            )
            for i in range(orders)
        ),
        batch_size=2_000,
    )
    return made


def _drive(workers: int, work: Callable[[int], int]) -> tuple[float, int]:
    """Run ``work(i)`` on ``workers`` threads, each on its own connection; (seconds, sum of results)."""
    gate = threading.Barrier(workers + 1)
    results = [0] * workers
    errors: list[BaseException] = []

    def station(i: int) -> None:
        try:
            connection.ensure_connection()  # connect before the clock starts
            gate.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: B036 - reported on the main thread
            errors.append(exc)
            gate.abort()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=station, args=(i,), name=f"bench-{i}") for i in range(workers)
    ]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds, sum(results)


def _next_outlet(outlets: list[Outlet], empty: set[int], k: int) -> tuple[Outlet | None, int]:
    for step in range(len(outlets)):
        outlet = outlets[(k + step) % len(outlets)]
        if outlet.pk not in empty:
            return outlet, k + step
    return None, k


def hearth_one_at_a_time(
    *, outlets: list[Outlet], orders: int, workers: int = WORKERS
) -> HearthRun:
    """``workers`` stations, each claiming one order per statement and completing it with its fence."""

    def work(i: int) -> int:
        station, empty, k, done = f"bench-{i}", set[int](), i, 0
        while True:
            outlet, k = _next_outlet(outlets, empty, k)
            if outlet is None:
                return done
            claimed = order_claim_next(outlet=outlet, station=station, limit=1)
            if not claimed:
                empty.add(outlet.pk)
                continue
            order_complete(token=claimed[0].token, fence=claimed[0].fence)
            done += 1
            k += 1  # stations move round the outlets, as a chain's worth of kitchens would

    seconds, done = _drive(workers, work)
    _check_done(done, orders)
    return HearthRun(
        "one at a time", workers, 1, done, seconds, statements=2 * done + workers * len(outlets)
    )


def hearth_batched(
    *, outlets: list[Outlet], orders: int, workers: int = 4, batch: int = BATCH
) -> HearthRun:
    """Claim up to ``batch`` in one statement, complete them in one; one deliberately stale fence."""
    refusals: list[str] = []
    statements = [0] * workers

    def work(i: int) -> int:
        station, empty, k, done = f"bench-{i}", set[int](), i, 0
        stale_left = i == 0
        while True:
            outlet, k = _next_outlet(outlets, empty, k)
            if outlet is None:
                return done
            claimed = order_claim_next(outlet=outlet, station=station, limit=batch)
            statements[i] += 1
            if not claimed:
                empty.add(outlet.pk)
                continue
            claims = [(t.token, t.fence) for t in claimed]
            if stale_left and len(claims) > 1:
                # A zombie's write: the fence before this claim. It must be refused, the rest complete.
                claims[0] = (claims[0][0], claims[0][1] - 1)
            completed, refused = orders_complete(claims=claims)
            statements[i] += 1
            if stale_left and len(claims) > 1:
                stale_left = False
                if len(completed) != len(claims) - 1 or [type(r) for r in refused] != [StaleFence]:
                    raise AssertionError(f"stale fence not refused alone: {refused!r}")
                refusals.append(refused[0].message)
                order_complete(token=claimed[0].token, fence=claimed[0].fence)  # the real holder
                statements[i] += 1
                completed.append(claimed[0])
            elif refused:
                raise AssertionError(f"fresh fences refused: {[r.message for r in refused]}")
            done += len(completed)
            k += 1

    seconds, done = _drive(workers, work)
    _check_done(done, orders)
    return HearthRun("batched", workers, batch, done, seconds, sum(statements), refusals)


def _check_done(done: int, orders: int) -> None:
    if done != orders:
        raise AssertionError(f"{done} orders completed, {orders} were queued")


def hearth_verify(*, orders: int) -> str:
    """Every order completed, claimed exactly once (fence 1 → 2), with its two events."""
    states = dict(Order.objects.values_list("state").annotate(n=Count("id")))
    fences = dict(Order.objects.values_list("fence").annotate(n=Count("id")))
    events = dict(
        OrderEvent.objects.filter(order__isnull=False).values_list("type").annotate(n=Count("id"))
    )
    expected = {"claimed": orders, "completed": orders}
    if states != {"completed": orders} or fences != {2: orders} or events != expected:
        raise AssertionError(f"after the drain: states {states}, fences {fences}, events {events}")
    return f"{orders:,} completed, each claimed once (fence 2), {2 * orders:,} events"


def hearth_bench(
    *,
    orders: int,
    outlets: int = OUTLETS,
    workers: int = WORKERS,
    batch: int = BATCH,
    batch_workers: tuple[int, ...] = BATCH_WORKERS,
    between: Callable[[], None] | None = None,
    watch: Callable[[], WaitSampler] | None = None,
    then: Callable[[], None] | None = None,
) -> tuple[HearthRun, list[HearthRun]]:
    """Hearth one at a time, then batched with each of ``batch_workers``, on the current database.

    The database must hold no orders. Each run drains its own freshly loaded queue.
    ``between`` runs after each load (the harness vacuums); ``watch`` samples wait events;
    ``then`` runs between the two modes (the harness measures the peers of the same
    concurrency there, so that what is compared runs side by side).
    """
    if Order.objects.exists():
        raise RuntimeError("the Hearth bench needs a database without orders")
    made: list[Outlet] = []

    def timed(drain: Callable[[list[Outlet]], HearthRun]) -> HearthRun:
        nonlocal made
        if Order.objects.exists():
            _clear_orders()
        made = hearth_load(orders=orders, outlets=outlets)
        if between:
            between()
        sent = waker.sent
        with watch() if watch else nullcontext() as waits:
            result = drain(made)
        result.waits = waits.summary() if waits else ""
        result.wakes = waker.sent - sent
        hearth_verify(orders=orders)
        return result

    one = timed(lambda o: hearth_one_at_a_time(outlets=o, orders=orders, workers=workers))
    if then:
        then()
    batched = [
        timed(functools.partial(_batched_on, orders=orders, workers=w, batch=batch))
        for w in batch_workers
    ]
    return one, batched


def _batched_on(outlets: list[Outlet], *, orders: int, workers: int, batch: int) -> HearthRun:
    return hearth_batched(outlets=outlets, orders=orders, workers=workers, batch=batch)


def _clear_orders() -> None:
    OrderEvent.objects.filter(order__isnull=False).delete()
    Order.objects.all().delete()


@contextmanager
def _django_database(name: str) -> Iterator[None]:
    """Point Django's default connection (every thread's) at ``name``, migrated; restore after.

    The same move Django's test runner makes for the test database.
    """
    connections.close_all()
    saved = settings.DATABASES["default"]["NAME"]
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield
    finally:
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = saved
        connections["default"].settings_dict["NAME"] = saved


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


@dataclass
class Figures:
    """One run's measurements, and the markdown that reports them."""

    orders: int
    tps: float
    tps_serial: float
    pgbench: str
    pgbench_serial: str
    one: HearthRun
    batched: list[HearthRun]
    procrastinate: Drained
    pgq_limited: Drained
    pgq_default: Drained
    settings: dict[str, str]
    verified: str
    load: str

    def table(self) -> str:
        one, tps = self.one, self.tps
        main = self.batched[-1]

        def share(rate: float, commits_per_order: float | None) -> str:
            if commits_per_order is None:
                return f"{rate / tps:.0%} (orders/s ÷ tps)"
            return f"{rate * commits_per_order / tps:.0%} ({commits_per_order:.3g} commits/order)"

        rows: list[tuple[str, str, float, str]] = [
            ("Hearth", f"one at a time, {one.workers} workers", one.rate, share(one.rate, 2)),
            *(
                (
                    "Hearth",
                    f"batched, N={b.batch}, {_workers(b.workers)}",
                    b.rate,
                    share(b.rate, b.statements / b.orders),
                )
                for b in self.batched
            ),
            (
                "Procrastinate",
                self.procrastinate.mode,
                self.procrastinate.rate,
                share(self.procrastinate.rate, None),
            ),
            (
                "PGQueuer",
                self.pgq_limited.mode,
                self.pgq_limited.rate,
                share(self.pgq_limited.rate, None),
            ),
            (
                "PGQueuer",
                self.pgq_default.mode,
                self.pgq_default.rate,
                share(self.pgq_default.rate, None),
            ),
            ("pgbench -N", "4 clients: the commit limit", tps, "100%"),
            (
                "pgbench -N",
                "1 client: commits one after another",
                self.tps_serial,
                f"{self.tps_serial / tps:.0%}",
            ),
        ]
        ratios = [
            (
                "Hearth one at a time ÷ Procrastinate (concurrency 4)",
                one.rate,
                self.procrastinate.rate,
                "≥ 2×",
            ),
            (
                "Hearth one at a time ÷ PGQueuer (≤4 in flight)",
                one.rate,
                self.pgq_limited.rate,
                "> 1×",
            ),
            *(
                (
                    f"Hearth batched, {_workers(b.workers)} ÷ PGQueuer (default batching)",
                    b.rate,
                    self.pgq_default.rate,
                    "> 1×",
                )
                for b in reversed(self.batched)
            ),
        ]
        lines = [
            f"{self.orders:,} queued orders/jobs per system; Hearth over {OUTLETS} outlets.",
            "",
            "| system | mode | orders/s | share of the commit limit |",
            "| --- | --- | ---: | --- |",
            *(f"| {s} | {m} | {r:,.0f} | {sh} |" for s, m, r, sh in rows),
            "",
            "| ratio | value | target |",
            "| --- | ---: | --- |",
            *(f"| {name} | {_ratio(a, b)} | {target} |" for name, a, b, target in ratios),
            "",
            f"- Hearth checks: {self.verified} (every run).",
            "- Where Hearth's backends waited (pg_stat_activity, sampled every 5 ms): "
            + "; ".join(
                f"{r.mode} ({_workers(r.workers)}): {r.waits}" for r in (one, *self.batched)
            )
            + ". Writers wake listeners with one empty NOTIFY per process per 20 ms window, "
            "outside the writing transaction (readers read the table in commit order): "
            "PostgreSQL holds an instance-wide lock (`Lock:object`) across the commit of any "
            "transaction that issued NOTIFY, so notifying inside the change would flush those "
            "commits one after another, never grouped.",
            f"- Stale fence in each batched run, refused while the rest of its batch completed: "
            f'"{main.refusals[0] if main.refusals else "NONE"}"',
            f"- Hearth: Django {_django_version()} + psycopg {_psycopg_version()}, one thread per "
            "worker with its own connection, autocommit (each claim and each completion its own "
            "commit), every change writes its order event in its statement; one NOTIFY per "
            f"process per window ({one.wakes:,} NOTIFYs for {2 * one.orders:,} changes one at "
            "a time); batched: "
            + ", ".join(
                f"{b.statements:,} statements with {_workers(b.workers)}" for b in self.batched
            )
            + " (the stale-fence retry included).",
            f"- Procrastinate: {self.procrastinate.config}.",
            f"- PGQueuer ≤4: {self.pgq_limited.config}.",
            f"- PGQueuer default: {self.pgq_default.config}.",
            f"- Commit limit: `{self.pgbench}` and `{self.pgbench_serial}` on their own database, scale 1.",
            "- Same server for all, settings untouched: "
            + ", ".join(f"{k}={v}" for k, v in self.settings.items())
            + ".",
            f"- Machine: {self.load}.",
            "- Share of the commit limit: commits per second ÷ pgbench tps where the commits per "
            "order are known (Hearth: each statement commits); for the peers, orders/s ÷ tps.",
        ]
        return "\n".join(lines)


def _django_version() -> str:
    import django

    return django.get_version()


def _psycopg_version() -> str:
    import psycopg

    return psycopg.__version__


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def run(*, stdout: TextIO, quick: bool = False) -> Figures:
    """Measure every system in one run, print the table, and keep it in docs/benchmarks.md."""
    orders = QUICK_ORDERS if quick else ORDERS
    names = _db_names()
    server = Server.from_django(settings.DATABASES["default"])

    def say(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    load_before = _load()
    say(
        f"bench queue: {orders:,} orders per system on {server.host or 'local'}:{server.port or '5432'}\n"
    )
    server_settings = server.settings()
    pgbench_init(server, names["pgbench"])
    tps, pgbench = pgbench_tps(server, names["pgbench"], clients=4, seconds=3 if quick else 10)
    tps_serial, pgbench_serial = pgbench_tps(
        server, names["pgbench"], clients=1, seconds=2 if quick else 5
    )
    say(f"  pgbench -N: {tps:,.0f} tps with 4 clients, {tps_serial:,.0f} with 1\n")

    server.recreate_database(names["hearth"])
    peers: dict[str, Drained] = {}

    def same_concurrency_peers() -> None:
        # Right after Hearth one at a time: the runs compared with each other are adjacent.
        say("  Hearth one at a time: done\n")
        peers["procrastinate"] = procrastinate_drain(
            server, names["procrastinate"], jobs=orders, concurrency=4
        )
        say(f"  Procrastinate: {peers['procrastinate'].rate:,.0f} jobs/s\n")
        peers["limited"] = pgqueuer_drain(server, names["pgqueuer"], jobs=orders, in_flight=4)
        say(f"  PGQueuer ≤4 in flight: {peers['limited'].rate:,.0f} jobs/s\n")

    with _django_database(names["hearth"]):
        one, batched = hearth_bench(
            orders=orders,
            between=lambda: server.vacuum_analyze(names["hearth"]),
            watch=lambda: WaitSampler(server, names["hearth"]),
            then=same_concurrency_peers,
        )
        verified = hearth_verify(orders=orders)
    say(f"  Hearth one at a time: {one.rate:,.0f} orders/s\n")
    for b in batched:
        say(f"  Hearth batched (N={b.batch}, {_workers(b.workers)}): {b.rate:,.0f} orders/s\n")
    procrastinate, pgq_limited = peers["procrastinate"], peers["limited"]
    pgq_default = pgqueuer_drain(server, names["pgqueuer"], jobs=orders, in_flight=None)
    say(f"  PGQueuer default: {pgq_default.rate:,.0f} jobs/s\n")

    figures = Figures(
        orders=orders,
        tps=tps,
        tps_serial=tps_serial,
        pgbench=pgbench,
        pgbench_serial=pgbench_serial,
        one=one,
        batched=batched,
        procrastinate=procrastinate,
        pgq_limited=pgq_limited,
        pgq_default=pgq_default,
        settings=server_settings,
        verified=verified,
        load=f"load average (1/5 min) {load_before} before the run, {_load()} after; "
        f"{os.cpu_count()} cores",
    )
    table = figures.table()
    say("\n" + table + "\n")
    if quick:
        say("\n(--quick: figures not written to docs/benchmarks.md)\n")
    else:
        path = write_section("queue", table, command=COMMAND)
        say(f"\nwritten to {path}\n")
    return figures
