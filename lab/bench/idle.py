"""python manage.py bench idle: what idle outlets cost the web tier, and how fast they wake.

On its own database (``bench_idle``), N outlets with 2 stations each are simulated by
this process as asyncio HTTP clients against one web process (daphne, as ``up`` runs
one): every outlet heartbeats at ``HEARTH_HEARTBEAT_INTERVAL`` and each station claims
in one of two ways:

- ``polling`` — the agent as it was: ``POST …/claim``, and on 204 ask again after
  0.1 s doubling to 1 s (jittered);
- ``waiting`` — the agent as it is: ``POST …/claim?wait=50`` (its ``--claim-wait``), parked at the server
  until an event of its outlet may have brought work (or 204 after the wait).

Two more modes split the cost (``HEARTH_BENCH_IDLE_RUNS``): ``parked`` (waiting
stations, no heartbeats) and ``beats`` (heartbeats only, no stations: no latency).

For each mode and N it samples the web process's CPU (``/proc/<pid>/stat``) over a
window with every outlet idle, then places orders (takeaway, one at a time) at random
idle outlets and measures commit → claim: from ``order_enqueue`` returning (its
commit) to the claim's answer reaching the station (client side), and the database's
``claimed_at - created_at``. The station then marks the order ready and completes it,
so its outlet is idle again. Targets at 1,000 outlets: ≤ 25 % of one core, p99 ≤ 100 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import httpx
from django.conf import settings
from django.core.management import call_command

from lab.bench.harness import (
    bench_database,
    cpu_seconds,
    quantile,
    raise_open_files,
    resident_mib,
)
from lab.bench.report import write_section
from lab.bench.web import web_processes
from queueing.models import Order, Outlet
from queueing.services import order_enqueue
from queueing.services.outlets import outlet_activate, outlet_create
from shop.agent import CLAIM_WAIT as AGENT_CLAIM_WAIT
from shop.agent import CLAIM_WAIT_SLACK, KEEP_ALIVE

COMMAND = "python manage.py bench idle"
DB_NAME = "bench_idle"
STATIONS = 2
# The agent's wait (``outlet_agent --claim-wait``); HEARTH_BENCH_CLAIM_WAIT measures another.
CLAIM_WAIT = float(os.environ.get("HEARTH_BENCH_CLAIM_WAIT", "") or AGENT_CLAIM_WAIT)
POLL_MIN, POLL_MAX = 0.1, 1.0
LINE = {"item": "cola", "name": "Cola", "qty": 1, "note": "", "prep_seconds": 10}


@dataclass(frozen=True)
class Plan:
    runs: tuple[tuple[str, int], ...]  # (mode, outlets)
    window: float  # seconds of CPU sampling, all idle (one whole wait at least, when parked)
    orders: int  # placed one at a time, per run
    # Stations first claim at random over this many seconds: one whole wait, as a fleet whose
    # agents started over a day, so they re-park spread out, not in one burst per wait.
    spread: float = CLAIM_WAIT


FULL = Plan(
    runs=(
        ("polling", 50),
        ("waiting", 100),
        ("waiting", 300),
        ("parked", 1000),
        ("beats", 1000),
        ("waiting", 1000),
    ),
    window=20.0,
    orders=100,
)
# Polling answers in seconds once the web process is saturated: fewer orders measure it.
POLLING_ORDERS = 30
CLAIM_GIVE_UP = 5.0  # seconds after which an order counts as not claimed (an error)
QUICK = Plan(runs=(("polling", 10), ("waiting", 10)), window=6.0, orders=10, spread=5.0)
# e.g. HEARTH_BENCH_IDLE_RUNS="polling:50,waiting:1000": other runs than FULL's.
RUNS_ENV = "HEARTH_BENCH_IDLE_RUNS"
# e.g. HEARTH_BENCH_IDLE_WINDOW=900: a longer idle window, to see the web process's memory
# over a quarter of an hour (it is read at the window's start and end).
WINDOW_ENV = "HEARTH_BENCH_IDLE_WINDOW"


def _plan(quick: bool) -> Plan:
    plan = QUICK if quick else FULL
    runs = os.environ.get(RUNS_ENV, "").strip()
    if runs:
        parsed = tuple(
            (m, int(n)) for m, _, n in (r.strip().partition(":") for r in runs.split(","))
        )
        plan = replace(plan, runs=parsed)
    window = os.environ.get(WINDOW_ENV, "").strip()
    if window:
        plan = replace(plan, window=float(window))
    return plan


@dataclass
class Run:
    mode: str
    outlets: int
    web_cpu: float = 0.0  # share of one core over the idle window
    web_mib_start: float = 0.0  # the web process's resident memory at the window's start
    web_mib: float = 0.0  # and at its end
    requests_per_s: float = 0.0
    load: float = 0.0
    latencies: list[float] = field(default_factory=list)  # client side, seconds
    db_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


class Fleet:
    """N outlets' stations and heartbeats, all in this event loop."""

    def __init__(
        self, *, base: str, outlets: dict[str, str], mode: str, spread: float = CLAIM_WAIT
    ) -> None:
        self.outlets = outlets
        self.mode = mode
        self.spread = spread  # seconds over which the stations first claim
        # One client per outlet, as each outlet's agent is a process with its own: one
        # client for the whole fleet is one pool of thousands of connections, which
        # httpcore scans on every request, and the fleet spent a core doing that.
        self.clients = {
            slug: httpx.AsyncClient(
                base_url=base,
                timeout=CLAIM_WAIT + CLAIM_WAIT_SLACK,
                headers={"Authorization": f"Bearer {token}"},
                limits=httpx.Limits(max_connections=STATIONS + 2, keepalive_expiry=KEEP_ALIVE),
            )
            for slug, token in outlets.items()
        }
        self.requests = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.first_claims = 0
        self.claimed: dict[str, float] = {}  # order token -> monotonic time the answer arrived
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for slug in self.outlets:
            if self.mode != "parked":
                self.tasks.append(asyncio.create_task(self.heartbeats(slug)))
            for n in range(1, STATIONS + 1 if self.mode != "beats" else 1):
                self.tasks.append(asyncio.create_task(self.station(slug, f"{slug}-{n}")))

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))

    async def post(self, slug: str, path: str, body: dict[str, object]) -> int:
        """A request of ``slug``'s agent; its answer's status (0: it failed)."""
        client = self.clients[slug]
        self.requests += 1
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            if self.stop.is_set():
                return 0  # the fleet is closing its connections under its own requests
            self.errors += 1
            kind = f"{path.rsplit('/', 1)[-1].split('?')[0]} {type(exc).__name__}"
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            await asyncio.sleep(1)
            return 0
        if response.status_code == 200 and "/claim" in path:
            data = response.json()
            self.claimed.setdefault(data["order"]["token"], time.monotonic())
            token, fence = data["order"]["token"], data["fence"]
            await client.post(f"/api/orders/{token}/ready", json={"fence": fence})
            await client.post(f"/api/orders/{token}/complete", json={"fence": fence})
            self.requests += 2
        elif response.status_code >= 300 and response.status_code != 204:
            self.errors += 1
        return response.status_code

    async def heartbeats(self, slug: str) -> None:
        interval = float(settings.HEARTH_HEARTBEAT_INTERVAL)
        await asyncio.sleep(random.uniform(0, interval))  # outlets do not beat in step
        seq = 0
        while True:
            seq += 1
            await self.post(slug, f"/api/outlets/{slug}/heartbeat", {"seq": seq, "source": "bench"})
            await asyncio.sleep(interval)

    async def station(self, slug: str, name: str) -> None:
        await asyncio.sleep(random.uniform(0, self.spread))
        path = f"/api/outlets/{slug}/claim"
        if self.mode in ("waiting", "parked"):
            path += f"?wait={CLAIM_WAIT:g}"
        poll = POLL_MIN
        first = True
        while True:
            if first and self.mode != "polling":
                self.first_claims += 1  # about to park
            status = await self.post(slug, path, {"station": name})
            if first and self.mode == "polling":
                self.first_claims += 1
            first = False
            if self.mode == "polling":
                if status == 204:
                    await asyncio.sleep(poll * random.uniform(0.8, 1.2))
                    poll = min(POLL_MAX, poll * 2)
                else:
                    poll = POLL_MIN


