"""Reading events in commit order: a cursor is a PostgreSQL snapshot, not an event id.

Event ids are taken when a transaction inserts its event, and transactions commit
in another order, so "every event with an id above the last one read" skips an
event that commits late with a lower id. Instead every event row records the id
of the transaction that wrote it (``xid``), and a reader keeps the snapshot it
last read with (``pg_current_snapshot()``: the transactions it saw as committed).
The events it has not read are then exactly the committed ones whose transaction
that snapshot did not see as committed (``sql.EVENTS_SINCE``), however large or
late that transaction was, and the read returns the snapshot it used as the next
cursor. A reader that reads the same cursor twice gets the same events (those
committed since); nothing depends on a NOTIFY having arrived.

The cursor's text (``xmin:xmax:xip,…``) is what screens keep and send back as
``after=``. A bare event id is still accepted as a legacy cursor: it reads by id
and can miss a late commit, as it always could.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from queueing import sql
from queueing.db import fetch_one

# A snapshot lists at most one in-progress xid per server connection.
CURSOR_MAX_LENGTH = 16_384
MAX_EVENT_ID = 2**63 - 1
_XID8_MAX = 2**64 - 1
_CURSOR = re.compile(r"(\d{1,20}):(\d{1,20}):((?:\d{1,20}(?:,\d{1,20})*)?)")


class CursorInvalid(ValueError):
    """``after`` is neither a cursor this server gave out nor a non-negative event id."""


@dataclass(frozen=True)
class Cursor:
    """Where a reader is: a snapshot (``xmin:xmax:xip``), or a legacy bare event id."""

    xmin: int = 0
    xmax: int = 0
    xip: tuple[int, ...] = ()
    after_id: int | None = None

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor ``text`` names; CursorInvalid when it is malformed."""
        text = text.strip()
        if len(text) > CURSOR_MAX_LENGTH:
            raise CursorInvalid("after is too long")
        if text.isdigit() and text.isascii():
            event_id = int(text)
            if event_id > MAX_EVENT_ID:
                raise CursorInvalid("after is out of range")
            return cls(after_id=event_id)
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise CursorInvalid("after must be a cursor from the server or an event id")
        xmin, xmax = int(match[1]), int(match[2])
        xip = tuple(int(x) for x in match[3].split(",")) if match[3] else ()
        # PostgreSQL's own rules for a snapshot, so a forged one is refused here, not there.
        if (
            not (0 < xmin <= xmax <= _XID8_MAX)
            or any(not xmin <= x < xmax for x in xip)
            or list(xip) != sorted(set(xip))
        ):
            raise CursorInvalid("after is not a valid cursor")
        return cls(xmin=xmin, xmax=xmax, xip=xip)

    @property
    def is_snapshot(self) -> bool:
        return self.after_id is None

    def __str__(self) -> str:
        if self.after_id is not None:
            return str(self.after_id)
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, self.xip))}"

    def newer_than(self, other: Cursor | None) -> bool:
        """Whether this snapshot sees more committed than ``other`` (both from this server)."""
        if other is None or not other.is_snapshot:
            return self.is_snapshot
        if not self.is_snapshot:
            return False
        # Snapshots of one server, taken one after the other: xmax never goes back, and
        # at the same xmax the later one has fewer transactions still in progress.
        return self.xmax > other.xmax or (
            self.xmax == other.xmax and set(self.xip) < set(other.xip)
        )

    def saw(self, xid: int | None) -> bool:
        """Whether a reader at this cursor has the events of transaction ``xid`` (it had committed)."""
        if not self.is_snapshot or xid is None:
            return False  # an id says nothing of commit order; the sent ids catch repeats
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)

    def params(self) -> dict[str, Any]:
        """The cursor's parameters of ``sql.EVENTS_SINCE``."""
        if self.is_snapshot:
            return {"cursor": str(self), "after_id": 0}
        return {"cursor": None, "after_id": self.after_id}


def events_cursor() -> tuple[Cursor, int]:
    """(the cursor of now, the newest event id): where a screen's snapshot or stream starts."""
    row = fetch_one(sql.EVENTS_CURSOR, {})
    assert row is not None
    return Cursor.parse(row["cursor"]), int(row["last_event_id"])


def events_since_params(
    cursor: Cursor,
    *,
    outlet_id: int | None = None,
    order_id: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    return {**cursor.params(), "outlet_id": outlet_id, "order_id": order_id, "limit": limit}


def events_since_row(row: Any) -> tuple[list[dict[str, Any]], Cursor]:
    """``sql.EVENTS_SINCE``'s one row as (events oldest first, the next cursor)."""
    cursor_text, events = row
    return [normalise_event(e) for e in json.loads(events)], Cursor.parse(cursor_text)


def events_since(
    cursor: Cursor,
    *,
    outlet_id: int | None = None,
    order_id: int | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], Cursor]:
    """The events committed since ``cursor`` (of one outlet, one order, or all), oldest first.

    With ``limit``, the newest ``limit`` of them. Also returns the cursor to read on from.
    """
    row = fetch_one(
        sql.EVENTS_SINCE,
        events_since_params(cursor, outlet_id=outlet_id, order_id=order_id, limit=limit),
    )
    assert row is not None
    return events_since_row((row["cursor"], row["events"]))


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    """Every key of the payload present, so outlet-level and order events have one shape."""
    for key in ("order", "number", "kind", "outlet", "from_outlet", "at"):
        event.setdefault(key, None)
    event.setdefault("fence", 0)
    event.setdefault("detail", {})
    if event.get("xid") is not None:  # the writing transaction: for Cursor.saw, not for screens
        event["xid"] = int(event["xid"])
    return event


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as screens get it: without the writing transaction's id."""
    return {k: v for k, v in event.items() if k != "xid"}
