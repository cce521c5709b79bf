"""The notifier: a loop that runs ``notifier_tick`` while it leads.

Any number of notifiers may run; one leads. Leadership is a lease with a term in
the one ``NotifierStatus`` row, on the database clock: a notifier takes the
lease when it is free or lapsed (the term grows), renews it at every tick under
its own term, and gives it up on a clean stop. A leader that stops ticking,
however it stopped (killed, frozen by SIGSTOP or a paused VM, cut off by the
network), loses the lease ``HEARTH_LEADER_LEASE`` after its last renewal, and a
standby (which tries every tick) takes over within a tick of that. A woken
ex-leader can change nothing: every transaction of a tick is fenced by the term
(``queueing.services.leadership``); its first fence matches nothing, it logs
"lost leadership (term N)" and stands by. A takeover waits for a fenced
transaction in flight; one whose process froze inside it is ended by PostgreSQL
after ``HEARTH_DB_IDLE_IN_TRANSACTION_TIMEOUT``. Worst case, a standby leads
max(lease, idle-in-transaction timeout + one tick's work) + one tick after the
leader's last renewal (docs/architecture.md).

The detector never trusts its own blindness. After it starts, takes over, comes
back from a database outage, or finds that more than a timeout passed between
two of its ticks (it was paused: SIGSTOP, a stalled VM), or sees its
mass-silence alert clear (outlets wake one by one), it declares nobody down
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

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from django.db import connection as django_connection

from queueing import sql
from queueing.db import execute, fetch_one, timeout_logged
from queueing.services.failover import TickReport, notifier_tick
from queueing.services.leadership import LostLeadership

log = logging.getLogger("hearth.notifier")

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


@dataclass
class Notifier:
    """One notifier process: leads when it can, ticks while it leads."""

    tick: float = field(default_factory=lambda: float(settings.HEARTH_NOTIFIER_TICK))
    timeout: float = field(default_factory=lambda: float(settings.HEARTH_HEARTBEAT_TIMEOUT))
    name: str = field(default_factory=leader_name)
    lease: float = field(default_factory=lambda: float(settings.HEARTH_LEADER_LEASE))
    leading: bool = False
    # The term this notifier leads under (None while it stands by).
    term: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    # Database time from which a full timeout must pass before anyone is declared down.
    _grace_from: datetime | None = None
    _grace_reason: str = ""
    _last_tick_at: datetime | None = None
    _last_held: list[str] = field(default_factory=list)
    _outage: bool = False
    _led_before: bool = False

    def __post_init__(self) -> None:
        if self.lease < 2 * self.tick:
            log.warning(
                "leader lease %gs is shorter than two ticks (%gs): a slow tick will lose it",
                self.lease,
                self.tick,
            )

    # --- leadership -------------------------------------------------------

    def _lead(self) -> datetime | None:
        """Renew our lease, or take it when free or lapsed; the database's now, None if another leads."""
        if self.term is not None:
            row = fetch_one(
                sql.LEADER_RENEW, {"term": self.term, "lease": self.lease, "leader": self.name}
            )
            if row is not None:
                renewed: datetime = row["now"]
                return renewed
            self._lost(self.term, "its lease renewal matched nothing")
        row = fetch_one(sql.LEADER_TAKE, {"leader": self.name, "lease": self.lease})
        if row is None:
            return None
        self.term, self.leading = row["term"], True
        self._grace(
            "the database coming back"
            if self._outage
            else ("taking over" if self._led_before else "starting")
        )
        self._outage = False
        self._led_before = True
        log.info(
            "notifier %s leads now (term %d; lease %gs, tick %gs, heartbeat timeout %gs)",
            self.name,
            self.term,
            self.lease,
            self.tick,
            self.timeout,
        )
        now: datetime = row["now"]
        return now

    def _lost(self, term: int, why: str) -> None:
        """Stand by: our term no longer holds the lease, so nothing more is written under it."""
        self.term, self.leading = None, False
        current = None
        try:
            current = fetch_one(sql.LEADER_CURRENT, {})
        except DatabaseError:
            pass  # the log line below is enough without who leads now
        leads_now = (
            f"{current['leader']} leads now (term {current['term']})"
            if current and current["valid"] and current["term"] != term
            else "nobody holds the lease now"
        )
        log.warning(
            "notifier %s lost leadership (term %d): %s; it writes nothing more under that term "
            "and stands by (%s)",
            self.name,
            term,
            why,
            leads_now,
        )

    def _fence_failed(self, term: int) -> None:
        """A fenced write of our tick matched nothing: the lease lapsed, or another took it."""
        try:
            current = fetch_one(sql.LEADER_CURRENT, {})
        except DatabaseError:
            current = None
        if current is not None and current["term"] == term:
            # Nobody took it: the tick outlasted the lease (a slow or starved machine).
            # No other term can have written, so renewing it next tick is safe.
            log.warning(
                "notifier %s: the lease of term %d lapsed during its tick (longer than the "
                "%gs lease); the rest of the tick was not written; it renews the lease now",
                self.name,
                term,
                self.lease,
            )
            return
        self._lost(term, "a fenced write of its tick matched nothing")

    def release(self) -> None:
        """Give the lease up, so a standby takes over at its next tick."""
        term, self.term, self.leading = self.term, None, False
        if term is None:
            return
        try:
            execute(sql.LEADER_RELEASE, {"term": term})
            log.info("notifier %s released the lease (term %d)", self.name, term)
        except DatabaseError:
            pass  # the lease lapses by itself

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
        now = self._lead()
        if now is None:
            return None
        if not grace:
            self._grace_from = now - timedelta(seconds=self.timeout)
        return self._tick(now)

    def _tick(self, now: datetime) -> TickReport:
        """One tick at database time ``now``. Caller leads (``self.term``)."""
        assert self.term is not None
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
        report = notifier_tick(
            now=now, may_declare_down=may_declare_down, timeout=self.timeout, term=self.term
        )
        if report.held and not may_declare_down and report.held != self._last_held:
            log.info(
                "silent but not declared down during the grace after %s: %s",
                self._grace_reason,
                ", ".join(report.held),
            )
        self._last_held = report.held
        if report.alert_cleared:
            # Outlets wake from a mass silence one by one, and their stations renew their
            # leases only once awake: give them the grace a paused detector gives everyone.
            self._grace("the mass-silence alert clearing")
        if not execute(sql.LEADER_TICKED, {"now": now, "term": self.term}):
            raise LostLeadership(self.term)
        return report

    def _step(self) -> None:
        """One pass of the loop: stay or become leader, tick if leading."""
        close_old_connections()
        now = self._lead()
        if now is not None:
            self._tick(now)

    def run(self) -> None:
        """Loop until stop() (SIGTERM, SIGINT); reconnects by itself when the database goes away."""
        log.info("notifier %s started; standing by for the leader's lease", self.name)
        failures = 0
        down_since = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._step()
            except LostLeadership as exc:
                self._fence_failed(exc.term)
            except CONNECTION_ERRORS as exc:
                failures += 1
                if failures == 1:
                    down_since = started
                    timeout_logged(exc, where=f"notifier {self.name}")
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
            except DatabaseError as exc:
                # A statement failed on a live connection (a deadlock, a timeout): log it
                # and tick again; the next tick re-reads everything.
                if timeout_logged(exc, where=f"notifier {self.name}: tick") is None:
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
        try:
            self.release()
        except CONNECTION_ERRORS:
            pass  # the lease lapses by itself
        log.info("notifier %s stopped", self.name)

    def _drop_connections(self) -> None:
        """After a connection error: reconnect later, keeping the term (the lease may still be ours)."""
        try:
            django_connection.close()
        except CONNECTION_ERRORS:
            pass
        if not self._outage and self.leading:
            log.warning(
                "notifier %s lost its connection while leading (term %s); it renews the lease "
                "under that term when the database is back, or stands by if another took it",
                self.name,
                self.term,
            )
        self._outage = True
        self._grace("the database coming back")

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("notifier %s: %s, stopping", self.name, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
