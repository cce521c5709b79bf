"""python manage.py bench scale: a chain's worth of outlets, kitchens and customers at stepped rates.

On its own database (``bench_scale``), ``up``'s web processes (one per core, one
shared listening socket) serve everything at once:

- a fleet of outlets (``bench idle``'s ``Fleet``, in a child process of its own):
  every outlet heartbeats and each of its two stations parks ``claim?wait=`` (the agent's wait); a
  station that gets an order marks it ready and completes it at once, so the
  outlets that receive orders work and the rest stay idle;
- ``bench sockets``' crowd (this process): kitchen sockets signed in as staff,
  spread over the working outlets, and customer sockets, each following an order
  (a new order's customer replaces the oldest whose order is done); the
  customers place orders through the API, half takeaway at the working outlets,
  half delivery by zone (routed over every outlet).

First the whole fleet and every socket sit idle for a window (what standing by
costs), then orders are placed at stepped rates. For each step: orders/s asked
and placed, web CPU (the web processes), database CPU (the backends of the bench
database, from ``/proc``: PostgreSQL runs on this machine), this client's CPU,
API p99 (the order POST, client side), commit → screen p99 (every event streamed
to a socket, from its ``at``), events lost (the table against what each socket
got) and the load average. The full run stops at a step that loses an event or
whose rate is not reached, and at the second step in a row over 250 ms (API or
screen p99) if a p99 rose from the first: one step past the bend, to show it.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from lab.bench.harness import (
    bench_database,
    cpu_seconds,
    ms,
    postmaster_pid,
    quantile,
    raise_open_files,
    server_cpu_seconds,
)
from lab.bench.idle import CLAIM_WAIT, STATIONS, Fleet, seed_outlets
from lab.bench.report import BENCHMARKS_MD, write_section
from lab.bench.sockets import (
    DB_PREFIX_ENV,
    IN_FLIGHT,
    P99_LIMIT,
    Crowd,
    Phase,
    Seed,
    _last_event_id,
    done_orders,
    staff_cookie,
)
from lab.bench.web import web_processes
from queueing.models import Outlet

COMMAND = "python manage.py bench scale"
DOCS_DIR = BENCHMARKS_MD.parent
PLOTS = ("latency", "cpu")  # docs/bench-scale-<name>.png
FLEET_READY_TIMEOUT = 180.0  # seconds for every station to park its first claim
# e.g. HEARTH_BENCH_SCALE_MINUTES=20: no new step starts after 20 minutes of steps.
MINUTES_ENV = "HEARTH_BENCH_SCALE_MINUTES"


@dataclass(frozen=True)
class Plan:
    outlets: int
    working: int  # the first ``working`` outlets take the takeaway orders and the kitchen sockets
    kitchens: int
    customers: int
    rates: tuple[float, ...]  # orders/s asked, step by step
    seconds: float  # per step
    idle_seconds: float  # the window with everything connected and no orders
    stop_when_over: bool  # stop at the first step that does not hold
    # Seconds over which the stations first claim: one whole wait, so they re-park spread
    # out as a fleet started over a day (the quick run: a few seconds, it checks the bench).
    spread: float = CLAIM_WAIT


FULL = Plan(
    outlets=1000,
    working=100,
    kitchens=200,
    customers=5000,
    rates=(5, 10, 20, 40, 80, 160),
    seconds=30,
    idle_seconds=20,
    stop_when_over=True,
)
# Both steps run whatever they measure: the quick run checks the bench, not the machine.
QUICK = Plan(
    outlets=50,
    working=10,
    kitchens=20,
    customers=200,
    rates=(5, 10),
    seconds=5,
    idle_seconds=3,
    stop_when_over=False,
    spread=5,
)


@dataclass
class Step(Phase):
    db_cpu: float = 0.0  # cores the bench database's backends used over the step
    server_cpu: float = 0.0  # cores the whole PostgreSQL server used (harness.server_cpu_seconds)
    client_cpu: float = 0.0  # cores this process (the sockets) and the fleet's process used
    fleet_cpu: float = 0.0  # of which the fleet's
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # socket kind -> latencies

    @property
    def api_p99(self) -> float:
        return quantile(self.api_latencies, 0.99)

    @property
    def holds(self) -> bool:
        """Rate reached, nothing lost or refused, and both p99s under the limit."""
        return self.passed and self.api_p99 < P99_LIMIT


@dataclass
class Result:
    plan: Plan
    web_processes: int
    idle: Step | None = None
    steps: list[Step] = field(default_factory=list)
    fleet: dict[str, Any] | None = None  # requests, errors, error kinds, claims; None: running
    most_open: int = 0  # customer sockets open at once, at most
    loop_lag_p99: float = math.nan
    load_before: float = 0.0
    stopped: str = ""  # why the steps stopped before the plan's last, if they did
    report: str = ""
    plots: list[Path] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        holding = [s for s in self.steps if s.holds]
        return max(holding, key=lambda s: s.rate) if holding else None


# --- The database's CPU ------------------------------------------------------------


class DatabaseCpu:
    """CPU of the PostgreSQL backends serving one database, read from /proc (same machine)."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.conninfo = conninfo
        self.name = name
        self.postmaster = postmaster_pid(conninfo)

    def sample(self) -> dict[int, float]:
        """pid -> CPU seconds so far, for every backend connected to the database now."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.name],
                )
            ]
        return {pid: cpu_seconds(pid) for pid in pids}

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two samples; a backend that connected in between counts from 0."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# --- The fleet, in a process of its own ----------------------------------------------


async def _fleet(
    base: str, outlets: dict[str, str], spread: float, parked: Any, stop: Any, report: Connection
) -> None:
    # A fleet started in one burst re-parks in one burst every CLAIM_WAIT seconds, where
    # agents started over a day would not: the plan's spread is one whole wait.
    fleet = Fleet(base=base, outlets=outlets, mode="waiting", spread=spread)
    fleet.start()
    try:
        while fleet.first_claims < len(outlets) * STATIONS:
            await asyncio.sleep(0.2)
        parked.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
    finally:
        report.send(
            {
                "requests": fleet.requests,
                "errors": fleet.errors,
                "error_kinds": dict(fleet.error_kinds),
                "claimed": len(fleet.claimed),
            }
        )
        await fleet.close()


def _fleet_main(
    base: str, outlets: dict[str, str], spread: float, parked: Any, stop: Any, report: Connection
) -> None:
    os.setpgrp()  # a Ctrl-C at the terminal stops the steps, not the fleet under them
    asyncio.run(_fleet(base, outlets, spread, parked, stop, report))


class FleetProcess:
    """The outlets' agents, forked so that their event loop does not delay the sockets'."""

    def __init__(self, base: str, outlets: dict[str, str], *, spread: float) -> None:
        context = multiprocessing.get_context("fork")
        self.parked, self.stop_event = context.Event(), context.Event()
        self._receive, send = context.Pipe(duplex=False)
        connections.close_all()  # the child must not share this process's database connections
        self.process = context.Process(
            target=_fleet_main,
            args=(base, outlets, spread, self.parked, self.stop_event, send),
            daemon=True,
        )
        self.process.start()
        send.close()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def wait_parked(self, timeout: float) -> bool:
        return bool(self.parked.wait(timeout))

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        figures: dict[str, Any] = {}
        try:
            if self._receive.poll(30):
                figures = self._receive.recv()
        except (EOFError, OSError):
            pass  # the fleet died; the report says it has no figures
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        return figures


# --- The steps -------------------------------------------------------------------------


async def _measured(
    step: Step,
    work: Callable[[], Awaitable[None]],
    *,
    crowd: Crowd,
    database: DatabaseCpu,
    client_pids: list[int],
    fleet_pid: int,
) -> None:
    """Run ``work`` and charge the web, database and client CPU it took to ``step``."""
    db_before = await asyncio.to_thread(database.sample)
    web_before = sum(cpu_seconds(p) for p in crowd.web_pids)
    client_before = sum(cpu_seconds(p) for p in client_pids)
    fleet_before = cpu_seconds(fleet_pid)
    server_before = server_cpu_seconds(database.postmaster)
    start = time.monotonic()
    await work()
    elapsed = time.monotonic() - start
    db_after = await asyncio.to_thread(database.sample)
    step.web_cpu = (sum(cpu_seconds(p) for p in crowd.web_pids) - web_before) / elapsed
    step.client_cpu = (sum(cpu_seconds(p) for p in client_pids) - client_before) / elapsed
    step.fleet_cpu = (cpu_seconds(fleet_pid) - fleet_before) / elapsed
    step.db_cpu = DatabaseCpu.used(db_before, db_after) / elapsed
    step.server_cpu = (server_cpu_seconds(database.postmaster) - server_before) / elapsed
    step.load = os.getloadavg()[0]
    for follower in crowd.followers:
        for event_id, latency, _type in follower.timed:
            if step.first_id < event_id <= step.last_id:
                step.by_kind.setdefault(follower.kind, []).append(latency)


def _past_the_bend(step: Step, before: list[Step]) -> bool:
    """Stop here: the rate was not reached (more would only queue in this client), an event
    was lost (a fault), or a p99 is over the limit and rising from a step already over it.

    A p99 over the limit that falls at the next rate is a stall, not saturation: the
    steps go on so that the curves show where they bend.
    """
    if not step.reached or step.lost:
        return True
    if step.holds or not before or before[0].holds:
        return False
    previous = before[0]
    return step.api_p99 >= previous.api_p99 or step.quantile(0.99) >= previous.quantile(0.99)


async def _run_steps(
    *,
    base: str,
    seed: Seed,
    plan: Plan,
    web_pids: list[int],
    database: DatabaseCpu,
    fleet_pid: int,
    result: Result,
    stdout: TextIO,
    after_step: Callable[[], None],
) -> None:
    crowd = Crowd(base=base, seed=seed, plan=plan, web_pids=web_pids)
    clients = [os.getpid(), fleet_pid]
    stop = asyncio.Event()
    watcher = asyncio.create_task(crowd.watch_loop_lag(stop))
    # SIGINT or SIGTERM: the step under way finishes and is reported; no new one starts.
    halt = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, halt.set)
    minutes = float(os.environ.get(MINUTES_ENV) or "inf")
    try:
        started = time.monotonic()
        await crowd.gather()
        stdout.write(
            f"  {len(crowd.kitchens)} kitchen + {crowd.open_customers} customer sockets open "
            f"in {time.monotonic() - started:.1f}s\n"
        )
        idle = Step(rate=0, seconds=plan.idle_seconds)
        await _measured(
            idle,
            lambda: asyncio.sleep(plan.idle_seconds),
            crowd=crowd,
            database=database,
            client_pids=clients,
            fleet_pid=fleet_pid,
        )
        result.idle = idle
        stdout.write(f"  {_idle_line(idle)}\n")
        steps_start = time.monotonic()
        for rate in plan.rates:
            if halt.is_set():
                result.stopped = f"stopped by a signal before the {rate:g}/s step"
                break
            if time.monotonic() - steps_start > 60 * minutes:
                result.stopped = f"{MINUTES_ENV}={minutes:g} reached before the {rate:g}/s step"
                break
            step = Step(rate=rate, seconds=plan.seconds)
            await _measured(
                step,
                lambda: crowd.run_phase(step),  # noqa: B023 (awaited before the loop moves on)
                crowd=crowd,
                database=database,
                client_pids=clients,
                fleet_pid=fleet_pid,
            )
            result.steps.append(step)
            result.most_open = crowd.most_open
            result.loop_lag_p99 = quantile(crowd.lag, 0.99)
            stdout.write(f"  {_step_line(step)}\n")
            stdout.flush()
            after_step()  # a run stopped half-way keeps the steps it measured
            if plan.stop_when_over and _past_the_bend(step, result.steps[-2:-1]):
                break
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stop.set()
        await watcher
        await crowd.disperse()


def run(*, stdout: TextIO, quick: bool = False) -> Result:
    """Measure; print every step. The full run writes docs/benchmarks.md and its plots to docs/."""
    plan = QUICK if quick else FULL
    files = raise_open_files()
    name = os.environ.get(DB_PREFIX_ENV, "bench_") + "scale"
    logs = Path(tempfile.mkdtemp(prefix="hearth-bench-scale-"))
    out_dir = logs if quick else DOCS_DIR
    processes = settings.HEARTH_WEB_PROCESSES
    result = Result(plan=plan, web_processes=processes, load_before=os.getloadavg()[0])
    command = COMMAND + (" --quick" if quick else "")
    stdout.write(
        f"bench scale{' --quick' if quick else ''}: {plan.outlets} outlets ({plan.working} take "
        f"takeaway orders), {plan.kitchens} kitchen + {plan.customers} customer sockets, "
        f"{processes} web processes, database {name}, open-file limit {files}, logs in {logs}\n"
    )

    def after_step() -> None:
        result.report = _report(result)
        result.plots = _plot(result, out_dir)
        if not quick:
            write_section("scale", result.report, command=command)

    with bench_database(name) as conninfo:
        call_command("loaddata", "sample_menu", verbosity=0)
        started = time.monotonic()
        outlets = seed_outlets(plan.outlets, {})
        working = dict(list(outlets.items())[: plan.working])
        made = list(Outlet.objects.filter(slug__in=working).order_by("slug"))
        seed = Seed(
            outlets=working,
            cookie=staff_cookie(),
            done_tokens=done_orders(made, plan.customers),
            last_event_id=_last_event_id(),
        )
        stdout.write(f"  seeded in {time.monotonic() - started:.1f}s\n")
        database = DatabaseCpu(conninfo, name)
        with web_processes(processes, database=name, fast=True, log_dir=logs) as (base, pids):
            fleet = FleetProcess(base, outlets, spread=plan.spread)
            try:
                started = time.monotonic()
                if not fleet.wait_parked(FLEET_READY_TIMEOUT):
                    raise RuntimeError(
                        f"the fleet's stations did not all park in {FLEET_READY_TIMEOUT:g}s"
                    )
                stdout.write(
                    f"  {plan.outlets * STATIONS} stations parked in "
                    f"{time.monotonic() - started:.1f}s\n"
                )
                asyncio.run(
                    _run_steps(
                        base=base.replace("http://", "ws://") + "/",
                        seed=seed,
                        plan=plan,
                        web_pids=pids,
                        database=database,
                        fleet_pid=fleet.pid,
                        result=result,
                        stdout=stdout,
                        after_step=after_step,
                    )
                )
            finally:
                result.fleet = fleet.stop()
    after_step()
    stdout.write(result.report + "\n")
    where = "" if quick else f"{BENCHMARKS_MD} and "
    stdout.write(f"written to {where}{', '.join(str(p) for p in result.plots)}\n")
    return result


# --- What it prints and writes ------------------------------------------------------


def _pct(cores: float) -> str:
    return f"{100 * cores:.0f} %"


def _clients(s: Step) -> str:
    return f"{_pct(s.client_cpu)} (fleet {_pct(s.fleet_cpu)})"


def _idle_line(s: Step) -> str:
    return (
        f"idle for {s.seconds:g}s: web {_pct(s.web_cpu)}, database {_pct(s.db_cpu)}, "
        f"client {_pct(s.client_cpu)} of a core; load {s.load:.1f}"
    )


def _step_line(s: Step) -> str:
    return (
        f"{s.rate:g}/s asked for {s.seconds:g}s: placed {s.placed} ({s.achieved:.1f}/s, "
        f"{s.failed} failed); web {_pct(s.web_cpu)}, database {_pct(s.db_cpu)}, client "
        f"{_pct(s.client_cpu)} of a core; API p50 {ms(quantile(s.api_latencies, 0.5))} p99 "
        f"{ms(s.api_p99)}; commit → screen p50 {ms(s.quantile(0.5))} p99 {ms(s.quantile(0.99))} "
        f"({len(s.latencies)} messages); lost {s.lost} of {s.expected}; drained in "
        f"{s.drain_seconds:.0f}s; load {s.load:.1f} → "
        f"{'holds' if s.holds else 'over'}"
    )


def _report(result: Result) -> str:
    plan, steps, idle = result.plan, result.steps, result.idle
    quick = plan is QUICK
    n = result.web_processes
    rows = []
    if idle is not None:
        rows.append(
            f"| 0 (idle, {idle.seconds:g} s) | – | {_pct(idle.web_cpu)} | {_pct(idle.db_cpu)} "
            f"| {_pct(idle.server_cpu)} | {_clients(idle)} | – | – | – | – | – "
            f"| {idle.load:.1f} | – |"
        )
    for s in steps:
        rows.append(
            f"| {s.rate:g} | {s.placed} ({s.achieved:.1f}/s) | {_pct(s.web_cpu)} "
            f"| {_pct(s.db_cpu)} | {_pct(s.server_cpu)} | {_clients(s)} "
            f"| {ms(quantile(s.api_latencies, 0.5))} / {ms(s.api_p99)} "
            f"| {ms(s.quantile(0.5))} / {ms(s.quantile(0.99))} "
            f"| {ms(quantile(s.by_kind.get('customer', []), 0.99))} "
            f"| {ms(quantile(s.by_kind.get('kitchen', []), 0.99))} "
            f"| {s.lost} of {s.expected} | {s.load:.1f} | {'yes' if s.holds else 'no'} |"
        )
    best = result.best
    # The step after the best: the first that did not hold (the steps may have gone on past it).
    later = [s for s in steps if best is None or s.rate > best.rate]
    last = later[0] if later else None
    lost = sum(s.lost for s in steps)
    fleet = result.fleet
    fleet_line = (
        f"{fleet['requests']} requests (heartbeats, claims, ready, complete), "
        f"{fleet['claimed']} orders claimed, {fleet['errors']} errors"
        f"{' ' + str(fleet['error_kinds']) if fleet.get('error_kinds') else ''}"
        if fleet
        else "still running when this was written"
        if fleet is None
        else "no figures: its process died before it could report them"
    )
    failures = {k: v for s in steps for k, v in s.failures.items()}
    plots = "\n".join(f"![{what} against the rate asked](bench-scale-{what}.png)" for what in PLOTS)
    return f"""{"A quick run (`--quick`): a check that the bench works, not a measurement." if quick else ""}

{plan.outlets} outlets with {STATIONS} stations each, simulated by one client process (`bench
idle`'s fleet): every outlet heartbeats every {settings.HEARTH_HEARTBEAT_INTERVAL:g} s and each
station parks `claim?wait={CLAIM_WAIT:g}`; a station that gets an order marks it ready and completes it at
once. {plan.kitchens} kitchen sockets (staff sessions) spread over the first {plan.working}
outlets; {plan.customers} customer sockets (`bench sockets`' crowd: each new order's customer
replaces the oldest whose order is done; at most {result.most_open} open at once) in a second
client process, which places the orders through `POST /api/orders` (at most {IN_FLIGHT} on the
wire), half takeaway at the first {plan.working} outlets, half delivery by zone over all of them.
{n} web processes (`up`'s default, one per core, one shared listening socket) serve the API,
the agents and every socket; PostgreSQL runs on the same {os.cpu_count()} cores, shared with
anything else running (the load is the 1-minute load average at the end of each step).

Web CPU is the web processes' user + system time, database CPU that of the backends connected
to the bench database (`pg_stat_activity.pid` at the start and end of the step, from `/proc`),
"all PostgreSQL" that of the whole server (its postmaster, every process it has running or has
reaped: background writers, autovacuum and other databases' work included, not other servers),
client CPU that of the two client processes (the fleet's in brackets), each as a share of one core over the
step (placing, then draining: until every order is completed and every socket has what the
table says it should). API is the order POST, sent → answered at the client. Commit → screen
is from each event's `at` (the database clock at the change) to its arrival on a socket, for
every event streamed (replays not timed); customer and kitchen p99 split it by socket. Lost
counts every event the table says a socket should have had and it never got.

| orders/s asked | placed (achieved) | web CPU ({n} processes) | database CPU | all PostgreSQL | client CPU | API p50 / p99 | commit → screen p50 / p99 | customer p99 | kitchen p99 | lost | load | holds |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

- **Highest rate at which p99 < {P99_LIMIT * 1000:.0f} ms holds** (API and commit → screen, rate reached within 5 %, 0 lost, 0 refused): {f"{best.rate:g} orders/s asked ({best.achieved:.1f}/s placed)" if best else "none of the steps"}{f" ({result.stopped})" if result.stopped else ""}{f"; the next step, {last.rate:g}/s, did not (placed {last.achieved:.1f}/s, API p99 {ms(last.api_p99)}, screen p99 {ms(last.quantile(0.99))}, lost {last.lost})" if last is not None and not last.holds else ""}.
- After placing, each step waited for every order to be completed and every socket to have its events: {", ".join(f"{s.drain_seconds:.0f} s at {s.rate:g}/s" for s in steps)}.
- Lost events over every step: {lost} (must be 0); one event twice on one connection: {sum(s.duplicates for s in steps)}; sockets dropped by the server and reconnected: {last.reconnects if last else 0}; orders refused or failed: {sum(s.failed for s in steps)}{" " + str(failures) if failures else ""}.
- The fleet: {fleet_line}.
- Load average (1 min) {result.load_before:.1f} when the run started; at the end of each step in the table.
- Commit → screen p99 by event type: {"; ".join(f"{s.rate:g}/s: " + ", ".join(f"{t} {ms(quantile(v, 0.99))}" for t, v in sorted(s.by_type.items())) for s in steps)}. `at` is the database clock when the change's transaction started.
- The sockets' client's own event loop ran late by p99 {ms(result.loop_lag_p99)} (included in the screen latencies).

{plots}
"""


def _plot(result: Result, out_dir: Path) -> list[Path]:
    """docs/bench-scale-latency.png and -cpu.png: each figure against the rate asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def plain(axis: Any) -> None:
        """Log axes labelled with the numbers themselves (5, 10, 20), not powers."""
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())

    steps = result.steps
    rates = [s.rate for s in steps]
    paths = [out_dir / f"bench-scale-{what}.png" for what in PLOTS]
    title = (
        f"bench scale: {result.plan.outlets} outlets, {result.plan.customers} customer + "
        f"{result.plan.kitchens} kitchen sockets, {result.web_processes} web processes"
    )

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values, style in (
        ("API p50", [quantile(s.api_latencies, 0.5) for s in steps], "o--"),
        ("API p99", [s.api_p99 for s in steps], "o-"),
        ("commit → screen p50", [s.quantile(0.5) for s in steps], "s--"),
        ("commit → screen p99", [s.quantile(0.99) for s in steps], "s-"),
    ):
        ax.plot(rates, [1000 * v for v in values], style, label=label)
    ax.axhline(1000 * P99_LIMIT, color="red", linestyle=":", label=f"{P99_LIMIT * 1000:.0f} ms")
    for s in steps:
        ax.annotate(
            f"{s.achieved:.0f}/s placed\nload {s.load:.1f}",
            (s.rate, 1000 * s.api_p99) if s.api_p99 == s.api_p99 else (s.rate, 1),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=7,
        )
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates)
    low, high = ax.get_ylim()
    ax.set_yticks(
        [t for t in (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000, 5000) if low <= t <= high]
    )
    plain(ax.xaxis)
    plain(ax.yaxis)
    ax.set_xlabel("orders/s asked")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, (cpu, placed) = plt.subplots(1, 2, figsize=(11, 4.5))
    idle = result.idle
    for label, values, standing, colour in (
        ("web", [s.web_cpu for s in steps], idle.web_cpu if idle else None, "C0"),
        ("database", [s.db_cpu for s in steps], idle.db_cpu if idle else None, "C1"),
        ("clients", [s.client_cpu for s in steps], idle.client_cpu if idle else None, "C2"),
        ("all of PostgreSQL", [s.server_cpu for s in steps], None, "C3"),
    ):
        cpu.plot(rates, [100 * v for v in values], "o-", color=colour, label=label)
        if standing is not None:
            cpu.axhline(100 * standing, color=colour, linestyle=":", alpha=0.7)
    cpu.axhline(100 * (os.cpu_count() or 1), color="red", linestyle="--", label="all cores")
    cpu.set_xscale("log", base=2)
    cpu.set_xticks(rates)
    plain(cpu.xaxis)
    cpu.set_xlabel("orders/s asked")
    cpu.set_ylabel("CPU, % of one core (dotted: idle, no orders)")
    cpu.grid(True, alpha=0.3)
    cpu.legend(fontsize=8)
    placed.plot(rates, [s.achieved for s in steps], "o-", label="placed")
    placed.plot(rates, rates, ":", color="grey", label="asked")
    placed.set_xscale("log", base=2)
    placed.set_yscale("log", base=2)
    placed.set_xticks(rates)
    placed.set_yticks(rates)
    plain(placed.xaxis)
    plain(placed.yaxis)
    placed.set_xlabel("orders/s asked")
    placed.set_ylabel("orders/s placed")
    placed.grid(True, alpha=0.3)
    placed.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths
