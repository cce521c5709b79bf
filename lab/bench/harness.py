"""What the live benches share: a database of their own, child processes, their CPU, quantiles.

A bench that drives real web processes (``sockets``, ``idle``, ``scale``) runs on a
fresh database on the same server, starts its processes as children with their
output in log files, reads their CPU time from ``/proc`` and needs many open files.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent


def _url(settings_dict: dict[str, Any], name: str) -> str:
    params = {
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
    }
    return make_conninfo(dbname=name, **{k: v for k, v in params.items() if v})


@contextmanager
def bench_database(name: str) -> Iterator[str]:
    """A fresh database ``name`` on the same server, migrated, as Django's default; yields its conninfo."""
    server = settings.DATABASES["default"]
    with psycopg.connect(_url(server, "postgres"), autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
        )
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    connections.close_all()
    saved = server["NAME"]
    server["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield _url(server, name)
    finally:
        connections.close_all()
        server["NAME"] = saved
        connections["default"].settings_dict["NAME"] = saved


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A subprocess with its output in a log file."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            args, cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def wait_for_port(port: int, child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited; see {child.log_path}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not open port {port}; see {child.log_path}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postmaster_pid(conninfo: str) -> int:
    """The pid of the PostgreSQL server that ``conninfo`` reaches (same machine): its backends' parent."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def server_cpu_seconds(postmaster: int) -> float:
    """User + system CPU seconds so far of one PostgreSQL server, all its processes.

    The postmaster's own, every process it has reaped (backends and autovacuum workers
    that came and went: their CPU is added to its children's counts when they exit), and
    every one still running. Linux /proc; 0 once the server is gone.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        own = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = sum(int(own[k]) for k in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile (then counted in the postmaster's children)
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def resident_mib(pid: int) -> float:
    """A process's resident memory in MiB (Linux /proc; 0 elsewhere or once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
    return int(kib) / 1024


def raise_open_files() -> int:
    """The soft open-files limit raised to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds == seconds else "–"
