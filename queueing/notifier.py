"""The notifier: a loop that runs ``notifier_tick`` while it leads.

Any number of notifiers may run; one leads. Leadership is a session-level
PostgreSQL advisory lock held on a connection the notifier opens for nothing
else: when the leader dies, its connection dies, PostgreSQL releases the lock,
and a standby (which tries again every tick) takes over within a tick or two.
The tick itself runs on Django's connection; every step of it re-checks its rows
under their locks, so even a leader that lost its lock in the middle of a tick
cannot change anything twice.

The detector never trusts its own blindness. After it starts, takes over, comes
back from a database outage, or finds that more than a timeout passed between
two of its ticks (it was paused: SIGSTOP, a stalled VM), it declares nobody down
and reaps no lease until a full timeout has passed on the database clock, so
outlets whose heartbeats could not land, or were not looked at, get a fair
chance first (Cassandra's rule for a paused failure detector).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from django.db import connection as django_connection

from queueing import sql
from queueing.models import NotifierStatus
from queueing.services.failover import TickReport, database_now, notifier_tick

log = logging.getLogger("hearth.notifier")

# The advisory lock key of the notifier's leadership ("HEARTH" in ASCII, as a bigint).
LEADER_KEY = 0x484541525448
# Reconnect backoff: from the first to the largest pause between attempts, in seconds.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def leader_name() -> str:
    """host:pid, how the operations view names the leading notifier."""
    return f"{socket.gethostname()}:{os.getpid()}"


def leader_conninfo() -> dict[str, Any]:
    """psycopg.connect() arguments for a connection of our own to Django's database."""
    s = django_connection.settings_dict
    params: dict[str, Any] = {
        "dbname": s["NAME"],
        "user": s["USER"] or None,
        "password": s["PASSWORD"] or None,
        "host": s["HOST"] or None,
        "port": s["PORT"] or None,
        "application_name": "hearth-notifier-leader",
        "connect_timeout": 5,
    }
    params.update(s.get("OPTIONS") or {})
    return {k: v for k, v in params.items() if v is not None}