def seed_outlets(count: int, have: dict[str, str]) -> dict[str, str]:
    """Outlets up to ``count`` (active, vouched for), with their agent tokens."""
    for i in range(len(have), count):
        outlet, token = outlet_create(slug=f"idle-{i:04d}", name=f"Idle {i}")
        outlet_activate(outlet=outlet)
        have[outlet.slug] = token
    return dict(list(have.items())[:count])


def _place(slug: str) -> str:
    ticket = order_enqueue(
        kind="takeaway",
        lines=[LINE],
        customer={"name": "bench"},
        prep_seconds=10,
        quick=True,
        outlet=Outlet.objects.get(slug=slug),
    )
    return ticket.token


def _db_latencies(tokens: list[str]) -> list[float]:
    rows = Order.objects.filter(token__in=tokens, claimed_at__isnull=False).values_list(
        "created_at", "claimed_at"
    )
    return [(claimed - created).total_seconds() for created, claimed in rows if claimed and created]


async def _measure(run: Run, base: str, outlets: dict[str, str], plan: Plan, web_pid: int) -> None:
    fleet = Fleet(base=base, outlets=outlets, mode=run.mode, spread=plan.spread)
    fleet.start()
    try:
        stations = len(outlets) * STATIONS
        deadline = time.monotonic() + 120
        if run.mode == "beats":
            stations = 0
        while fleet.first_claims < stations and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)  # every station parked (or polling at its slowest)
        requests, cpu, clock = fleet.requests, cpu_seconds(web_pid), time.monotonic()
        run.web_mib_start = resident_mib(web_pid)
        await asyncio.sleep(_window(plan, run.mode))
        elapsed = time.monotonic() - clock
        run.web_cpu = (cpu_seconds(web_pid) - cpu) / elapsed
        run.requests_per_s = (fleet.requests - requests) / elapsed
        run.web_mib = resident_mib(web_pid)
        run.load = os.getloadavg()[0]
        slugs = list(outlets)
        tokens: list[str] = []
        orders = min(plan.orders, POLLING_ORDERS) if run.mode == "polling" else plan.orders
        for _ in range(orders if run.mode != "beats" else 0):
            token = await asyncio.to_thread(_place, random.choice(slugs))
            committed = time.monotonic()
            tokens.append(token)
            while token not in fleet.claimed and time.monotonic() - committed < CLAIM_GIVE_UP:
                await asyncio.sleep(0.001)
            if token in fleet.claimed:
                run.latencies.append(fleet.claimed[token] - committed)
            await asyncio.sleep(random.uniform(0.05, 0.15))
        run.db_latencies = await asyncio.to_thread(_db_latencies, tokens)
        run.errors = fleet.errors + len(tokens) - len(run.latencies)
        run.error_kinds = fleet.error_kinds
    finally:
        await fleet.close()


