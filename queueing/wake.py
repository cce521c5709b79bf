"""One coalesced NOTIFY per process per short window: readers are woken, never fed.

A writer's commit is all an event needs (readers read the table in commit order,
``queueing.events``). After a commit that wrote events, ``events_written`` sets a
flag; one daemon thread per process sends ``NOTIFY hearth_events`` on a
connection of its own as soon as it sees the flag, then waits ``WINDOW_SECONDS``
before it may send the next, so a burst of changes costs one NOTIFY (one small
transaction) per window instead of one per change, and a change on a quiet system
is announced at once. Its commit does not wait for the disk
(``synchronous_commit = off``): a NOTIFY that is lost (in a crash, or because the
process died first or the connection is down) delays readers until their periodic
read, never loses an event.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db import transaction
from psycopg.conninfo import make_conninfo

from queueing import sql

log = logging.getLogger("hearth.events")

WINDOW_SECONDS = 0.02
# Django OPTIONS that are not libpq connection parameters.
_NOT_LIBPQ = {
    "pool",
    "server_side_binding",
    "isolation_level",
    "assume_role",
    "cursor_factory",
    "prepare_threshold",
}


def own_conninfo(application_name: str) -> str:
    """libpq conninfo of Django's default database, for a connection a component owns itself."""
    db: dict[str, Any] = settings.DATABASES["default"]
    options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if k not in _NOT_LIBPQ}
    params: dict[str, Any] = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        # A half-open TCP connection is found by the kernel too, not only by a query.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        **options,
        "application_name": f"{application_name}:{os.getpid()}",
    }
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def prepare_threshold() -> int | None:
    """psycopg's prepare_threshold of Django's connections, for connections a component owns."""
    db: dict[str, Any] = settings.DATABASES["default"]
    return (db.get("OPTIONS") or {}).get("prepare_threshold")


class Waker:
    """The process's NOTIFY sender: at most one NOTIFY per ``window`` seconds, none when idle."""

    def __init__(self, *, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self.sent = 0
        self._due = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._conn: psycopg.Connection[Any] | None = None

    def wake(self) -> None:
        """Ask for a NOTIFY soon (from any thread; cheap when one is already due)."""
        if self._thread is None or self._pid != os.getpid():
            with self._lock:
                if self._thread is None or self._pid != os.getpid():
                    self._pid, self._conn = os.getpid(), None
                    self._thread = threading.Thread(
                        target=self._run, name="hearth-wake", daemon=True
                    )
                    self._thread.start()
        self._due.set()

    def flush(self) -> None:
        """Send the NOTIFY now if one is due (at exit: a short-lived process wakes readers too)."""
        if self._due.is_set():
            self._due.clear()
            self._notify()

    def close(self) -> None:
        """Close the NOTIFY connection (it reopens on the next wake-up)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            self._notify()
            # Whatever commits during the window shares the next NOTIFY.
            time.sleep(self.window)

    def _notify(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    own_conninfo("hearth-wake"),
                    autocommit=True,
                    prepare_threshold=prepare_threshold(),
                )
                self._conn.execute(sql.EVENTS_WAKE_SESSION)
            self._conn.execute(sql.EVENTS_WAKE)
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 (readers' periodic read covers a lost wake-up)
            log.warning("could not wake listeners (%s); they will read at their next sweep", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None


waker = Waker()
atexit.register(waker.flush)


def events_written() -> None:
    """Wake the listeners once the current transaction commits (at once in autocommit)."""
    transaction.on_commit(waker.wake, robust=True)
