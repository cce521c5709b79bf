"""Running the named statements of ``queueing.sql`` on Django's connection.

A statement that writes events returns their ids in an ``event_id`` column;
``fetch_all`` then has the listeners woken after the commit (``queueing.wake``).
The statements are bound on the server (Django's own queries are bound on the
client), so each connection prepares a statement after a few runs
(``HEARTH_DB_PREPARE_THRESHOLD``) and PostgreSQL stops planning it on every call:
planning a claim cost twice as much as running it.

A statement that PostgreSQL cancels for one of the connection timeouts
(``shop.database``) is logged here, naming the timeout, before the error goes on
to the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from django.db import DatabaseError, connection, models
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from psycopg.rows import dict_row

from queueing.wake import events_written

timeouts_log = logging.getLogger("hearth.database")

EVENT_ID_COLUMN = "event_id"

M = TypeVar("M", bound=models.Model)


# What each timeout's error looks like: (SQLSTATE, words of its message, setting).
_TIMEOUTS = (
    ("55P03", "lock timeout", "lock_timeout"),
    ("57014", "statement timeout", "statement_timeout"),
    ("25P03", "idle-in-transaction timeout", "idle_in_transaction_session_timeout"),
)


def timeout_fired(exc: BaseException) -> str | None:
    """The PostgreSQL timeout setting that ended this statement or session, if one did."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        for code, words, setting in _TIMEOUTS:
            # 57014 is also a cancel asked for by hand: only its message tells them apart.
            if words in str(seen) or (sqlstate == code and code != "57014"):
                return setting
        seen = seen.__cause__ or seen.__context__
    return None


def timeout_logged(exc: BaseException, *, where: str) -> str | None:
    """Log a clear line when a PostgreSQL timeout ended this; returns the setting's name."""
    setting = timeout_fired(exc)
    if setting is not None:
        timeouts_log.warning(
            "%s: PostgreSQL's %s fired (%s); the transaction was rolled back and its locks "
            "released",
            where,
            setting,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
    return setting


def _statement_name(statement: str) -> str:
    words = " ".join(statement.split())
    return words[:60] + ("..." if len(words) > 60 else "")


@contextmanager
def _statement_cursor() -> Iterator[CursorWrapper]:
    """Django's cursor for this thread's connection, as ``connection.cursor()`` gives it
    (health check, error wrapping, query log), but binding its parameters on the server
    and giving rows as dicts (read by column name, without building a description)."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        raw = psycopg.Cursor(connection.connection, row_factory=dict_row)
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
    with wrapper(raw, connection) as cursor:
        yield cursor


def fetch_all(statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one statement and return its rows as dicts; listeners are woken after events commit."""
    with _statement_cursor() as cursor:
        try:
            cursor.execute(statement, params)
        except DatabaseError as exc:
            timeout_logged(exc, where=f"statement {_statement_name(statement)!r}")
            raise
        if cursor.rownumber is None:  # a statement that returns no rows at all
            return []
        rows: list[dict[str, Any]] = cursor.fetchall()
    if rows and EVENT_ID_COLUMN in rows[0]:
        events_written()
    return rows


def fetch_one(statement: str, params: dict[str, Any]) -> dict[str, Any] | None:
    rows = fetch_all(statement, params)
    return rows[0] if rows else None


def execute(statement: str, params: dict[str, Any]) -> int:
    """Run one statement and return the number of rows it touched."""
    with _statement_cursor() as cursor:
        try:
            cursor.execute(statement, params)
        except DatabaseError as exc:
            timeout_logged(exc, where=f"statement {_statement_name(statement)!r}")
            raise
        return cursor.rowcount


def model_from_row(model: type[M], row: dict[str, Any]) -> M:
    """A ``model`` instance from a row of a named statement, as the ORM would load it.

    Columns are matched to fields by name (``from_db`` takes them in the model's order);
    a field the row does not carry is deferred, read from the database if it is used.
    """
    fields = [f for f in model._meta.concrete_fields if f.attname in row]
    values = [_loaded(f, row[f.attname]) for f in fields]
    return model.from_db("default", [f.attname for f in fields], values)


def _loaded(field: models.Field[Any, Any], value: Any) -> Any:
    if isinstance(field, models.JSONField) and isinstance(value, str):
        return json.loads(value)  # Django's cursor hands jsonb over as text
    return value
