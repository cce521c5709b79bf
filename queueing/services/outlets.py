"""Outlets: creating them, their agent tokens, heartbeats and the states a manager sets."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import transaction
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import fetch_all, fetch_one, model_from_row
from queueing.errors import InvalidState, NotFound, OutletNotEmpty
from queueing.models import OPEN_STATES, Order, Outlet, OutletState
from queueing.services.leadership import leader_fence
from queueing.services.routing import (
    OUTLET_CLOSED,
    OUTLET_UNAVAILABLE,
    moves_described,
    orders_move,
    outlets_reroute,
)
from queueing.tickets import Ticket

log = logging.getLogger("hearth.outlets")


def _new_token() -> str:
    # A prefix makes a leaked token recognisable, and no token starts with "-",
    # which a command line would take for an option.
    return f"hth_{secrets.token_urlsafe(32)}"


def _outlet_locked(outlet_id: int) -> Outlet:
    """Lock an outlet row to change its state. Caller is in a transaction.

    Outlet state changes take one advisory lock first, so they run one at a
    time: two take-downs at once would each hold their outlet and wait for the
    other's (moving orders onto an outlet takes a key-share lock on its row).
    """
    fetch_all(sql.OUTLET_CHANGES_SERIALISE, {})
    return Outlet.objects.select_for_update().get(pk=outlet_id)


def _token_hash(token: str) -> str:
    # Agent tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def outlet_event(*, outlet: Outlet, state: str, detail: dict[str, Any]) -> None:
    """Record an outlet-level event (down, back, drained, added) and announce it on commit."""
    fetch_all(
        sql.OUTLET_EVENT,
        {
            "outlet_id": outlet.pk,
            "outlet_slug": outlet.slug,
            "state": state,
            "detail": Jsonb(detail),
        },
    )


def outlet_create(*, slug: str, name: str = "", weight: int = 1) -> tuple[Outlet, str]:
    """Add an outlet, down until its first heartbeats; returns it and its agent token (stored hashed).

    It takes orders once its agent (or its staff's kitchen screen) has heartbeated
    without a break for the flap guard, or once a manager activates it.
    """
    token = _new_token()
    with transaction.atomic():
        outlet = Outlet.objects.create(
            slug=slug,
            name=name or slug,
            weight=weight,
            token_hash=_token_hash(token),
            state=OutletState.DOWN,
        )
        outlet_event(outlet=outlet, state=outlet.state, detail={"action": "added"})
    return outlet, token


def outlet_rotate_token(*, outlet: Outlet) -> str:
    """Give the outlet a new agent token; the old one stops working at once."""
    token = _new_token()
    Outlet.objects.filter(pk=outlet.pk).update(token_hash=_token_hash(token))
    return token


def outlet_authenticate(*, slug: str, token: str) -> Outlet | None:
    """The outlet whose agent token this is, if it is ``slug``'s; None otherwise."""
    outlet = Outlet.objects.filter(slug=slug).first()
    if outlet is None or not outlet.token_hash:
        return None
    if not hmac.compare_digest(outlet.token_hash, _token_hash(token)):
        return None
    return outlet


def outlet_by_token(*, token: str) -> Outlet | None:
    """The (not retired) outlet whose agent token this is, or None."""
    return _outlet_of(fetch_one(sql.OUTLET_BY_TOKEN_HASH, {"token_hash": _token_hash(token)}))


def outlet_by_slug(*, slug: str) -> Outlet | None:
    """The outlet with this slug, whatever its state, or None."""
    return _outlet_of(fetch_one(sql.OUTLET_BY_SLUG, {"slug": slug}))


def _outlet_of(row: dict[str, Any] | None) -> Outlet | None:
    return None if row is None else model_from_row(Outlet, row)


def outlet_heartbeat(
    *,
    outlet: Outlet,
    source: str,
    seq: int = 0,
    now: datetime | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Record that the outlet is alive (database clock unless a test passes ``now``).

    A down outlet that went silent and heartbeats again is back after the flap guard.
    """
    row = fetch_one(
        sql.OUTLET_HEARTBEAT,
        {
            "outlet_id": outlet.pk,
            "source": source[:60],
            "seq": seq,
            "now": now,
            "timeout": settings.HEARTH_HEARTBEAT_TIMEOUT if timeout is None else timeout,
        },
    )
    if row is None:
        raise InvalidState(f"outlet {outlet.slug} is retired")
    return row


def outlet_heartbeat_by_token(
    *, slug: str, token: str, source: str, seq: int = 0
) -> tuple[str, dict[str, Any] | None] | None:
    """An agent's heartbeat in one statement: (its token's outlet slug, the beat if that is ``slug``).

    None when the token is no (live) outlet's; the beat is None when it is another outlet's.
    """
    return _beat_answer(
        fetch_one(sql.OUTLET_HEARTBEAT_BY_TOKEN, _beat_params(slug, token, source, seq))
    )


async def outlet_heartbeats_by_token_async(
    conn: psycopg.AsyncConnection[Any], beats: list[tuple[str, str, str, int]]
) -> list[tuple[str, dict[str, Any] | None] | None]:
    """Several ``(slug, token, source, seq)`` heartbeats in one statement and one commit.

    For the web process's event loop (an async connection of the caller's, autocommit,
    dict rows): heartbeats with no thread and no Django request. Each answer is
    ``outlet_heartbeat_by_token``'s, in the order of ``beats``. A token may appear once:
    two beats of one outlet in one statement would count as one.
    """
    params = [_beat_params(*beat) for beat in beats]
    if len({p["token_hash"] for p in params}) != len(params):
        raise ValueError("a token may beat once per batch")
    cursor = await conn.execute(
        sql.OUTLET_HEARTBEATS_BY_TOKEN,
        {
            "token_hashes": [p["token_hash"] for p in params],
            "slugs": [p["slug"] for p in params],
            "sources": [p["source"] for p in params],
            "seqs": [p["seq"] for p in params],
            "timeout": settings.HEARTH_HEARTBEAT_TIMEOUT,
        },
    )
    found = {row["n"]: row for row in await cursor.fetchall()}
    return [_beat_answer(found.get(n)) for n in range(1, len(beats) + 1)]


def _beat_params(slug: str, token: str, source: str, seq: int) -> dict[str, Any]:
    return {
        "token_hash": _token_hash(token),
        "slug": slug,
        "source": source[:60],
        "seq": seq,
        "timeout": settings.HEARTH_HEARTBEAT_TIMEOUT,
    }


def _beat_answer(row: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None] | None:
    if row is None:
        return None
    if row["state"] is None:
        return row["slug"], None
    return row["slug"], {"state": row["state"], "last_heartbeat_at": row["last_heartbeat_at"]}


def outlet_drain(*, outlet: Outlet, move_queued: bool = False) -> list[Ticket]:
    """Take no new orders; finish what it has. With ``move_queued``, unclaimed delivery orders move now.

    Orders being prepared stay, and so does every order when no other outlet is live
    (the draining outlet still makes them rather than leaving them with no outlet).
    """
    with transaction.atomic():
        locked = _outlet_locked(outlet.pk)
        if locked.state not in (OutletState.ACTIVE, OutletState.DRAINING):
            raise InvalidState(
                f"outlet {outlet.slug} is {locked.state}; only an active outlet can drain"
            )
        locked.state = OutletState.DRAINING
        locked.save(update_fields=["state"])
        outlet_event(
            outlet=locked, state=locked.state, detail={"action": "drain", "move": move_queued}
        )
        moved: list[Ticket] = []
        if move_queued:
            rows = [
                r
                for r in fetch_all(sql.ORDERS_TO_MOVE, {"outlet_ids": [outlet.pk], "order_ids": []})
                if r["state"] == "queued" and r["kind"] == "delivery"
            ]
            moved, _ = orders_move(
                rows=rows, reason=f"{outlet.slug} is draining", wait_if_no_outlet=False
            )
    log.info(
        "outlet %s draining: takes no new orders%s",
        outlet.slug,
        f"; {len(moved)} queued delivery orders moved ({moves_described(moved)})"
        if move_queued
        else "",
    )
    return moved


def outlet_mark_down(
    *, outlet: Outlet, reason: str = "marked down by a manager"
) -> tuple[list[Ticket], list[Ticket]]:
    """Declare the outlet down now and move its open orders (a manager, for a planned outage).

    It stays down, whatever heartbeats, until a manager activates it. Marking down an
    outlet that is down already (it went silent, or is new) makes that hold too.
    """
    with transaction.atomic():
        locked = _outlet_locked(outlet.pk)
        if locked.state == OutletState.RETIRED or (
            locked.state == OutletState.DOWN and locked.down_by_manager
        ):
            raise InvalidState(f"outlet {outlet.slug} is already {locked.state}")
        if locked.state == OutletState.DOWN:
            locked.down_by_manager = True
            locked.save(update_fields=["down_by_manager"])
            outlet_event(
                outlet=locked, state=locked.state, detail={"action": "down", "reason": reason}
            )
            return [], []
        return _take_down(locked, reason, by_manager=True)


def outlet_take_down(
    *,
    outlet_id: int,
    reason: str,
    silent_before: datetime,
    timeout: float,
    term: int | None = None,
) -> tuple[list[Ticket], list[Ticket]] | None:
    """The notifier's path: take a silent outlet down, re-checking its silence under the row lock.

    Returns None when it heartbeated (or changed state) after the caller looked; raises
    LostLeadership when ``term`` (the leading notifier's) no longer holds the lease.
    """
    cutoff = silent_before - timedelta(seconds=timeout)
    with transaction.atomic():
        leader_fence(term=term)
        locked = _outlet_locked(outlet_id)
        if locked.state not in (OutletState.ACTIVE, OutletState.DRAINING):
            return None
        if (locked.last_heartbeat_at or locked.created_at) >= cutoff:
            return None
        return _take_down(locked, reason, by_manager=False)


def _take_down(
    locked: Outlet, reason: str, *, by_manager: bool
) -> tuple[list[Ticket], list[Ticket]]:
    """Caller holds the outlet row lock in an open transaction."""
    locked.resume_state = locked.state  # active or draining: what it comes back as
    locked.state = OutletState.DOWN
    locked.down_by_manager = by_manager
    locked.back_since = None
    locked.back_beats = 0
    locked.save(
        update_fields=["state", "resume_state", "down_by_manager", "back_since", "back_beats"]
    )
    outlet_event(outlet=locked, state=locked.state, detail={"action": "down", "reason": reason})
    moved, cancelled = outlets_reroute(
        outlet_ids=[locked.pk],
        reason=f"{locked.slug} {reason}",
        cancel_reason=OUTLET_CLOSED if by_manager else OUTLET_UNAVAILABLE,
    )
    log.info(
        "outlet %s down (%s): %d delivery orders moved (%s), %d takeaway orders cancelled",
        locked.slug,
        reason,
        len(moved),
        moves_described(moved),
        len(cancelled),
    )
    return moved, cancelled


def outlet_activate(*, outlet: Outlet) -> None:
    """Let a draining or down outlet take new orders again (a manager's undo, or vouching for a new one).

    If nothing heartbeats for it, the notifier declares it down again after the timeout.
    """
    with transaction.atomic():
        locked = _outlet_locked(outlet.pk)
        if locked.state == OutletState.RETIRED:
            raise InvalidState(f"outlet {outlet.slug} is retired")
        locked.state = OutletState.ACTIVE
        locked.resume_state = OutletState.ACTIVE
        locked.down_by_manager = False
        locked.back_since = None
        locked.back_beats = 0
        locked.save(
            update_fields=["state", "resume_state", "down_by_manager", "back_since", "back_beats"]
        )
        outlet_event(outlet=locked, state=locked.state, detail={"action": "activate"})


def outlet_retire(*, outlet: Outlet) -> None:
    """Retire an outlet for good; it must have no open orders."""
    with transaction.atomic():
        locked = _outlet_locked(outlet.pk)
        if locked.state == OutletState.RETIRED:
            raise InvalidState(f"outlet {outlet.slug} is already retired")
        open_orders = Order.objects.filter(outlet=locked, state__in=OPEN_STATES).count()
        if open_orders:
            raise OutletNotEmpty(
                f"outlet {outlet.slug} still has {open_orders} open orders; drain it first"
            )
        locked.state = OutletState.RETIRED
        locked.token_hash = ""
        locked.save(update_fields=["state", "token_hash"])
        outlet_event(outlet=locked, state=locked.state, detail={"action": "retire"})


def outlet_get(*, slug: str) -> Outlet:
    outlet = Outlet.objects.filter(slug=slug).first()
    if outlet is None:
        raise NotFound(f"no outlet {slug}")
    return outlet
