"""python manage.py bench outlets: what the operations screen, a placement and a tick cost as outlets grow.

On its own database (``bench_outlets`` by default), N outlets of weights 1–3
heartbeat and hold open orders (two per outlet, spread over delivery zones).
For each N it measures, in this process:

- the operations screen's overview (the part its page polls): wall time of one
  render through Django's test client, as a manager;
- a delivery placement (``order_enqueue``, which consults the ring and the
  outlets' loads): CPU time of this process per placement, and wall time; and
  the routing alone (choosing the outlet, ``Router.for_live_outlets().choose``);
- one notifier tick with nobody silent: CPU and wall time.

Targets at 1,000 outlets: the overview under 200 ms, a placement under 1 ms of
CPU. A size whose overview took longer than ``RENDER_BUDGET`` stops the renders
at the larger sizes (their cost is then reported as not measured).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import TextIO

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from lab.bench.queue import _django_database
from lab.bench.queue_peers import Server
from lab.bench.report import write_section
from queueing.models import Outlet
from queueing.services import order_enqueue
from queueing.services.failover import notifier_tick
from queueing.services.routing import Router

COMMAND = "python manage.py bench outlets"
DB_ENV = "HEARTH_BENCH_OUTLETS_DB"
SIZES = (10, 100, 300, 1000)
QUICK_SIZES = (10, 50)
PLACEMENTS = 200
RENDER_BUDGET = 20.0  # seconds: above this, larger sizes skip the render
LINE = {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 60}


@dataclass
class Size:
    outlets: int
    overview_ms: float | None
    overview_kb: float | None  # the answer's size: the page polls it every few seconds
    place_cpu_ms: float
    place_wall_ms: float
    route_cpu_ms: float
    tick_cpu_ms: float
    tick_wall_ms: float


def _grow(to: int) -> None:
    """Add outlets (weights 1–3), heartbeating, with two open delivery orders each."""
    have = Outlet.objects.count()
    if have >= to:
        return
    Outlet.objects.bulk_create(
        Outlet(slug=f"o{n:05d}", name=f"Outlet {n}", weight=1 + n % 3, token_hash=f"x{n}")
        for n in range(have, to)
    )
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_outlet SET state = 'active', last_heartbeat_at = now()")
    for n in range(2 * (to - have)):
        _place(n)


def _place(n: int) -> None:
    order_enqueue(
        kind="delivery",
        zone=f"Z{n % 5000}",
        lines=[LINE],
        customer={"name": "Bench"},
        prep_seconds=60,
        quick=False,
    )


def _timed(work: object) -> tuple[float, float]:
    """(CPU ms, wall ms) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()  # type: ignore[operator]
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


def measure(outlets: int, *, render: bool, client: Client) -> Size:
    _grow(outlets)
    overview = size = None
    if render:
        answer = client.get("/ops/overview/")  # warm
        assert answer.status_code == 200, f"ops overview answered {answer.status_code}"
        size = len(answer.content) / 1024
        overview = min(_timed(lambda: client.get("/ops/overview/"))[1] for _ in range(3))
    places = [_timed(lambda n=n: _place(n)) for n in range(PLACEMENTS)]
    routes = [
        _timed(lambda n=n: Router.for_live_outlets(incoming=1).choose(f"Z{n}"))
        for n in range(PLACEMENTS)
    ]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE queueing_outlet SET last_heartbeat_at = now()")
    ticks = [_timed(lambda: notifier_tick(may_declare_down=True)) for _ in range(5)]
    return Size(
        outlets=outlets,
        overview_ms=overview,
        overview_kb=size,
        place_cpu_ms=statistics.median(c for c, _ in places),
        place_wall_ms=statistics.median(w for _, w in places),
        route_cpu_ms=statistics.median(c for c, _ in routes),
        tick_cpu_ms=statistics.median(c for c, _ in ticks),
        tick_wall_ms=statistics.median(w for _, w in ticks),
    )


def table(sizes: list[Size]) -> str:
    rows = [
        "| outlets | ops overview render | its answer | placement CPU (median) | of which routing "
        "| placement wall | tick CPU | tick wall |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sizes:
        render = f"{s.overview_ms:,.0f} ms" if s.overview_ms is not None else "not measured"
        kb = f"{s.overview_kb:,.0f} KiB" if s.overview_kb is not None else "–"
        rows.append(
            f"| {s.outlets:,} | {render} | {kb} | {s.place_cpu_ms:.2f} ms | {s.route_cpu_ms:.2f} ms "
            f"| {s.place_wall_ms:.2f} ms "
            f"| {s.tick_cpu_ms:.1f} ms | {s.tick_wall_ms:.1f} ms |"
        )
    return "\n".join(rows)


def run(*, stdout: TextIO, quick: bool = False) -> list[Size]:
    """Measure each size, print the table, and keep it in docs/benchmarks.md (not with --quick)."""
    name = os.environ.get(DB_ENV, "bench_outlets")
    server = Server.from_django(settings.DATABASES["default"])
    server.recreate_database(name)
    stdout.write(f"bench outlets: database {name}\n")
    load_before = os.getloadavg()[0]
    sizes: list[Size] = []
    with _django_database(name):
        manager = User.objects.create_superuser("bench-manager", password=None)
        client = Client(HTTP_HOST="localhost")
        client.force_login(manager)
        render = True
        for outlets in QUICK_SIZES if quick else SIZES:
            size = measure(outlets, render=render, client=client)
            sizes.append(size)
            render = render and (size.overview_ms or 0) < RENDER_BUDGET * 1000
            stdout.write(table([size]).splitlines()[-1] + "\n")
            stdout.flush()
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    body = (
        f"Targets at 1,000 outlets: the ops overview under 200 ms, a placement under 1 ms of CPU. "
        f"{load}.\n\n{table(sizes)}\n"
    )
    stdout.write(body)
    if not quick:
        write_section("outlets", body, command=COMMAND)
    return sizes
