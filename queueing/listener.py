"""The engine's reader of the live path: one LISTEN connection per process, events in commit order.

Every queue write records its event in the writing transaction; the writer's
process wakes the listeners with an empty NOTIFY after the commit
(``queueing.wake``). The listener never trusts a NOTIFY for content: on every
wake-up, and every ``SWEEP_SECONDS`` without one, it reads the events committed
since its cursor (``queueing.events``: a snapshot, so an event that commits late
with a lower id, or a change of any size whose NOTIFY was lost, is read like any
other) and hands them, oldest first, with the cursor they bring it to, to the
callback it was started with. After a reconnect the same read picks up whatever
committed while the connection was away. The listener knows nothing of who
hears an event: that is the product's callback (``shop.live``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from queueing import sql
from queueing.events import Cursor, events_since_params, events_since_row
from queueing.wake import own_conninfo

log = logging.getLogger("hearth.listener")

APPLICATION_NAME = "hearth-listener"
# How long a read may take before the connection counts as dead.
HEALTH_CHECK_SECONDS = 10.0
# Without a wake-up the listener reads anyway every SWEEP_SECONDS: a writer that
# died between its commit and its NOTIFY (or a lost NOTIFY) delays events this long.
SWEEP_SECONDS = 2.0

EventsCallback = Callable[[list[dict[str, Any]], Cursor], Awaitable[None]]


def listener_conninfo() -> str:
    """libpq conninfo of Django's default database, named so pg_stat_activity shows the listener."""
    return own_conninfo(APPLICATION_NAME)


class EventListener:
    """Owns the process's LISTEN connection and hands every committed event to ``on_events`` once.

    ``on_events`` is awaited before the next read, so whatever commits while it runs
    arrives as the next batch: under load one read serves many commits.
    """

    def __init__(
        self,
        *,
        conninfo: str,
        on_events: EventsCallback,
        retry_min: float,
        retry_max: float,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.conninfo = conninfo
        self.on_events = on_events
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.sweep_seconds = sweep_seconds
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()  # the first LISTEN is in place and the cursor set
        self.connected = False
        self.backend_pid: int | None = None
        self.reconnects = 0
        self.forwarded = 0
        self.reads = 0
        # Events committed before the first cursor are not forwarded: screens replay them.
        self.cursor: Cursor | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run(), name="hearth-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                # Never prepared: each read is planned for its own cursor.
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, prepare_threshold=None
                ) as conn:
                    await conn.execute(sql.EVENTS_LISTEN)
                    self.backend_pid = conn.info.backend_pid
                    caught_up = await self._read(conn)
                    self.connected = True
                    if failures:
                        self.reconnects += 1
                        log.warning(
                            "listener reconnected (backend pid %s) after %d failed attempt(s); "
                            "forwarding %d event(s) committed while it was away",
                            self.backend_pid,
                            failures,
                            caught_up,
                        )
                    else:
                        log.info("listener listening (backend pid %s)", self.backend_pid)
                    failures = 0
                    self.started.set()
                    await self._stream(conn)
            except asyncio.CancelledError:
                self.connected = False
                raise
            except Exception as exc:  # noqa: BLE001 (any loss of the connection: retry, never die)
                self.connected = False
                failures += 1
                delay = min(self.retry_max, self.retry_min * 2 ** (failures - 1))
                delay *= random.uniform(0.8, 1.2)  # several web processes do not reconnect in step
                log.warning(
                    "listener lost its connection (%s: %s); reconnecting in %.2fs (attempt %d)",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    delay,
                    failures,
                )
                await asyncio.sleep(delay)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Read what committed since the cursor and hand it on; the first read only sets it."""
        async with asyncio.timeout(HEALTH_CHECK_SECONDS):
            if self.cursor is None:
                cur = await conn.execute(sql.EVENTS_CURSOR)
                row = await cur.fetchone()
                assert row is not None
                self.cursor = Cursor.parse(row[0])
                return 0
            cur = await conn.execute(sql.EVENTS_SINCE, events_since_params(self.cursor))
            row = await cur.fetchone()
        assert row is not None
        events, cursor = events_since_row(row)
        self.reads += 1
        if events:
            try:
                await self.on_events(events, cursor)
            except Exception:  # a bug there must not stop live updates for good
                log.exception("listener could not hand on %d event(s)", len(events))
            self.forwarded += len(events)
        self.cursor = cursor
        return len(events)

    async def _stream(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            # Wait for one wake-up (or the sweep's timeout); those that arrive while
            # reading are answered by the next read, which covers them all.
            async for _ in conn.notifies(timeout=self.sweep_seconds, stop_after=1):
                pass
            # The read doubles as the health check of an idle connection.
            await self._read(conn)


_listener: EventListener | None = None


def listener_running(
    *, on_events: EventsCallback, retry_min: float = 0.1, retry_max: float = 5.0
) -> EventListener:
    """The process's listener, started on the running event loop if it is not yet."""
    global _listener
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.loop is not loop:
        _listener = EventListener(
            conninfo=listener_conninfo(),
            on_events=on_events,
            retry_min=retry_min,
            retry_max=retry_max,
        )
    _listener.start()
    return _listener


async def listener_ready(
    *, on_events: EventsCallback, timeout: float, retry_min: float = 0.1, retry_max: float = 5.0
) -> EventListener | None:
    """The running listener once its first LISTEN is in place; None if that takes longer."""
    listener = listener_running(on_events=on_events, retry_min=retry_min, retry_max=retry_max)
    if not listener.started.is_set():
        try:
            async with asyncio.timeout(timeout):
                await listener.started.wait()
        except TimeoutError:
            return None
    return listener