@dataclass
class Notifier:
    """One notifier process: leads when it can, ticks while it leads."""

    tick: float = field(default_factory=lambda: float(settings.HEARTH_NOTIFIER_TICK))
    timeout: float = field(default_factory=lambda: float(settings.HEARTH_HEARTBEAT_TIMEOUT))
    name: str = field(default_factory=leader_name)
    leading: bool = False
    _conn: psycopg.Connection[Any] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    # Database time from which a full timeout must pass before anyone is declared down.
    _grace_from: datetime | None = None
    _grace_reason: str = ""
    _last_tick_at: datetime | None = None
    _last_held: list[str] = field(default_factory=list)
    _outage: bool = False
    _led_before: bool = False

    # --- leadership -------------------------------------------------------

    def _leader_connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(**leader_conninfo(), autocommit=True)
        return self._conn

    def _lead(self) -> bool:
        """Hold the lock, or take it when free; False while another notifier leads."""
        conn = self._leader_connection()
        if self.leading:
            # The session lock lives as long as this connection; a round trip proves both.
            conn.execute("SELECT 1")
            return True
        row = conn.execute(sql.LEADER_TRY, {"key": LEADER_KEY}).fetchone()
        if not (row and row[0]):
            return False
        self.leading = True
        self._grace(
            "the database coming back"
            if self._outage
            else ("taking over" if self._led_before else "starting")
        )
        self._outage = False
        self._led_before = True
        now = database_now()
        NotifierStatus.objects.update_or_create(
            pk=1, defaults={"leader": self.name, "leader_since": now, "last_tick_at": now}
        )
        log.info(
            "notifier %s leads now (tick %gs, heartbeat timeout %gs)",
            self.name,
            self.tick,
            self.timeout,
        )
        return True

    def release(self) -> None:
        """Give up the leader lock and close its connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.leading and not conn.closed:
                conn.execute(sql.LEADER_RELEASE, {"key": LEADER_KEY})
        except psycopg.Error:
            pass  # the lock goes with the connection anyway
        finally:
            self.leading = False
            conn.close()

    def _grace(self, reason: str) -> None:
        """Start a grace period at the next tick's database time."""
        self._grace_from = None
        self._grace_reason = reason
        self._last_tick_at = None

    # --- ticking ----------------------------------------------------------

    def run_once(self, *, grace: bool = False) -> TickReport | None:
        """Lead if possible and run one tick; None when another notifier leads.

        ``grace`` False (the default for a single tick run by hand) lets this tick
        declare silent outlets down at once.
        """
        if not self._lead():
            return None
        now = database_now()
        if not grace:
            self._grace_from = now - timedelta(seconds=self.timeout)
        return self._tick(now)

    def _tick(self, now: datetime) -> TickReport:
        if (
            self._last_tick_at is not None
            and (now - self._last_tick_at).total_seconds() > self.timeout
        ):
            log.warning(
                "%.1fs passed since the last tick (more than the %gs timeout): this notifier was "
                "paused; nobody is declared down for the next %gs",
                (now - self._last_tick_at).total_seconds(),
                self.timeout,
                self.timeout,
            )
            self._grace_from = None
            self._grace_reason = "pause"
        if self._grace_from is None:
            self._grace_from = now
            log.info(
                "grace after %s: nobody is declared down and no lease is reaped for %gs",
                self._grace_reason,
                self.timeout,
            )
        self._last_tick_at = now
        may_declare_down = (now - self._grace_from).total_seconds() >= self.timeout
        report = notifier_tick(now=now, may_declare_down=may_declare_down, timeout=self.timeout)
        if report.held and not may_declare_down and report.held != self._last_held:
            log.info(
                "silent but not declared down during the grace after %s: %s",
                self._grace_reason,
                ", ".join(report.held),
            )
        self._last_held = report.held
        if not NotifierStatus.objects.filter(pk=1).update(last_tick_at=now, leader=self.name):
            NotifierStatus.objects.create(
                pk=1, leader=self.name, leader_since=now, last_tick_at=now
            )
        return report

    def _step(self) -> None:
        """One pass of the loop: stay or become leader, tick if leading."""
        close_old_connections()
        if self._lead():
            self._tick(database_now())

    def run(self) -> None:
        """Loop until stop() (SIGTERM, SIGINT); reconnects by itself when the database goes away."""
        log.info("notifier %s started; standing by for the leader lock", self.name)
        failures = 0
        down_since = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._step()
            except CONNECTION_ERRORS as exc:
                failures += 1
                if failures == 1:
                    down_since = started
                self._drop_connections()
                pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                log.warning(
                    "database unreachable (%s); reconnect attempt %d in %.1fs",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    failures,
                    pause,
                )
                self._stop.wait(pause)
                continue
            except DatabaseError:
                # A statement failed on a live connection (a deadlock, a serialisation
                # failure): log it and tick again; the next tick re-reads everything.
                log.exception("tick failed; trying again next tick")
            if failures:
                log.info(
                    "reconnected to the database after %d attempts (%.1fs); %s",
                    failures,
                    time.monotonic() - down_since,
                    "leading again" if self.leading else "standing by",
                )
                failures = 0
                self._outage = False  # a later takeover is a takeover, not a return
            self._stop.wait(max(0.0, self.tick - (time.monotonic() - started)))
        self.release()
        log.info("notifier %s stopped", self.name)

    def _drop_connections(self) -> None:
        was_leading = self.leading
        self.release()
        try:
            django_connection.close()
        except CONNECTION_ERRORS:
            pass
        self._outage = True
        if was_leading:
            log.warning("notifier %s lost its connection: no longer leading", self.name)

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("notifier %s: %s, stopping", self.name, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
