"""Running the named statements of ``queueing.sql`` on Django's connection.

A statement that writes events returns each event's JSON in an
``event_payload`` column; ``fetch_all`` takes it out of the rows and hands it to
``events_announce``, the one place that NOTIFYs, after the commit.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection, transaction

from queueing import sql

log = logging.getLogger("hearth.events")

PAYLOAD_COLUMN = "event_payload"


def fetch_all(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one statement and return its rows as dicts; event payloads are announced on commit."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        if cursor.description is None:
            return []
        names = [col.name for col in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if PAYLOAD_COLUMN in names:
        events_announce([row.pop(PAYLOAD_COLUMN) for row in rows])
    return rows


def events_announce(payloads: list[str]) -> None:
    """NOTIFY these events once the current transaction commits (at once in autocommit)."""
    if payloads:
        # robust: the change has committed; a failed announcement is logged, never raised
        # at the caller, and the listener's catch-up reads the event from the table.
        transaction.on_commit(lambda: _notify(payloads), robust=True)


def _notify(payloads: list[str]) -> None:
    try:
        execute(sql.EVENTS_NOTIFY, {"payloads": payloads})
    except Exception:
        log.warning("could not announce %d event(s); listeners will catch up", len(payloads))
        raise


def fetch_one(statement: str, params: dict[str, Any]) -> dict[str, Any] | None:
    rows = fetch_all(statement, params)
    return rows[0] if rows else None


def execute(statement: str, params: dict[str, Any]) -> int:
    """Run one statement and return the number of rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount
