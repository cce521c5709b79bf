"""Which outlet takes an order: the ring of live outlets with bounded loads.

The ring is consulted only when an order is assigned or reassigned; the answer
is then stored on the order. A delivery order's key is its zone, so a zone keeps
going to the same outlet while that outlet lives. Moving orders off an outlet
touches only that outlet's orders: survivors keep what they have and only take
new keys (invariant 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from psycopg.types.json import Jsonb

from queueing import sql
from queueing.db import fetch_all, fetch_one
from queueing.models import Outlet, OutletState
from queueing.ring import HashRing
from queueing.tickets import Ticket

OUTLET_UNAVAILABLE = (
    "outlet unavailable"  # it went silent: the customer is told it closed unexpectedly
)
OUTLET_CLOSED = "outlet closed by a manager"  # a planned mark-down: told it has closed for now


@lru_cache(maxsize=32)
def _ring(weights: tuple[tuple[str, int], ...]) -> HashRing:
    return HashRing(dict(weights))


class RingMember(Protocol):
    """What routing reads of an outlet: an Outlet, or its Seat."""

    @property
    def pk(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def weight(self) -> int: ...


@dataclass(frozen=True)
class Seat:
    """An active outlet's place on the ring."""

    pk: int
    slug: str
    weight: int


# (version of the active outlets, their seats, their ring): re-read when the version changes.
_seats: tuple[str, list[Seat], HashRing | None] = ("", [], None)


def active_outlets() -> list[Seat]:
    """Outlets taking new orders, by id.

    A placement asks for them every time; at a thousand outlets, loading them all is
    what a placement would cost, so each process keeps them and asks the database
    only for their version (one row) until it changes.
    """
    global _seats
    row = fetch_one(sql.ACTIVE_OUTLETS_VERSION, {})
    version = str(row["version"]) if row and row["version"] else "none"
    if _seats[0] != version:
        members = (
            Outlet.objects.filter(state=OutletState.ACTIVE)
            .order_by("id")
            .values_list("id", "slug", "weight")
        )
        seats = [Seat(pk, slug, weight) for pk, slug, weight in members]
        _seats = (version, seats, _ring(_weights(seats)) if seats else None)
    return _seats[1]


def _weights(outlets: Sequence[RingMember]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((o.slug, max(int(o.weight), 1)) for o in outlets))


def ring_of(outlets: Sequence[RingMember]) -> HashRing:
    """The ring of these outlets (cached by slug and weight)."""
    if outlets is _seats[1] and _seats[2] is not None:
        return _seats[2]  # the active outlets' ring, built when they last changed
    return _ring(_weights(outlets))


def outlet_load(outlet: RingMember) -> int:
    """Open orders held by one outlet."""
    row = fetch_one(sql.OUTLET_LOAD, {"outlet_id": outlet.pk})
    return int(row["open"]) if row else 0


def open_orders_total() -> int:
    """Open orders held by active outlets, all together."""
    row = fetch_one(sql.OPEN_ORDERS_TOTAL, {})
    return int(row["open"]) if row else 0


@dataclass
class Router:
    """Assigns a batch of orders over one snapshot of the live outlets and their loads.

    A placement visits one or two outlets of a thousand, so an outlet's cap and its
    load are worked out when the walk reaches it (``load_of`` fetches a load the
    snapshot lacks), never for every outlet up front.
    """

    outlets: Sequence[RingMember]
    epsilon: float
    bounded: bool = True
    loads: dict[str, int] = field(default_factory=dict)
    total: int = 0
    load_of: Callable[[RingMember], int] | None = None

    def __post_init__(self) -> None:
        self._ring = ring_of(self.outlets) if self.outlets else None
        self._by_slug = {o.slug: o for o in self.outlets}
        self._caps: dict[str, int] = {}

    @classmethod
    def for_live_outlets(
        cls, *, incoming: int, epsilon: float | None = None, bounded: bool = True
    ) -> Router:
        outlets = active_outlets()
        return cls(
            outlets=outlets,
            epsilon=settings.HEARTH_RING_EPSILON if epsilon is None else epsilon,
            bounded=bounded,
            total=(open_orders_total() if outlets else 0) + incoming,
            load_of=outlet_load,
        )

    @classmethod
    def for_moved_batch(
        cls, *, incoming: int, epsilon: float | None = None, bounded: bool = True
    ) -> Router:
        """Spread a batch of moved orders by capacity: each live outlet takes at most
        (1 + epsilon) times its weighted share of the batch, whatever it already holds.

        Bounding by the open orders instead would let an outlet that happens to be
        below its cap soak up far more than its share of a dead neighbour's work.
        """
        outlets = active_outlets()
        return cls(
            outlets=outlets,
            epsilon=settings.HEARTH_RING_EPSILON if epsilon is None else epsilon,
            bounded=bounded,
            loads={o.slug: 0 for o in outlets},
            total=incoming,
        )

    def _cap(self, slug: str) -> int:
        cap = self._caps.get(slug)
        if cap is None:
            assert self._ring is not None
            cap = self._ring.cap(slug, max(self.total, 1), epsilon=self.epsilon)
            self._caps[slug] = cap
        return cap

    def _load(self, slug: str) -> int:
        if slug not in self.loads:
            self.loads[slug] = self.load_of(self._by_slug[slug]) if self.load_of else 0
        return self.loads[slug]

    def choose(self, key: str, *, exclude: Collection[str] = ()) -> RingMember | None:
        """The outlet for ``key``; None when no outlet other than ``exclude`` is live."""
        ring = self._ring
        if ring is None or all(slug in exclude for slug in self._by_slug):
            return None
        slug: str | None = None
        if self.bounded:
            # ring.assign's walk, each outlet's cap computed once per Router (exact
            # arithmetic, constant for the batch) and only for outlets the walk reaches.
            for candidate in ring.walk(key):
                if candidate not in exclude and self._load(candidate) < self._cap(candidate):
                    slug = candidate
                    break
            # With the order's own outlet excluded the rest may all be full (the caps add
            # up to the total only over every outlet): overfilling one a little beats
            # leaving the order with no outlet.
        if slug is None:
            slug = next(s for s in ring.walk(key) if s not in exclude)
        self.loads[slug] = self._load(slug) + 1
        return self._by_slug[slug]