def _window(plan: Plan, mode: str) -> float:
    """The CPU window: with parked stations, the whole spread, so each re-parks about once."""
    return max(plan.window, plan.spread) if mode in ("waiting", "parked") else plan.window


def _line(r: Run) -> str:
    return (
        f"{r.mode:8} {r.outlets:5} outlets: web {100 * r.web_cpu:5.1f} % of a core, "
        f"{r.requests_per_s:6.1f} req/s, {r.web_mib_start:.0f} → {r.web_mib:.0f} MiB; commit→claim p50 {1000 * quantile(r.latencies, 0.5):.0f} ms "
        f"p99 {1000 * quantile(r.latencies, 0.99):.0f} ms max {1000 * max(r.latencies, default=0):.0f} ms "
        f"(db p99 {1000 * quantile(r.db_latencies, 0.99):.0f} ms, {len(r.latencies)} orders); "
        f"errors {r.errors} {r.error_kinds or ''}; load {r.load:.2f}"
    )


def run(*, stdout: TextIO, quick: bool = False) -> list[Run]:
    plan = _plan(quick)
    files = raise_open_files()
    logs = Path(tempfile.mkdtemp(prefix="hearth-bench-idle-"))
    stdout.write(
        f"bench idle{' --quick' if quick else ''}: {STATIONS} stations per outlet, heartbeat every "
        f"{settings.HEARTH_HEARTBEAT_INTERVAL:g}s, CPU window {plan.window:g}s, database {DB_NAME}, "
        f"open-file limit {files}, logs in {logs}\n"
    )
    runs: list[Run] = []
    with bench_database(DB_NAME):
        call_command("loaddata", "sample_menu", verbosity=0)
        tokens: dict[str, str] = {}
        for mode, count in plan.runs:
            outlets = seed_outlets(count, tokens)
            # Started as ``up`` starts it, on a socket with a deep accept queue: daphne's own
            # (``-p``) keeps 50 waiting connections, and a fleet reconnecting in a burst
            # overflowed it (the kernel drops the handshake's last step; the client's
            # request then waits a second for a retry, or the connection is reset).
            with web_processes(
                1, database=DB_NAME, fast=settings.HEARTH_API_FAST, log_dir=logs, access_log=False
            ) as (base, pids):
                result = Run(mode=mode, outlets=count)
                asyncio.run(_measure(result, base, outlets, plan, pids[0]))
            runs.append(result)
            stdout.write(f"  {_line(result)}\n")
            stdout.flush()
            # After every run: a long bench stopped half-way keeps what it measured.
            path = write_section("idle", _report(plan, runs, quick=quick), command=COMMAND)
    stdout.write(f"written to {path}\n")
    return runs


