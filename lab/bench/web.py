"""python manage.py bench web: the hot API endpoints through real web processes, with wrk.

On its own database (``bench_web`` by default, ``HEARTH_BENCH_WEB_DB`` to change),
one active outlet takes takeaway orders. Side by side in one run:

- ``order_submit()`` called in this process by 8 threads: the rate the service
  itself allows on this machine, the yardstick for the web tier;
- ``POST /api/orders`` through web processes started as ``up`` starts them (one
  listening socket passed to each daphne with ``--fd``), driven by ``wrk -s``
  with a Lua script, at 1 process and at ``up``'s default (one per core);
- ``GET /api/orders/<token>`` the same way;
- the same POST through the same daphne processes serving ``lab.bench.bare``, an
  ASGI app that reads the body and answers, with no Django: what Daphne itself
  costs a request. With PostgreSQL's CPU per request (the whole server's, from its
  postmaster in /proc) and wrk's (from ``wait4``), it gives how many POSTs a second
  the machine's cores leave room for (``ceiling``).

Every web configuration runs twice where a switch allows it: with the web
path's optimisations (``HEARTH_API_FAST=1``, the default) and without
(``HEARTH_API_FAST=0``: the full middleware stack and sync views, as before).
The CPU time each web process used is read from /proc. The whole set runs
``ROUNDS`` times in turn and every figure is its median round's: on a shared
machine the cores' speed drifts over minutes, and rows measured once each, one
after the other, compared one minute's machine with another's. The rate limit is off
for the bench (one client places every order); the body limit stays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db import connection

from lab.bench.harness import cpu_seconds, free_port, postmaster_pid, server_cpu_seconds
from lab.bench.queue import _django_database
from lab.bench.queue_peers import Server
from lab.bench.report import write_section
from queueing.models import Outlet, OutletState
from shop.models import MenuItem
from shop.ordering import order_submit

COMMAND = "python manage.py bench web"
DB_ENV = "HEARTH_BENCH_WEB_DB"
CONNECTIONS = 32
THREADS = 8  # in-process callers of order_submit()
DURATION = 10.0
QUICK_DURATION = 3.0
ROUNDS = 3  # every row is the median of this many rounds (1 with --quick)
ORDER = {
    "kind": "takeaway",
    "outlet": "bench",
    "lines": [{"item": "margherita", "qty": 1}],
    "customer": {"name": "Bench"},
}
POST_LUA = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Rate:
    what: str
    processes: int | None  # None: in-process
    fast: bool
    per_second: float
    errors: int
    cpu_seconds: float  # the web processes' CPU (user + system) during the run
    duration: float
    latency: str = ""
    database_cpu_seconds: float = 0.0  # the whole PostgreSQL server's
    client_cpu_seconds: float = 0.0  # wrk's

    def per_request(self, seconds: float) -> float:
        """Milliseconds of ``seconds`` (of CPU) per request answered."""
        return 1000 * seconds / max(1.0, self.per_second * self.duration)


def _seed() -> None:
    MenuItem.objects.create(slug="margherita", name="Margherita", price=9, prep_seconds=60)
    Outlet.objects.create(slug="bench", name="Bench", weight=1, token_hash="bench")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE queueing_outlet SET state = %s, last_heartbeat_at = now()",
            [OutletState.ACTIVE],
        )


def _queue_reset(*, keep: str) -> None:
    """Every row starts from the same queue: the followed order alone.

    Nothing claims the orders a row places, so the bench outlet's queue grows by
    thousands a row, and tables and indexes with it; each row starts from the same size.
    (Every answer to ``POST /api/orders`` carries the new order's ready estimate, which
    reads at most ``ESTIMATE_DEPTH`` orders of the queue ahead.) The bench sends no
    Idempotency-Key and takes no payment, so nothing else refers to them.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM queueing_orderevent WHERE order_id IN"
            " (SELECT id FROM queueing_order WHERE token <> %s)",
            [keep],
        )
        cursor.execute("DELETE FROM queueing_order WHERE token <> %s", [keep])
        # The deleted rows' index entries would otherwise lie at the head of the outlet's
        # queue, stepped over by every read of it, until autovacuum reclaimed them during
        # the next row, on its CPU.
        cursor.execute("VACUUM (ANALYZE) queueing_order, queueing_orderevent")


