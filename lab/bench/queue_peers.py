"""The bench's yardsticks: fresh databases, pgbench -N, Procrastinate and PGQueuer draining no-op jobs.

This is harness code, not the product: it creates and drops its own databases
on the server Hearth uses and talks to them with plain psycopg, so the few
statements it needs (CREATE DATABASE, SHOW, VACUUM ANALYZE) live here rather
than in ``queueing.sql``, which holds the queue's own statements only.
Every system gets the same server with the same settings; nothing here
changes a durability setting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

# Settings that decide what a commit costs; printed with the figures so a reader
# can see every system ran under the same ones.
DURABILITY_SETTINGS = (
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
)


@dataclass(frozen=True)
class Server:
    """Where the bench's databases live: the server of Django's default database."""

    host: str
    port: str
    user: str
    password: str

    @classmethod
    def from_django(cls, settings_dict: dict[str, Any]) -> Server:
        return cls(
            host=str(settings_dict.get("HOST") or ""),
            port=str(settings_dict.get("PORT") or ""),
            user=str(settings_dict.get("USER") or ""),
            password=str(settings_dict.get("PASSWORD") or ""),
        )

    def conninfo(self, dbname: str) -> str:
        params = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        return make_conninfo(dbname=dbname, **{k: v for k, v in params.items() if v})

    def env(self) -> dict[str, str]:
        """Environment for libpq command-line tools (pgbench)."""
        env = dict(os.environ)
        for key, value in (
            ("PGHOST", self.host),
            ("PGPORT", self.port),
            ("PGUSER", self.user),
            ("PGPASSWORD", self.password),
        ):
            if value:
                env[key] = value
        return env

    def recreate_database(self, name: str) -> None:
        """Drop ``name`` if it exists and create it empty."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def vacuum_analyze(self, dbname: str) -> None:
        """Give the planner statistics on freshly loaded tables, the same for every system."""
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            found = {"server_version": str(version[0]) if version else "?"}
            for name in DURABILITY_SETTINGS:
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                found[name] = str(row[0]) if row else "?"
            return found


class WaitSampler:
    """Samples what active backends wait on (pg_stat_activity), every few ms.

    For the bench's database it tells whether a drain was bound by CPU, by WAL
    flushes or by a lock, and which; for the rest of the server it counts the
    other work that was running (on a shared machine, someone else's test).
    """

    QUERY = """
        SELECT datname = %s, coalesce(wait_event_type || ':' || wait_event, 'on CPU')
        FROM pg_stat_activity
        WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
    """

    def __init__(self, server: Server, dbname: str, *, every: float = 0.005) -> None:
        self.server, self.dbname, self.every = server, dbname, every
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self.elsewhere = 0  # active backends of other databases, summed over samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="wait-sampler", daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self.server.conninfo("postgres"), autocommit=True) as conn:
            while not self._stop.is_set():
                for ours, event in conn.execute(self.QUERY, [self.dbname]):
                    if ours:
                        self.counts[event] += 1
                    else:
                        self.elsewhere += 1
                self.samples += 1
                self._stop.wait(self.every)

    def summary(self, top: int = 3) -> str:
        total = sum(self.counts.values())
        if not total:
            return "no samples"
        ours = ", ".join(f"{event} {n / total:.0%}" for event, n in self.counts.most_common(top))
        return (
            f"{ours} (other databases: {self.elsewhere / max(self.samples, 1):.1f} active backends)"
        )


@dataclass(frozen=True)
class Drained:
    """A peer draining its queue: how many jobs ran, in how long, how it was configured."""

    system: str
    mode: str
    jobs: int
    seconds: float
    config: str

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def pgbench_init(server: Server, dbname: str) -> None:
    """A fresh pgbench database, scale 1."""
    server.recreate_database(dbname)
    subprocess.run(
        [_pgbench(), "-i", "-q", "-s", "1", dbname],
        env=server.env(),
        check=True,
        capture_output=True,
    )


def _pgbench() -> str:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise RuntimeError("pgbench is not on PATH (Debian: apt-get install postgresql-client)")
    return pgbench


def pgbench_tps(server: Server, dbname: str, *, clients: int, seconds: int) -> tuple[float, str]:
    """``pgbench -N`` on a ``pgbench_init`` database; returns (tps, the command as shown).

    -N skips the branch and teller updates, so clients hardly contend: what is
    measured is mostly how many commits per second the server can make.
    """
    pgbench, env = _pgbench(), server.env()
    command = [pgbench, "-N", "-c", str(clients), "-j", str(clients), "-T", str(seconds), dbname]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise RuntimeError(f"could not read tps from pgbench output:\n{done.stdout}")
    shown = f"pgbench -N -c {clients} -j {clients} -T {seconds}"
    return float(match.group(1)), shown


def procrastinate_drain(server: Server, dbname: str, *, jobs: int, concurrency: int = 4) -> Drained:
    """Defer ``jobs`` no-op jobs in bulk, then time one worker (``concurrency``) draining them."""
    return asyncio.run(_procrastinate_drain(server, dbname, jobs=jobs, concurrency=concurrency))


async def _procrastinate_drain(
    server: Server, dbname: str, *, jobs: int, concurrency: int
) -> Drained:
    from procrastinate import App, PsycopgConnector

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    server.recreate_database(dbname)
    app = App(connector=PsycopgConnector(conninfo=server.conninfo(dbname)))
    ran = 0

    @app.task(name="noop")
    async def noop() -> None:
        nonlocal ran
        ran += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, jobs, 1000):
            await noop.batch_defer_async(*({} for _ in range(min(1000, jobs - start))))
        server.vacuum_analyze(dbname)
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        seconds = time.perf_counter() - started
    succeeded = _count(
        server, dbname, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    )
    if ran != jobs or succeeded != jobs:
        raise RuntimeError(f"procrastinate ran {ran} and recorded {succeeded} of {jobs} jobs")
    return Drained(
        system="Procrastinate",
        mode=f"concurrency {concurrency}",
        jobs=jobs,
        seconds=seconds,
        config=f"procrastinate {_version('procrastinate')}, PsycopgConnector, one worker, "
        f"concurrency={concurrency}, async no-op task",
    )


def pgqueuer_drain(server: Server, dbname: str, *, jobs: int, in_flight: int | None) -> Drained:
    """Enqueue ``jobs`` no-op jobs in bulk, then time one QueueManager draining them.

    ``in_flight``: at most that many jobs picked at once (``max_concurrent_tasks``,
    with ``batch_size`` half of it, the largest PGQueuer accepts); None runs its
    defaults (batch_size 10, no cap). PGQueuer runs on asyncpg, the driver it
    recommends (about twice its psycopg driver's rate here), so it is not
    handicapped by a driver choice.
    """
    return asyncio.run(_pgqueuer_drain(server, dbname, jobs=jobs, in_flight=in_flight))


async def _pgqueuer_drain(
    server: Server, dbname: str, *, jobs: int, in_flight: int | None
) -> Drained:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    server.recreate_database(dbname)
    connect = {
        "host": server.host or None,
        "port": int(server.port) if server.port else None,
        "user": server.user or None,
        "password": server.password or None,
        "database": dbname,
    }
    setup = await asyncpg.connect(**connect)
    try:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        for start in range(0, jobs, 1000):
            size = min(1000, jobs - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    finally:
        await setup.close()
    server.vacuum_analyze(dbname)

    ran = 0
    conn = await asyncpg.connect(**connect)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran
            ran += 1

        batch_size = max(in_flight // 2, 1) if in_flight else 10
        started = time.perf_counter()
        await qm.run(
            mode=QueueExecutionMode.drain, batch_size=batch_size, max_concurrent_tasks=in_flight
        )
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    left = _count(server, dbname, "SELECT count(*) FROM pgqueuer")
    if ran != jobs or left:
        raise RuntimeError(f"pgqueuer ran {ran} of {jobs} jobs, {left} left in its queue")
    cap = f"max_concurrent_tasks={in_flight}" if in_flight else "no cap (default)"
    return Drained(
        system="PGQueuer",
        mode=f"≤{in_flight} in flight" if in_flight else "default batching",
        jobs=jobs,
        seconds=seconds,
        config=f"pgqueuer {_version('pgqueuer')} on asyncpg {_version('asyncpg')}, one QueueManager, "
        f"batch_size={batch_size}, {cap}, async no-op entrypoint",
    )


def _count(server: Server, dbname: str, query: str) -> int:
    with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