def _ms(seconds: list[float], q: float) -> str:
    """A quantile in milliseconds; a dash for a run that placed no orders (heartbeats only)."""
    return f"{1000 * quantile(seconds, q):.0f}" if seconds else "–"


def _report(plan: Plan, runs: list[Run], *, quick: bool) -> str:
    rows = "\n".join(
        f"| {r.mode} | {r.outlets} | {100 * r.web_cpu:.1f} % | {r.web_mib_start:.0f} → {r.web_mib:.0f} | {r.requests_per_s:.1f} "
        f"| {_ms(r.latencies, 0.5)} | {_ms(r.latencies, 0.99)} | {_ms(r.latencies, 1.0)} "
        f"| {_ms(r.db_latencies, 0.99)} | {len(r.latencies)} | {r.errors} | {r.load:.2f} |"
        for r in runs
    )
    return f"""{"A quick run (`--quick`): a check that the bench works, not a measurement." if quick else ""}

{STATIONS} stations per outlet and one heartbeat per outlet every
{settings.HEARTH_HEARTBEAT_INTERVAL:g} s, simulated by one client process against one
daphne process. *polling*: the agent before waiting claims (claim, then 0.1 s → 1 s
back-off on 204); *waiting*: `claim?wait={CLAIM_WAIT:g}`, each station's first claim at
a random moment in the first {plan.spread:g} s (so stations re-park spread out, as a
fleet started over a day would). Web CPU is the web process's user + system time with every
outlet idle, over {plan.window:g} s, or {_window(plan, "waiting"):g} s when stations park; web memory is its
resident set at the start and the end of that window. commit → claim is
measured from `order_enqueue` returning to the claim's answer arriving at the station
(client side; "db" is the order's `claimed_at - created_at`), over {plan.orders}
orders ({POLLING_ORDERS} when polling) placed one at a time at random idle outlets;
one not claimed within {CLAIM_GIVE_UP:g} s counts as an error. Load is the 1-minute load average
at the end of the window (the machine is shared).

Targets at 1,000 outlets: web ≤ 25 % of one core; commit → claim p99 ≤ 100 ms.

| mode | outlets | web CPU (one core) | web memory (MiB) | requests/s | p50 ms | p99 ms | max ms | db p99 ms | orders claimed | errors | load |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}
"""