def in_process_rate(duration: float, *, postmaster: int) -> Rate:
    """Orders per second from ``THREADS`` threads calling order_submit() for ``duration``."""
    from django.db import connections

    done = [0] * THREADS
    errors = [0] * THREADS
    stop = time.monotonic() + duration
    # The threads stop together, and keep their connections until the clock has stopped.
    worked = threading.Barrier(THREADS + 1)
    measured = threading.Event()

    def work(i: int) -> None:
        try:
            while time.monotonic() < stop:
                try:
                    order_submit(payload=ORDER)
                    done[i] += 1
                except Exception:
                    errors[i] += 1
        finally:
            worked.wait()
            measured.wait()
            connections.close_all()

    cpu = time.process_time()
    database = server_cpu_seconds(postmaster)
    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        worked.wait()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        database = server_cpu_seconds(postmaster) - database
    finally:
        measured.set()
        for t in threads:
            t.join()
    return Rate(
        what="order_submit() in-process",
        processes=None,
        fast=True,
        per_second=sum(done) / wall,
        errors=sum(errors),
        cpu_seconds=cpu,
        duration=wall,
        database_cpu_seconds=database,
    )


@contextmanager
def web_processes(
    n: int,
    *,
    database: str,
    fast: bool,
    log_dir: Path,
    access_log: bool | None = None,
    application: str = "shop.asgi:application",
) -> Iterator[tuple[str, list[int]]]:
    """``n`` daphne processes on one shared socket, started as ``up`` starts them.

    With an access log when ``access_log`` (by default: on the path as before, not ``fast``).
    """
    if access_log is None:
        access_log = not fast
    from shop.management.commands.up import _listening_socket, web_argv

    port = free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=Server.from_django(settings.DATABASES["default"]).conninfo(database),
        DJANGO_SETTINGS_MODULE="shop.settings",
        PYTHONUNBUFFERED="1",
        HEARTH_ORDER_RATE_LIMIT="0",
        HEARTH_API_FAST="1" if fast else "0",
    )
    listening = _listening_socket("127.0.0.1", port)
    children = []
    try:
        for k in range(n):
            log = open(log_dir / f"web-{n}-{int(fast)}-{k}.log", "wb")  # noqa: SIM115
            children.append(
                (
                    subprocess.Popen(
                        web_argv(
                            listening.fileno(),
                            access_log=str(log_dir / "access.log") if access_log else None,
                            application=application,
                        ),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(listening.fileno(),),
                        # Not in the terminal's process group: a Ctrl-C reaches the bench,
                        # which stops them itself (bench scale finishes its step first).
                        start_new_session=True,
                    ),
                    log,
                )
            )
        listening.close()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"web processes did not answer on {base}")
            time.sleep(0.2)
        # Every process answers once (warm imports and the pool) before the clock starts.
        _wrk(f"{base}/api/openapi.json", duration=1.0, connections=4)
        yield base, [c.pid for c, _ in children]
    finally:
        listening.close()
        for child, _ in children:
            child.terminate()
        for child, log in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            log.close()


def _wrk(
    url: str, *, duration: float, connections: int = CONNECTIONS, script: str | None = None
) -> tuple[float, int, str, float]:
    """(requests/s, non-2xx answers and socket errors, latency p50/p99, wrk's CPU seconds)."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if script:
        argv += ["-s", script]
    child = subprocess.Popen([*argv, url], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # wrk's own CPU, as it exits
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stdout.close()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, argv)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        bad += sum(int(n) for n in socket_errors.groups())
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    latency = f"{p50.group(1) if p50 else '?'} / {p99.group(1) if p99 else '?'}"
    return rate, bad, latency, usage.ru_utime + usage.ru_stime


# The row that POSTs the same order to lab.bench.bare: Daphne's own cost, no Django.
BARE = "POST, Daphne alone"


def web_rate(
    what: str,
    *,
    processes: int,
    fast: bool,
    database: str,
    token: str,
    duration: float,
    tmp: Path,
    postmaster: int,
) -> Rate:
    """One wrk run: ``POST`` or ``GET`` through Hearth's web processes, or ``BARE``."""
    script = tmp / "post.lua"
    script.write_text(POST_LUA.format(body=json.dumps(ORDER)))
    _queue_reset(keep=token)
    application = "lab.bench.bare:application" if what == BARE else "shop.asgi:application"
    with web_processes(
        processes, database=database, fast=fast, log_dir=tmp, application=application
    ) as (base, pids):
        cpu = sum(cpu_seconds(p) for p in pids)
        database_cpu = server_cpu_seconds(postmaster)
        if what == "GET":
            run = _wrk(f"{base}/api/orders/{token}", duration=duration)
        else:
            run = _wrk(f"{base}/api/orders", duration=duration, script=str(script))
        cpu = sum(cpu_seconds(p) for p in pids) - cpu
        database_cpu = server_cpu_seconds(postmaster) - database_cpu
    rate, bad, latency, client_cpu = run
    return Rate(
        what={"POST": "POST /api/orders", "GET": "GET /api/orders/<token>"}.get(what, what),
        processes=processes,
        fast=fast,
        per_second=rate,
        errors=bad,
        cpu_seconds=cpu,
        duration=duration,
        latency=latency,
        database_cpu_seconds=database_cpu,
        client_cpu_seconds=client_cpu,
    )


