"""python manage.py bench sockets: commit → socket latency and lost messages, one web process.

One Daphne serves everything: the order API, the outlet agents' API (claim,
ready, complete; ``outlet_agent --pace 0``) and every socket. This process is
the crowd: customer sockets and kitchen sockets (asyncio + websockets) and the
customers placing orders through the API at a fixed rate. Every event message
that arrives on the stream (not in a replay) is timed from the event's ``at``
(the database clock at the change; same machine, same clock) to its arrival.

Customers come and go: the sockets start on orders that are already done; each
new order takes the place of the oldest socket whose order is done (closed),
with a socket that connects with ``?after=0``, as the order page would. Kitchen
sockets stay open all along. Lost = events the table says a socket should have
had, that it never got (replay included), counted once everything is cooked.

After the main run the rate goes up step by step; the figure kept is the
highest rate whose p99 stayed under 250 ms with nothing lost and the rate
actually reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import websockets
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.db import connections
from websockets.typing import Origin

from lab.bench.harness import (
    PROJECT_DIR,
    Child,
    bench_database,
    cpu_seconds,
    free_port,
    ms,
    quantile,
    raise_open_files,
    wait_for_port,
)
from lab.bench.report import write_section
from queueing.models import OPEN_STATES, Order, OrderEvent, Outlet
from queueing.services import (
    order_claim_next,
    order_enqueue,
    orders_complete,
    orders_mark_ready,
    outlet_create,
)
from queueing.services.outlets import outlet_activate

COMMAND = "python manage.py bench sockets"
P99_LIMIT = 0.250
DB_PREFIX_ENV = "HEARTH_BENCH_DB_PREFIX"
MENU = ["margherita", "pepperoni", "marinara", "garlic-bread", "tiramisu", "cola"]
RECONNECT_MARGIN = 1_000  # ids a dropped socket asks again for (see docs/live.md)
IN_FLIGHT = 32  # placements on the wire at once (each holds a connection in the web process)


@dataclass(frozen=True)
class Plan:
    customers: int
    kitchens: int
    outlets: int
    rate: float
    seconds: float
    ramp: tuple[float, ...]
    ramp_seconds: float
    stations: int = 2


FULL = Plan(
    customers=1000,
    kitchens=20,
    outlets=5,
    rate=50,
    seconds=30,
    ramp=(75, 100, 150, 200, 300),
    ramp_seconds=10,
)
QUICK = Plan(customers=100, kitchens=10, outlets=5, rate=50, seconds=5, ramp=(100,), ramp_seconds=3)


@dataclass
class Phase:
    rate: float
    seconds: float
    placed: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    elapsed: float = 0.0
    first_id: int = 0  # events with first_id < id <= last_id belong to this phase
    last_id: int = 0
    latencies: list[float] = field(default_factory=list)
    api_latencies: list[float] = field(default_factory=list)  # each order POST, sent → answered
    by_type: dict[str, list[float]] = field(default_factory=dict)  # event type -> latencies
    expected: int = 0
    lost: int = 0
    duplicates: int = 0
    reconnects: int = 0  # sockets the server dropped, over the whole run so far
    drain_seconds: float = 0.0
    web_cpu: float = 0.0  # cores the web processes used over the phase (placing and draining)
    load: float = 0.0  # the machine's 1-minute load average at the end (it is shared)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1

    @property
    def achieved(self) -> float:
        return self.placed / self.elapsed if self.elapsed else 0.0

    def quantile(self, q: float) -> float:
        return quantile(self.latencies, q)

    @property
    def delivered(self) -> bool:
        """Every socket got everything, fast: p99 under the limit, nothing lost, nothing refused."""
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.failed == 0
            and self.quantile(0.99) < P99_LIMIT
        )

    @property
    def reached(self) -> bool:
        """The orders were placed at (nearly) the rate asked for."""
        return self.achieved >= 0.95 * self.rate

    @property
    def passed(self) -> bool:
        return self.delivered and self.reached


class Follower:
    """One socket of the crowd and everything it was told; it comes back when dropped, as a page does."""

    def __init__(self, *, kind: str, key: str, path: str) -> None:
        self.kind = kind  # "kitchen" or "customer"
        self.key = key  # outlet slug or order token
        self.path = path
        self.hello: int | None = None  # of the first connection
        self.live = False
        self.ids: set[int] = set()  # over every connection of this follower
        self._ids_here: set[int] = set()  # on the current connection
        self.timed: list[tuple[int, float, str]] = []  # (event id, seconds from `at`, event type)
        self.duplicates = 0  # one id twice on one connection: a protocol fault
        self.reconnects = 0
        self.done = False  # a customer's order completed
        self.closing = False
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers
        await self._connect(self.path)
        self.task = asyncio.create_task(self._follow())

    async def _connect(self, path: str) -> None:
        self.ws = await websockets.connect(
            self.base + path,
            origin=Origin(self.base.replace("ws://", "http://").rstrip("/")),
            additional_headers=self.headers,
            open_timeout=60,
            max_size=2**20,
        )
        self._ids_here = set()
        self.live = False

    async def _follow(self) -> None:
        while True:
            try:
                async for raw in self.ws:
                    self._handle(time.time(), json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            if self.closing:
                return
            # Dropped by the server (a restart, the database away): reconnect from the
            # highest id seen, less a margin for late commits; the id set drops repeats.
            self.reconnects += 1
            seen = max(self.ids, default=self.hello or 0)
            path = f"{self.path.split('?')[0]}?after={max(0, seen - RECONNECT_MARGIN)}"
            for pause in (0.2, 0.5, 1, 2, 4, 8, 8, 8):
                await asyncio.sleep(pause)
                try:
                    await self._connect(path)
                    break
                except (OSError, websockets.WebSocketException, TimeoutError):
                    continue
            else:
                return

    def _handle(self, arrived: float, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "event":
            event = message["event"]
            if event["id"] in self._ids_here:
                self.duplicates += 1
                return
            self._ids_here.add(event["id"])
            if event["id"] in self.ids:
                return  # the reconnect margin, seen on an earlier connection
            self.ids.add(event["id"])
            if self.live:
                committed = datetime.fromisoformat(event["at"]).timestamp()
                self.timed.append((event["id"], arrived - committed, event["type"]))
            if event["type"] in ("completed", "cancelled"):
                self.done = True
        elif kind == "hello":
            if self.hello is None:
                self.hello = message["last_event_id"]
        elif kind == "live":
            self.live = True

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with suppress(Exception):
                await self.ws.close()
        if self.task is not None:
            with suppress(Exception):
                await self.task


# --- The database, the processes ------------------------------------------------


# --- Seeding (synchronous Django, before the crowd arrives) --------------------


@dataclass
class Seed:
    outlets: dict[str, str]  # slug -> agent token
    cookie: str
    done_tokens: list[str]
    last_event_id: int


def _seed(plan: Plan) -> Seed:
    call_command("loaddata", "sample_menu", verbosity=0)
    outlets: dict[str, str] = {}
    made: list[Outlet] = []
    for i in range(plan.outlets):
        outlet, token = outlet_create(slug=f"bench-{i}", name=f"Bench {i}")
        outlet_activate(outlet=outlet)  # vouched for: orders start before any heartbeat
        outlets[outlet.slug] = token
        made.append(outlet)
    return Seed(
        outlets=outlets,
        cookie=staff_cookie(),
        done_tokens=done_orders(made, plan.customers),
        last_event_id=_last_event_id(),
    )


def staff_cookie() -> str:
    """The session cookie of a new manager, signed in, for the kitchen sockets."""
    boss = User.objects.create_superuser("bench-manager", password=secrets.token_urlsafe(16))
    session = SessionStore()
    session[SESSION_KEY] = str(boss.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = boss.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


def done_orders(outlets: list[Outlet], count: int) -> list[str]:
    """``count`` orders spread over ``outlets``, cooked and completed; their tokens.

    The customers' sockets start on orders that are already done (people looking at "done").
    """
    line = {"item": "cola", "name": "Cola", "qty": 1, "note": "", "prep_seconds": 10}
    done: list[str] = []
    for i in range(count):
        ticket = order_enqueue(
            kind="takeaway",
            lines=[line],
            customer={"name": "warm-up"},
            prep_seconds=10,
            quick=True,
            outlet=outlets[i % len(outlets)],
        )
        done.append(ticket.token)
    for outlet in outlets:
        while claimed := order_claim_next(outlet=outlet, station="warm-up", limit=200):
            claims = [(t.token, t.fence) for t in claimed]
            orders_mark_ready(claims=claims)
            orders_complete(claims=claims)
    return done


def _last_event_id() -> int:
    try:
        return OrderEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    finally:
        connections.close_all()


def _open_orders() -> int:
    try:
        return Order.objects.filter(state__in=OPEN_STATES).count()
    finally:
        connections.close_all()


def _expected(followers: list[Follower], first_id: int, last_id: int) -> list[set[int]]:
    """Per follower, the ids of (first_id, last_id] the table says it should have received."""
    try:
        events = list(
            OrderEvent.objects.filter(id__gt=first_id, id__lte=last_id)
            .select_related("order", "outlet", "from_outlet")
            .values_list("id", "order__token", "outlet__slug", "from_outlet__slug")
        )
    finally:
        connections.close_all()
    by_token: dict[str, set[int]] = {}
    by_outlet: dict[str, set[int]] = {}
    for event_id, token, slug, from_slug in events:
        if token:
            by_token.setdefault(token, set()).add(event_id)
        for s in {slug, from_slug} - {None}:
            by_outlet.setdefault(s, set()).add(event_id)
    expected = []
    for f in followers:
        ids = by_outlet.get(f.key, set()) if f.kind == "kitchen" else by_token.get(f.key, set())
        # A kitchen socket owes only what committed after it said hello.
        floor = (f.hello or 0) if f.kind == "kitchen" else 0
        expected.append({i for i in ids if i > floor})
    return expected


# --- The crowd ------------------------------------------------------------------


class Crowd:
    """Kitchen and customer sockets, and the customers placing orders."""

    def __init__(self, *, base: str, seed: Seed, plan: Any, web_pids: list[int]) -> None:
        self.web_pids = web_pids
        self.base = base
        self.http_base = base.replace("ws://", "http://").rstrip("/")
        self.seed = seed
        self.plan = plan
        self.followers: list[Follower] = []
        self.kitchens: list[Follower] = []
        self.idle: deque[Follower] = deque()  # customers whose order is done, oldest first
        self.busy: list[Follower] = []
        self.open_customers = 0
        self.most_open = 0
        self.lag: list[float] = []
        self._closing: set[asyncio.Task[None]] = set()

    def _web_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.web_pids)

    async def _open(self, follower: Follower, headers: dict[str, str]) -> Follower:
        await follower.open(self.base, headers)
        self.followers.append(follower)
        return follower

    async def gather(self) -> None:
        """Open every kitchen socket and the customers' sockets (on done orders)."""
        gate = asyncio.Semaphore(50)
        slugs = list(self.seed.outlets)

        async def one(follower: Follower, headers: dict[str, str]) -> Follower:
            async with gate:
                return await self._open(follower, headers)

        kitchens = [
            Follower(
                kind="kitchen",
                key=slugs[i % len(slugs)],
                path=f"ws/kitchen/{slugs[i % len(slugs)]}/",
            )
            for i in range(self.plan.kitchens)
        ]
        customers = [
            Follower(
                kind="customer",
                key=token,
                path=f"ws/orders/{token}/?after={self.seed.last_event_id}",
            )
            for token in self.seed.done_tokens
        ]
        self.kitchens = await asyncio.gather(
            *(one(k, {"Cookie": self.seed.cookie}) for k in kitchens)
        )
        await asyncio.gather(*(one(c, {}) for c in customers))
        for c in customers:
            c.done = True
            self.idle.append(c)
        self.open_customers = self.most_open = len(customers)

    async def watch_loop_lag(self, stop: asyncio.Event) -> None:
        """How late this process's own event loop runs (it inflates every latency measured here)."""
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.05)
            self.lag.append(time.monotonic() - before - 0.05)

    def _retire_done(self) -> None:
        still = []
        for f in self.busy:
            if f.done:
                self.idle.append(f)
            else:
                still.append(f)
        self.busy = still

    async def _customer_arrives(self, token: str) -> None:
        self._retire_done()
        if self.idle:
            leaving = self.idle.popleft()
            task = asyncio.create_task(leaving.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            self.open_customers += 1
            self.most_open = max(self.most_open, self.open_customers)
        follower = Follower(kind="customer", key=token, path=f"ws/orders/{token}/?after=0")
        await self._open(follower, {})
        self.busy.append(follower)

    async def place(self, phase: Phase, client: httpx.AsyncClient) -> None:
        """Place orders at ``phase.rate`` for ``phase.seconds``; each customer then opens their page."""
        total = int(phase.rate * phase.seconds)
        gate = asyncio.Semaphore(IN_FLIGHT)
        slugs = list(self.seed.outlets)
        tasks = []

        async def one(i: int) -> None:
            try:
                body: dict[str, Any]
                if i % 2:
                    body = {"kind": "takeaway", "outlet": slugs[i % len(slugs)]}
                else:
                    body = {"kind": "delivery", "zone": f"zone-{i % 40}"}
                body["lines"] = [{"item": random.choice(MENU), "qty": 1}]
                body["customer"] = {"name": f"bench {i}", "address": "1 Loop Road"}
                sent = time.monotonic()
                try:
                    response = await client.post("/api/orders", json=body)
                finally:
                    gate.release()  # the gate bounds requests on the wire, not page visits
                phase.api_latencies.append(time.monotonic() - sent)
                if response.status_code != 202:
                    phase.fail(f"HTTP {response.status_code}")
                    return
                phase.placed += 1
            except (httpx.HTTPError, OSError) as exc:
                phase.fail(type(exc).__name__)
                return
            try:
                await self._customer_arrives(response.json()["token"])
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                phase.fail(f"customer socket {type(exc).__name__}")

        start = time.monotonic()
        for i in range(total):
            delay = start + i / phase.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        phase.elapsed = max(time.monotonic() - start, phase.seconds)

    async def run_phase(self, phase: Phase) -> None:
        phase.first_id = await asyncio.to_thread(_last_event_id)
        cpu_before, clock_before = self._web_cpu(), time.monotonic()
        async with httpx.AsyncClient(
            base_url=self.http_base, timeout=30, limits=httpx.Limits(max_connections=IN_FLIGHT)
        ) as client:
            await self.place(phase, client)
        # Let the kitchens finish and the sockets catch up, then count.
        drain_start = time.monotonic()
        deadline = drain_start + 120
        while await asyncio.to_thread(_open_orders) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        phase.last_id = await asyncio.to_thread(_last_event_id)
        followers = list(self.followers)
        expected = await asyncio.to_thread(_expected, followers, phase.first_id, phase.last_id)
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            if all(want <= f.ids for f, want in zip(followers, expected, strict=True)):
                break
            await asyncio.sleep(0.1)
        phase.drain_seconds = time.monotonic() - drain_start
        phase.web_cpu = (self._web_cpu() - cpu_before) / (time.monotonic() - clock_before)
        phase.load = os.getloadavg()[0]
        phase.expected = sum(len(w) for w in expected)
        phase.lost = sum(len(want - f.ids) for f, want in zip(followers, expected, strict=True))
        phase.duplicates = sum(f.duplicates for f in followers)
        phase.reconnects = sum(f.reconnects for f in followers)
        for f in followers:
            for event_id, latency, event_type in f.timed:
                if phase.first_id < event_id <= phase.last_id:
                    phase.latencies.append(latency)
                    phase.by_type.setdefault(event_type, []).append(latency)

    async def disperse(self) -> None:
        await asyncio.gather(*(f.close() for f in self.followers), return_exceptions=True)


async def _crowd_run(
    base: str, seed: Seed, plan: Plan, stdout: TextIO, web_pid: int
) -> tuple[list[Phase], Crowd]:
    crowd = Crowd(base=base, seed=seed, plan=plan, web_pids=[web_pid])
    stop = asyncio.Event()
    watcher = asyncio.create_task(crowd.watch_loop_lag(stop))
    phases: list[Phase] = []
    try:
        t0 = time.monotonic()
        await crowd.gather()
        stdout.write(
            f"  {len(crowd.kitchens)} kitchen + {crowd.open_customers} customer sockets open "
            f"in {time.monotonic() - t0:.1f}s\n"
        )
        for rate, seconds in [(plan.rate, plan.seconds)] + [
            (r, plan.ramp_seconds) for r in plan.ramp
        ]:
            phase = Phase(rate=rate, seconds=seconds)
            await crowd.run_phase(phase)
            phases.append(phase)
            stdout.write(f"  {_phase_line(phase)}\n")
            stdout.flush()
            # Past the main run, stop at the first step that is slow or lossy, or whose rate
            # the API could not reach (a higher target would only queue in this client).
            if len(phases) > 1 and not (phase.delivered and phase.achieved >= 0.9 * phase.rate):
                break
    finally:
        stop.set()
        await watcher
        await crowd.disperse()
    return phases, crowd


def _by_type(p: Phase) -> str:
    return "p99 " + ", ".join(f"{t} {ms(quantile(v, 0.99))}" for t, v in sorted(p.by_type.items()))


def _reasons(p: Phase) -> str:
    return (
        (": " + ", ".join(f"{n} {r}" for r, n in sorted(p.failures.items()))) if p.failures else ""
    )


def _phase_line(p: Phase) -> str:
    return (
        f"{p.rate:g}/s for {p.seconds:g}s: placed {p.placed} ({p.achieved:.1f}/s, {p.failed} failed{_reasons(p)}), "
        f"{len(p.latencies)} streamed messages, p50 {ms(p.quantile(0.5))} p95 {ms(p.quantile(0.95))} "
        f"p99 {ms(p.quantile(0.99))} ({_by_type(p)}) max {ms(max(p.latencies, default=float('nan')))}, "
        f"lost {p.lost}/{p.expected}, duplicates {p.duplicates}, reconnects {p.reconnects}, web process {p.web_cpu:.0%} of a core, "
        f"load {p.load:.1f} → {'ok' if p.passed else 'over'}"
    )


def run(*, stdout: TextIO, quick: bool = False) -> list[Phase]:
    plan = QUICK if quick else FULL
    files = raise_open_files()
    name = os.environ.get(DB_PREFIX_ENV, "bench_") + "sockets"
    logs = Path(tempfile.mkdtemp(prefix="hearth-bench-sockets-"))
    stdout.write(
        f"bench sockets{' --quick' if quick else ''}: {plan.customers} customer + {plan.kitchens} kitchen "
        f"sockets, {plan.outlets} outlets (agents, {plan.stations} stations, --pace 0), database {name}, "
        f"open-file limit {files}, logs in {logs}\n"
    )
    with bench_database(name) as url:
        seed = _seed(plan)
        env = dict(
            os.environ,
            DATABASE_URL=url,
            DJANGO_SETTINGS_MODULE="shop.settings",
            PYTHONUNBUFFERED="1",
            HEARTH_ORDER_RATE_LIMIT="0",  # one load client places every order
        )
        port = free_port()
        web = Child(
            "web",
            [
                sys.executable,
                "-m",
                "daphne",
                "-v",
                "0",
                "--ping-interval",
                "20",
                "--ping-timeout",
                "30",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "shop.asgi:application",
            ],
            env=env,
            logs=logs,
        )
        agents: list[Child] = []
        try:
            wait_for_port(port, web)
            server = f"http://127.0.0.1:{port}"
            for slug, token in seed.outlets.items():
                agents.append(
                    Child(
                        f"agent-{slug}",
                        [
                            sys.executable,
                            str(PROJECT_DIR / "manage.py"),
                            "outlet_agent",
                            "--outlet",
                            slug,
                            "--server",
                            server,
                            "--stations",
                            str(plan.stations),
                            "--pace",
                            "0",
                        ],
                        env=dict(env, HEARTH_OUTLET_TOKEN=token),
                        logs=logs,
                    )
                )
            phases, crowd = asyncio.run(
                _crowd_run(f"ws://127.0.0.1:{port}/", seed, plan, stdout, web.popen.pid)
            )
        finally:
            for child in agents:
                child.stop()
            web.stop()
    body = _report(plan, phases, crowd, quick=quick)
    stdout.write(body + "\n")
    path = write_section("sockets", body, command=COMMAND + (" --quick" if quick else ""))
    stdout.write(f"written to {path}\n")
    return phases


def _report(plan: Plan, phases: list[Phase], crowd: Crowd, *, quick: bool) -> str:
    main = phases[0]
    passing = [p for p in phases if p.passed]
    best = max(passing, key=lambda p: p.rate) if passing else None
    delivered = [p for p in phases if p.delivered]
    fastest = max(delivered, key=lambda p: p.achieved) if delivered else None
    lag = sorted(crowd.lag)
    lag99 = lag[int(0.99 * (len(lag) - 1))] if lag else float("nan")
    rows = "\n".join(
        f"| {p.rate:g} | {p.seconds:g} | {p.placed} ({p.achieved:.1f}/s) | {len(p.latencies)} "
        f"| {ms(p.quantile(0.5))} | {ms(p.quantile(0.95))} | {ms(p.quantile(0.99))} "
        f"| {p.lost} of {p.expected} | {p.web_cpu:.0%} | {p.load:.1f} "
        f"| {'yes' if p.delivered else 'no'} | {'yes' if p.reached else 'no'} |"
        for p in phases
    )
    return f"""One Daphne process (`-v 0`, ping 20/30 s) serves the order API, the agents' API and
every socket; {plan.outlets} outlet agents (`outlet_agent --stations {plan.stations} --pace 0`) cook
over HTTP; one client process holds {plan.kitchens} kitchen sockets (open all along) and
{plan.customers} customer sockets (each new order replaces the oldest socket whose order is done,
and connects with `?after=0`; at most {crowd.most_open} customer sockets were open at once) and
places orders through the API, half takeaway, half delivery. Latency is from the event's `at`
(database clock at the change) to its arrival on a socket, for every message streamed (replays
not timed). Lost counts every event the table says a socket should have had and it never got,
replay included, after the kitchens finished. Web CPU is the Daphne process's share of one
core over the step; load is the machine's 1-minute load average at its end (the machine's two
cores are shared with PostgreSQL, the agents, this client and anything else running).

| orders/s asked | s | placed (achieved) | streamed messages | p50 | p95 | p99 | lost | web CPU | load | p99 < {P99_LIMIT * 1000:.0f} ms, 0 lost | rate reached |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

- At {main.rate:g} orders/s asked ({main.achieved:.1f}/s placed, {main.failed} failed{_reasons(main)}): p50 {ms(main.quantile(0.5))}, p99 {ms(main.quantile(0.99))}, lost {main.lost} of {main.expected}.
- Highest rate asked for, reached (95 %) with p99 under {P99_LIMIT * 1000:.0f} ms and nothing lost: {f"{best.rate:g} orders/s" if best else "none"}{"" if not phases or phases[-1].passed else f" (the last step, {phases[-1].rate:g}/s, was not)"}.
- Highest rate actually placed with p99 under {P99_LIMIT * 1000:.0f} ms and nothing lost: {f"{fastest.achieved:.1f} orders/s (asked {fastest.rate:g})" if fastest else "none"}.
- By event type at {main.rate:g} orders/s asked: {_by_type(main)}. `at` is the database clock when the change's transaction started, so a `placed` event also counts the rest of the order request's transaction up to its commit.
- Sockets the server dropped and that reconnected (as a page does, `?after=` the highest id seen less {RECONNECT_MARGIN}): {phases[-1].reconnects if phases else 0}; one event id twice on one connection: {sum(p.duplicates for p in phases)}.
- The client's own event loop ran late by p99 {ms(lag99)} (included in the latencies above).
{"- `--quick`: a small run that checks the bench works; its figures are not the benchmark." if quick else ""}"""
