"""Claims and the fence.

A claim is ``(order, fence)``. Claiming bumps the order's fence; every write
that acts on a claim (ready, complete, recall, lease renewal) names the fence it
holds and matches the row only when that fence is still the order's fence. When
the notifier moves an order (its outlet died, or the lease ran out) it bumps the
fence too, so a station that wakes up later can change nothing: its writes match
no row and are refused as stale. Nothing needs a lock held across the cooking.

A claim lives as long as its holder: the holder renews its lease (an agent per
claim, a kitchen screen for its whole station while its socket is open), a ready
order keeps its holder's lease until it is handed over, and a holder that restarts
hands back at once what its stations held.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from psycopg.errors import LockNotAvailable
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import execute, fetch_all, fetch_one
from queueing.errors import (
    Forbidden,
    InvalidState,
    NotFound,
    QueueError,
    StaleFence,
    TicketTaken,
)
from queueing.models import Outlet
from queueing.tickets import Ticket

Refusal = StaleFence | NotFound | InvalidState | Forbidden


def _lease_seconds(lease: float | None) -> float:
    return float(settings.HEARTH_LEASE_SECONDS if lease is None else lease)


def order_claim_next(
    *,
    outlet: Outlet,
    station: str,
    limit: int = 1,
    lease: float | None = None,
    resend_held: bool = False,
) -> list[Ticket]:
    """Claim up to ``limit`` orders of the outlet, ready ones without a holder first; [] when none.

    A ticket that comes back ``ready`` is made already: the station hands it over.
    With ``resend_held`` (an agent's station, which works one batch at a time), what
    the station already holds comes first with its own fence, so a claim whose answer
    was lost is answered again on the retry instead of waiting a lease.
    """
    if limit < 1:
        # LIMIT 0 would claim nothing and say "queue empty"; a negative one is a SQL error.
        raise QueueError(f"limit must be at least 1, got {limit}", field="limit")
    params = {
        "outlet_id": outlet.pk,
        "station": station,
        "limit": limit,
        "lease": _lease_seconds(lease),
        "event_type": "claimed",
    }
    held: list[Ticket] = []
    if resend_held:
        held = [Ticket.from_row(r) for r in fetch_all(sql.STATION_HELD, params)]
        if len(held) >= limit:
            return held
    rows = fetch_all(sql.CLAIM_NEXT, {**params, "limit": limit - len(held)})
    return held + [Ticket.from_row(r) for r in rows]


def station_claims_renew(*, outlet: Outlet, station: str, lease: float | None = None) -> int:
    """Renew every claim the station holds at the outlet (its screen is still there); how many."""
    return execute(
        sql.STATION_RENEW,
        {"outlet_id": outlet.pk, "station": station, "lease": _lease_seconds(lease)},
    )


def stations_release(*, outlet: Outlet, stations: Sequence[str], reason: str) -> list[Ticket]:
    """Hand back at once what these stations held: being made goes back to the queue, ready stays.

    Ready orders stay at the pass without a holder; the outlet's next claim hands them over.
    """
    rows = fetch_all(
        sql.STATIONS_RELEASE,
        {
            "outlet_id": outlet.pk,
            "stations": list(stations),
            "reason": reason,
            "event_type": "released",
        },
    )
    return [Ticket.from_row(r) for r in rows]


def order_claim_ticket(
    *, outlet: Outlet, token: str, station: str, lease: float | None = None
) -> Ticket:
    """Claim one named ticket of the outlet; TicketTaken when another station has it."""
    with transaction.atomic():
        try:
            row = fetch_one(sql.TICKET_LOCK, {"token": token})
        except OperationalError as exc:
            # Only NOWAIT's refusal means another station is claiming it this instant;
            # any other failure (a lost connection, a timeout) is not a "taken".
            if not isinstance(exc.__cause__, LockNotAvailable):
                raise
            raise TicketTaken("this ticket is being taken by another station") from exc
        if row is None or row["outlet_id"] != outlet.pk:
            raise NotFound(f"no ticket {token} at outlet {outlet.slug}")
        if row["state"] != "queued":
            if row["state"] == "preparing":
                raise TicketTaken(
                    f"order {row['id']} is already taken by {row['claimed_by'] or 'another station'}",
                    claimed_by=row["claimed_by"],
                )
            raise InvalidState(f"order {row['id']} is {row['state']}, it cannot be started")
        rows = fetch_all(
            sql.CLAIM_TICKET,
            {
                "order_id": row["id"],
                "station": station,
                "lease": _lease_seconds(lease),
                "event_type": "claimed",
            },
        )
        if not rows:
            raise InvalidState(
                f"outlet {outlet.slug} is not taking orders: order {row['id']} cannot be started"
            )
    return Ticket.from_row(rows[0])


# What each fenced write does, said of an order: "{order}" is "it" or "order 42".
ACTIONS = {
    "mark ready": "mark {order} ready",
    "complete": "complete {order}",
    "recall": "recall {order}",
    "renew": "renew the lease on {order}",
}


def _explain_refusals(
    tokens: Sequence[str], fences: Sequence[int], done: set[str], action: str, outlet: Outlet | None
) -> list[Refusal]:
    """Why each fenced write that matched no row was refused (only on the refusal path)."""
    missing = [(t, f) for t, f in zip(tokens, fences, strict=True) if t not in done]
    if not missing:
        return []
    current = {
        r["token"]: r for r in fetch_all(sql.ORDER_BY_TOKEN, {"tokens": [t for t, _ in missing]})
    }
    errors: list[Refusal] = []
    for token, fence in missing:
        row = current.get(token)
        if row is None:
            errors.append(NotFound("no order with this token", token=token))
            continue
        if outlet is not None and row["outlet_id"] != outlet.pk:
            # Another outlet's order, whatever the fence: said exactly as for no order at all.
            errors.append(NotFound("no order with this token", token=token))
            continue
        act = ACTIONS[action]
        if row["fence"] != fence:
            errors.append(
                StaleFence(
                    f"fence {fence} is stale for order {row['id']} (current fence {row['fence']}, "
                    f"now {row['state']} at {row['outlet_slug'] or 'no outlet'}); "
                    f"this station no longer holds it and must not {act.format(order='it')}",
                    token=token,
                    fence=fence,
                    current_fence=row["fence"],
                )
            )
        else:
            what = act.format(order=f"order {row['id']}")
            errors.append(InvalidState(f"cannot {what}: it is {row['state']}", token=token))
    return errors


def _fenced_write(
    statement: str,
    event_type: str,
    claims: Sequence[tuple[str, int]],
    action: str,
    outlet: Outlet | None,
    detail: dict[str, Any] | None = None,
) -> tuple[list[Ticket], list[Refusal]]:
    tokens = [t for t, _ in claims]
    fences = [int(f) for _, f in claims]
    rows = fetch_all(
        statement,
        {
            "tokens": tokens,
            "fences": fences,
            "event_type": event_type,
            "outlet_id": outlet.pk if outlet else None,
            "lease": _lease_seconds(None),
            "detail": Jsonb(detail) if detail else None,
        },
    )
    done = [Ticket.from_row(r) for r in rows]
    return done, _explain_refusals(tokens, fences, {t.token for t in done}, action, outlet)


def orders_mark_ready(
    *, claims: Sequence[tuple[str, int]], outlet: Outlet | None = None
) -> tuple[list[Ticket], list[Refusal]]:
    """Mark a batch ready in one statement, each row checked against its own fence.

    With ``outlet``, only that outlet's orders match (an agent acts for its outlet only).
    """
    return _fenced_write(sql.MARK_READY, "ready", claims, "mark ready", outlet)


def orders_complete(
    *, claims: Sequence[tuple[str, int]], outlet: Outlet | None = None, by: str = ""
) -> tuple[list[Ticket], list[Refusal]]:
    """Complete a batch in one statement; returns (completed, refusals): stale rows never complete.

    ``by`` (a kitchen station) is kept in the events: a station recalls only what it bumped.
    """
    detail = {"by": by} if by else None
    return _fenced_write(sql.ORDER_COMPLETE, "completed", claims, "complete", outlet, detail)


def _one(result: tuple[list[Ticket], list[Refusal]]) -> Ticket:
    done, refused = result
    if refused:
        raise refused[0]
    return done[0]


def order_mark_ready(*, token: str, fence: int, outlet: Outlet | None = None) -> Ticket:
    """Mark one claimed order ready; raises StaleFence when the fence is not the current one."""
    return _one(orders_mark_ready(claims=[(token, fence)], outlet=outlet))


def order_complete(*, token: str, fence: int, outlet: Outlet | None = None, by: str = "") -> Ticket:
    """Complete (bump) one order; raises StaleFence when the fence is not the current one."""
    return _one(orders_complete(claims=[(token, fence)], outlet=outlet, by=by))


def order_recall(*, token: str, fence: int, outlet: Outlet | None = None) -> Ticket:
    """Bring a bumped ticket back to the pass as ready."""
    rows = fetch_all(
        sql.ORDER_RECALL,
        {
            "token": token,
            "fence": fence,
            "event_type": "recalled",
            "outlet_id": outlet.pk if outlet else None,
            "lease": _lease_seconds(None),
        },
    )
    if rows:
        return Ticket.from_row(rows[0])
    raise _explain_refusals([token], [fence], set(), "recall", outlet)[0]


def lease_renew(
    *, token: str, fence: int, lease: float | None = None, outlet: Outlet | None = None
) -> datetime:
    """Extend a claim's lease; returns the new expiry, raises StaleFence when the claim was lost."""
    row = fetch_one(
        sql.LEASE_RENEW,
        {
            "token": token,
            "fence": fence,
            "lease": _lease_seconds(lease),
            "outlet_id": outlet.pk if outlet else None,
        },
    )
    if row is None:
        raise _explain_refusals([token], [fence], set(), "renew", outlet)[0]
    expires: datetime = row["lease_expires_at"]
    return expires