def _median(runs: list[Rate]) -> Rate:
    """The run with the median rate (the lower middle of an even number)."""
    return sorted(runs, key=_per_second)[(len(runs) - 1) // 2]


def _rounds_note(rounds: int, yardsticks: list[Rate], samples: dict[str, list[Rate]]) -> str:
    """How the rows were taken, and how far apart their rounds were."""
    if rounds == 1:
        return "One round: each row is one run."
    ranges = "; ".join(
        f"{label} " + "–".join(f"{r.per_second:,.0f}" for r in sorted(runs, key=_per_second))
        for label, runs in samples.items()
    )
    return (
        f"{rounds} rounds, each the in-process rate and then every web row in turn; each "
        f"figure below is its median round's (this machine's speed drifts over minutes, so "
        f"rows taken once each, one after another, were not comparable). In-process by "
        f"round: {', '.join(f'{y.per_second:,.0f}' for y in yardsticks)}/s. Each row by "
        f"round, lowest first: {ranges}."
    )


def _per_second(rate: Rate) -> float:
    return rate.per_second


def table(rates: list[Rate], yardstick: Rate, one_before: dict[str, float]) -> str:
    rows = [
        "| what | web processes | web path | per second | × in-process | × 1 process before "
        "| CPU per request: web / PostgreSQL / wrk | p50 / p99 | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |",
        f"| {yardstick.what} ({THREADS} threads) | – | – | {yardstick.per_second:,.0f} | 1.00× | – "
        f"| {_cpu(yardstick)} | – | {yardstick.errors} |",
    ]
    for r in rates:
        posts = r.what == "POST /api/orders"
        vs_in = f"{r.per_second / yardstick.per_second:.2f}×" if posts else "–"
        base = one_before.get(r.what)
        vs_one = f"{r.per_second / base:.2f}×" if base else "–"
        rows.append(
            f"| {r.what} | {r.processes} | {_path(r)} | {r.per_second:,.0f} | {vs_in} | {vs_one} "
            f"| {_cpu(r)} | {r.latency} | {r.errors} |"
        )
    return "\n".join(rows)


def _path(r: Rate) -> str:
    return "no Django" if r.what == BARE else "optimised" if r.fast else "as before"


def _cpu(r: Rate) -> str:
    """Milliseconds of CPU per request: the web processes' (in-process: the caller's),
    PostgreSQL's and wrk's."""
    client = f"{r.per_request(r.client_cpu_seconds):.2f}" if r.processes else "–"
    return (
        f"{r.per_request(r.cpu_seconds):.2f} / {r.per_request(r.database_cpu_seconds):.2f} "
        f"/ {client} ms"
    )


def ceiling(yardstick: Rate, bare: Rate, post: Rate) -> str:
    """How many POSTs a second this machine's cores leave room for, through Daphne.

    A POST costs at least Daphne's own work (``bare``), the order's own work (the
    in-process CPU per order) and wrk's; and PostgreSQL's: at the least the in-process
    call's (a bound: no web tier does less), as measured the POST row's (the answer's
    estimate included). The cores divided by each sum.
    """
    fixed = {
        "Daphne alone": bare.per_request(bare.cpu_seconds),
        "the order's own work (in-process)": yardstick.per_request(yardstick.cpu_seconds),
        "wrk": post.per_request(post.client_cpu_seconds),
    }
    least = yardstick.per_request(yardstick.database_cpu_seconds)
    measured = post.per_request(post.database_cpu_seconds)
    cores = len(os.sched_getaffinity(0))
    said = " + ".join(f"{name} {ms:.2f} ms" for name, ms in fixed.items())

    def most(database_ms: float) -> str:
        rate = cores * 1000 / (sum(fixed.values()) + database_ms)
        return f"{rate:,.0f} POSTs/s ({rate / yardstick.per_second:.2f}× the in-process rate)"

    return (
        f"What the machine leaves room for: a POST costs at least {said} of CPU, and "
        f"PostgreSQL {least:.2f} ms at the least (the in-process call's), {measured:.2f} ms as "
        f"measured here; on {cores} cores that is at most {most(least)}, and "
        f"{most(measured)} at the costs measured."
    )


def run(*, stdout: TextIO, quick: bool = False) -> list[Rate]:
    """Measure, print the table, and keep it in docs/benchmarks.md (not with --quick)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("bench web needs wrk (Debian: apt-get install wrk)")
    name = os.environ.get(DB_ENV, "bench_web")
    duration = QUICK_DURATION if quick else DURATION
    cores = settings.HEARTH_WEB_PROCESSES
    server = Server.from_django(settings.DATABASES["default"])
    server.recreate_database(name)
    stdout.write(f"bench web: database {name}, wrk -c{CONNECTIONS}, {duration:g} s per run\n")
    load_before = os.getloadavg()
    rounds = 1 if quick else ROUNDS
    samples: dict[str, list[Rate]] = {}
    yardsticks: list[Rate] = []
    postmaster = postmaster_pid(server.conninfo(name))
    with _django_database(name), tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        _seed()
        token = order_submit(payload=ORDER)[0].token
        for round_ in range(1, rounds + 1):
            _queue_reset(keep=token)
            yardsticks.append(in_process_rate(duration, postmaster=postmaster))
            stdout.write(
                f"round {round_}/{rounds}: in-process {yardsticks[-1].per_second:,.0f} orders/s\n"
            )
            for what in ("POST", BARE, "GET"):
                configurations = [(1, False), (1, True), (cores, False), (cores, True)]
                if what == BARE:
                    configurations = [(cores, True)]
                for processes, fast in configurations:
                    rate = web_rate(
                        what,
                        processes=processes,
                        fast=fast,
                        database=name,
                        token=token,
                        duration=duration,
                        tmp=tmp,
                        postmaster=postmaster,
                    )
                    label = f"{rate.what} ×{processes} {_path(rate)}"
                    samples.setdefault(label, []).append(rate)
                    stdout.write(
                        f"{rate.what} x{processes} fast={fast}: {rate.per_second:,.0f}/s\n"
                    )
                    stdout.flush()
    yardstick = _median(yardsticks)
    rates = [_median(runs) for runs in samples.values()]
    one_before = {r.what: r.per_second for r in rates if r.processes == 1 and not r.fast}
    load_after = os.getloadavg()
    up = {r.what: r for r in rates if r.processes == cores and r.fast}
    post = up["POST /api/orders"].per_second / yardstick.per_second
    get = up["GET /api/orders/<token>"].per_second / one_before["GET /api/orders/<token>"]
    verdict = (
        f"With `up`'s default ({cores} processes, optimised): POST {post:.2f}× the in-process "
        f"rate (target 0.8×: {'met' if post >= 0.8 else 'not met'}); GET {get:.2f}× one "
        f"process as before (target 3×: {'met' if get >= 3 else 'not met'}). "
        '"As before" is the full middleware stack through Django\'s ASGI handler, with '
        "Daphne's access log written to a file as `up` used to; both paths already read the "
        "ready estimate in one statement (that change is in both rows). "
        + ceiling(yardstick, up[BARE], up["POST /api/orders"])
    )
    body = (
        f"Targets: `POST /api/orders` through the web tier ≥ 0.8× the in-process "
        f"`order_submit()` rate; `GET /api/orders/<token>` ≥ 3× one process as before. "
        f"wrk (2 threads, {CONNECTIONS} connections, {duration:g} s per row) runs on the same "
        f"{os.cpu_count()} cores as the web processes and PostgreSQL. Load average (1/5/15 min) "
        f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f} at the start, "
        f"{load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} at the end. "
        f"{_rounds_note(rounds, yardsticks, samples)}\n\n"
        f"{table(rates, yardstick, one_before)}\n\n{verdict}\n"
    )
    stdout.write(body)
    if not quick:
        write_section("web", body, command=COMMAND)
    return rates
