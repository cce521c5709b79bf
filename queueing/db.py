"""Running the named statements of ``queueing.sql`` on Django's connection.

A statement that writes events returns their ids in an ``event_id`` column;
``fetch_all`` then has the listeners woken after the commit (``queueing.wake``).
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from queueing.wake import events_written

EVENT_ID_COLUMN = "event_id"


def fetch_all(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one statement and return its rows as dicts; listeners are woken after events commit."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        if cursor.description is None:
            return []
        names = [col.name for col in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if rows and EVENT_ID_COLUMN in names:
        events_written()
    return rows


def fetch_one(statement: str, params: dict[str, Any]) -> dict[str, Any] | None:
    rows = fetch_all(statement, params)
    return rows[0] if rows else None


def execute(statement: str, params: dict[str, Any]) -> int:
    """Run one statement and return the number of rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount
