"""One notifier tick: silent outlets go down and their orders move; expired leases move on.

Time is the database clock (or the ``now`` a test passes in), never the
notifier's own, so a notifier on a machine with a skewed clock cannot declare a
live outlet dead. Each outlet is taken down in its own short transaction that
re-checks its silence under the outlet's row lock, so a heartbeat that lands
while the tick runs wins. Every transaction of a tick starts with the leader's
term fence (``queueing.services.leadership``), so a leader that lost its lease
mid-tick (frozen, then woken after a takeover) changes nothing.

Two safety rules keep a fault of the detector from looking like a mass outage:
the caller says whether it may act on silence yet (grace after start, takeover
or a database outage), and when more than half of the live outlets fall silent
at once (quiet for half the timeout, so that outlets cut off together but whose
last heartbeats were an interval apart count together) nobody is declared down
and an alert is raised instead. While either
rule holds an outlet back, the leases of its claims are left alone too: its
stations could not renew them for the same reason it could not heartbeat.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import fetch_all, fetch_one
from queueing.models import NotifierStatus, Outlet, OutletState
from queueing.services.leadership import leader_fence
from queueing.services.outlets import outlet_event, outlet_take_down
from queueing.services.routing import moves_described, orders_move

log = logging.getLogger("hearth.notifier")

BATCH = 1000


@dataclass
class TickReport:
    """What one tick decided; the notifier logs it and tests assert on it."""

    now: datetime | None = None
    down: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    rerouted: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    expired: int = 0
    released: int = 0
    attention: int = 0
    assigned: int = 0
    stranded: int = 0
    back: list[str] = field(default_factory=list)
    alert: str = ""
    # The mass-silence alert ended at this tick: the caller waits a full timeout before acting.
    alert_cleared: bool = False


def database_now() -> datetime:
    row = fetch_one(sql.DATABASE_NOW, {})
    assert row is not None
    now: datetime = row["now"]
    return now


def notifier_tick(
    *,
    now: datetime | None = None,
    may_declare_down: bool = True,
    timeout: float | None = None,
    term: int | None = None,
) -> TickReport:
    """Run one tick of the failure detector and the lease reaper under the leader's ``term``.

    With ``may_declare_down`` False (the notifier's grace period) nobody is declared
    down and no lease is reaped; returning outlets and waiting orders still go ahead.
    Every transaction is fenced by ``term`` (None: unfenced, for tests that drive the
    tick by hand); LostLeadership stops the tick at the first one that finds it stale.
    """
    now = now or database_now()
    timeout = settings.HEARTH_HEARTBEAT_TIMEOUT if timeout is None else timeout
    report = TickReport(now=now)
    held_ids = _silent_outlets_down(
        now=now, timeout=timeout, may_declare_down=may_declare_down, report=report, term=term
    )
    _stranded_orders_move(report=report, term=term)
    _returning_outlets_activate(now=now, timeout=timeout, report=report, term=term)
    if may_declare_down and not report.alert_cleared:
        _expired_leases_move(now=now, held_outlet_ids=held_ids, report=report, term=term)
    _waiting_orders_assign(report=report, term=term)
    with transaction.atomic():
        leader_fence(term=term)
        fetch_all(sql.HEARTBEATS_PRUNE, {"now": now, "keep": max(600.0, timeout * 4)})
    return report


def _silent_outlets_down(
    *, now: datetime, timeout: float, may_declare_down: bool, report: TickReport, term: int | None
) -> set[int]:
    """Declare silent outlets down; returns the ids of silent outlets held back instead."""
    silent = fetch_all(sql.OUTLETS_SILENT, {"now": now, "timeout": timeout})
    if not silent:
        report.alert_cleared = _alert_set("", now=now, term=term)
        return set()
    slugs = [r["slug"] for r in silent]
    if not may_declare_down:
        report.held = slugs
        return {r["id"] for r in silent}
    live = Outlet.objects.filter(state__in=[OutletState.ACTIVE, OutletState.DRAINING]).count()
    # Outlets cut off together still cross the timeout up to one heartbeat interval
    # apart; counting only those past it would take the first down alone, then the
    # next, and so on. An outlet quiet for half the timeout already counts as silent.
    quiet = fetch_all(sql.OUTLETS_SILENT, {"now": now, "timeout": timeout / 2})
    if len(quiet) * 2 > live:
        report.held = slugs
        report.alert = (
            f"{len(quiet)} of {live} outlets fell silent at once "
            f"({', '.join(r['slug'] for r in quiet)}); "
            "nobody was declared down: check the network, or mark outlets down by hand"
        )
        if _alert_set(report.alert, now=now, term=term):
            log.warning("ALERT %s", report.alert)
        return {r["id"] for r in silent}
    if _alert_set("", now=now, term=term):
        # The mass silence is ending, and outlets are heard from again one by one: those
        # not heard from yet are part of the same outage, not a minority that died. Hold
        # them (and every lease) now; the notifier then waits a full timeout (its grace).
        report.alert_cleared = True
        report.held = slugs
        return {r["id"] for r in silent}
    for row in silent:
        result = outlet_take_down(
            outlet_id=row["id"],
            reason=f"no heartbeat for {timeout:g}s",
            silent_before=now,
            timeout=timeout,
            term=term,
        )
        if result is None:  # it heartbeated (or a manager acted) while we looked
            continue
        moved, cancelled = result
        report.down.append(row["slug"])
        report.cancelled += len(cancelled)
        slugs_by_id = dict(Outlet.objects.values_list("id", "slug"))
        for ticket in moved:
            report.rerouted[slugs_by_id[ticket.outlet_id] if ticket.outlet_id else "(waiting)"] += 1
    return set()


def _stranded_orders_move(*, report: TickReport, term: int | None) -> None:
    """Move open orders that reached an outlet after it went down.

    Placing an order reads the outlet's state without locking it, so an order (or a
    move) that chose an outlet just before it was taken down can commit just after
    the take-down moved its orders. Each tick sweeps those up, as the take-down would have.
    """
    gone = list(
        Outlet.objects.filter(state__in=[OutletState.DOWN, OutletState.RETIRED]).values_list(
            "id", flat=True
        )
    )
    if not gone:
        return
    with transaction.atomic():
        leader_fence(term=term)
        rows = fetch_all(sql.ORDERS_TO_MOVE, {"outlet_ids": gone, "order_ids": []})
        if not rows:
            return
        moved, cancelled = orders_move(rows=rows, reason="its outlet is down")
    report.stranded = len(rows)
    report.cancelled += len(cancelled)
    log.warning(
        "%d orders reached outlets after they went down: %d rerouted (%s), %d takeaway cancelled",
        len(rows),
        len(moved),
        moves_described(moved),
        len(cancelled),
    )


def _expired_leases_move(
    *, now: datetime, held_outlet_ids: set[int], report: TickReport, term: int | None
) -> None:
    with transaction.atomic():
        leader_fence(term=term)
        rows = fetch_all(
            sql.LEASES_EXPIRED,
            {"now": now, "limit": BATCH, "held_outlet_ids": sorted(held_outlet_ids)},
        )
        if not rows:
            return
        # A ready order is made: it loses its holder and waits at its outlet's pass
        # for the next claim to hand it over (a dead outlet's ready orders are moved
        # by its take-down, not here).
        ready = [r["id"] for r in rows if r["state"] == "ready"]
        if ready:
            fetch_all(
                sql.READY_RELEASE,
                {
                    "ids": ready,
                    "event_type": "lease_expired",
                    "detail": Jsonb({"reason": "lease expired", "waiting": "handover"}),
                },
            )
        rows = [r for r in rows if r["state"] != "ready"]
        limit = settings.HEARTH_MAX_ATTEMPTS
        give_up = [r["id"] for r in rows if r["attempts"] + 1 >= limit]
        retry = [r for r in rows if r["attempts"] + 1 < limit]
        if give_up:
            fetch_all(
                sql.ORDERS_ATTENTION,
                {
                    "ids": give_up,
                    "event_type": "attention",
                    "detail": Jsonb({"reason": f"lease expired {limit} times"}),
                },
            )
        moved, _ = orders_move(
            rows=retry,
            reason="lease expired",
            exclude_current=True,
            count_attempt=True,
            outlet_lost=False,
            event_type="lease_expired",
        )
    report.expired = len(rows) + len(ready)
    report.attention = len(give_up)
    report.released = len(ready)
    log.info(
        "lease expired on %d orders (%s): %d moved on (%s), %d set aside as needing attention, "
        "%d ready ones wait at their pass for a station to hand them over",
        len(rows) + len(ready),
        ", ".join(f"order {r['id']}" for r in rows[:10]) + (", ..." if len(rows) > 10 else ""),
        len(moved),
        moves_described(moved),
        len(give_up),
        len(ready),
    )


def _waiting_orders_assign(*, report: TickReport, term: int | None) -> None:
    if not Outlet.objects.filter(state=OutletState.ACTIVE).exists():
        return
    with transaction.atomic():
        leader_fence(term=term)
        rows = fetch_all(sql.ORDERS_WAITING, {"limit": BATCH})
        if not rows:
            return
        moved, _ = orders_move(
            rows=rows, reason="an outlet is available again", wait_if_no_outlet=False
        )
    report.assigned = len(moved)
    if moved:
        log.info("%d waiting orders assigned (%s)", len(moved), moves_described(moved))


def _returning_outlets_activate(
    *, now: datetime, timeout: float, report: TickReport, term: int | None
) -> None:
    with transaction.atomic():
        leader_fence(term=term)
        rows = fetch_all(
            sql.OUTLETS_BACK,
            {
                "now": now,
                "guard": settings.HEARTH_FLAP_GUARD,
                "beats": settings.HEARTH_FLAP_GUARD_BEATS,
                "timeout": timeout,
            },
        )
        for row in rows:
            outlet = Outlet(pk=row["id"], slug=row["slug"])
            outlet_event(outlet=outlet, state=row["state"], detail={"action": "back"})
            report.back.append(row["slug"])
            log.info(
                "outlet %s is back (heartbeating without a break for %gs): %s again, new orders only",
                row["slug"],
                settings.HEARTH_FLAP_GUARD,
                row["state"],
            )


def _alert_set(alert: str, *, now: datetime, term: int | None) -> bool:
    """Store the notifier's alert for the operations view; True when it changed."""
    with transaction.atomic():
        leader_fence(term=term)
        status, _ = NotifierStatus.objects.get_or_create(pk=1)
        if status.alert == alert:
            return False
        NotifierStatus.objects.filter(pk=1).update(alert=alert, alert_since=now if alert else None)
    if not alert:
        log.info("alert cleared: %s", status.alert)
    return True