def routing_key(row: dict[str, Any]) -> str:
    """A delivery order's key is its zone; an order without one is keyed by its token."""
    return row.get("zone") or row["token"]


def moves_described(moved: Sequence[Ticket]) -> str:
    """'12 to north, 9 to south, 2 waiting for an outlet': where a batch of moved orders went."""
    slugs = dict(Outlet.objects.values_list("id", "slug"))
    counts = Counter(t.outlet_id for t in moved)
    parts = [
        f"{n} to {slugs.get(k, k)}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]) if k
    ]
    if counts.get(None):
        parts.append(f"{counts[None]} waiting for an outlet")
    return ", ".join(parts) or "none"


def orders_move(
    *,
    rows: Sequence[dict[str, Any]],
    reason: str,
    exclude_current: bool = False,
    count_attempt: bool = False,
    bounded: bool = True,
    outlet_lost: bool = True,
    wait_if_no_outlet: bool = True,
    event_type: str = "rerouted",
    cancel_reason: str = OUTLET_UNAVAILABLE,
) -> tuple[list[Ticket], list[Ticket]]:
    """Move locked order rows through the ring; takeaway orders are cancelled instead.

    Caller holds the rows' locks (``sql.ORDERS_TO_MOVE``) in an open transaction.
    Returns (moved, cancelled). A delivery order no live outlet can take waits with
    outlet NULL and a "waiting" event ("no outlet available"), or, with
    ``wait_if_no_outlet`` False, is left untouched where it is. With ``outlet_lost``
    False (a lease ran out, the outlet lives), orders whose kind is never rerouted go
    back to their own outlet's queue instead of being cancelled.
    """
    policy = settings.HEARTH_ON_OUTLET_DOWN
    stays = [r for r in rows if policy.get(r["kind"]) == "cancel"]
    to_cancel = [r["id"] for r in stays] if outlet_lost else []
    to_move = [r for r in rows if policy.get(r["kind"]) != "cancel" or not outlet_lost]
    placed: list[tuple[int, int | None]] = []
    if to_move:
        router = Router.for_moved_batch(incoming=len(to_move), bounded=bounded)
        slugs = {o.pk: o.slug for o in Outlet.objects.all().only("id", "slug")}
        for row in to_move:
            if policy.get(row["kind"]) == "cancel":  # never rerouted: back to its own queue
                placed.append((row["id"], row["outlet_id"]))
                continue
            exclude = {slugs[row["outlet_id"]]} if exclude_current and row["outlet_id"] else set()
            outlet = router.choose(routing_key(row), exclude=exclude)
            if outlet is None and exclude:
                # No other outlet is live: back to its own queue (if it still takes orders)
                # rather than waiting with no outlet while its outlet is alive.
                outlet = router.choose(routing_key(row))
            if outlet is None and not wait_if_no_outlet:
                continue
            placed.append((row["id"], outlet.pk if outlet else None))
    going = [(i, o) for i, o in placed if o is not None]
    waiting = [(i, o) for i, o in placed if o is None]
    moved = _move(
        going, event_type=event_type, detail={"reason": reason}, count_attempt=count_attempt
    )
    moved += _move(
        waiting,
        event_type="waiting",
        detail={"reason": "no outlet available", "cause": reason},
        count_attempt=count_attempt,
    )
    cancelled: list[Ticket] = []
    if to_cancel:
        result = fetch_all(
            sql.ORDERS_CANCEL,
            {"ids": to_cancel, "reason": cancel_reason, "event_type": "cancelled"},
        )
        cancelled = [Ticket.from_row(r) for r in result]
    return moved, cancelled


def _move(
    placed: Sequence[tuple[int, int | None]],
    *,
    event_type: str,
    detail: dict[str, Any],
    count_attempt: bool,
) -> list[Ticket]:
    """One statement for the whole batch: each order to its outlet, fence bumped, one event each."""
    if not placed:
        return []
    result = fetch_all(
        sql.ORDERS_MOVE,
        {
            "ids": [i for i, _ in placed],
            "outlet_ids": [o for _, o in placed],
            "attempt": [1 if count_attempt else 0] * len(placed),
            "event_type": event_type,
            "detail": Jsonb(detail),
        },
    )
    return [Ticket.from_row(r) for r in result]


def outlets_reroute(
    *,
    outlet_ids: Sequence[int],
    reason: str,
    bounded: bool = True,
    cancel_reason: str = OUTLET_UNAVAILABLE,
) -> tuple[list[Ticket], list[Ticket]]:
    """Move the open (queued or preparing) orders of these outlets. Caller logs the decision.

    Runs in the caller's transaction when there is one (the outlet row lock must be
    held until the orders have moved), else in its own.
    """
    with transaction.atomic():
        rows = fetch_all(sql.ORDERS_TO_MOVE, {"outlet_ids": list(outlet_ids), "order_ids": []})
        return orders_move(rows=rows, reason=reason, bounded=bounded, cancel_reason=cancel_reason)
