"""The LISTEN side of the live path: one connection per web process, fanned out to socket groups.

Every queue write records its event in the writing transaction and NOTIFYs it
right after the commit (``queueing.db.events_announce``), so payloads arrive
roughly in commit order and never for a rolled-back change. The listener
forwards each payload as it arrives (ids are bigserial: they are taken in one
order and may commit in another, so "wait for the next id" would stall on a
rolled-back id or reorder what PostgreSQL already ordered).

While the connection is away nothing is delivered, so after every reconnect the
listener reads the table from a little before the last id it forwarded
(``CATCH_UP_REWIND`` ids, to take in transactions that took their id earlier but
committed while it was away) and forwards what it has not forwarded yet.

Screens replay from the table themselves on connect (``event_payloads_after``);
sockets drop ids they already sent, so a replay overlapping the stream is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from typing import Any

import psycopg
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from psycopg.conninfo import make_conninfo

from queueing import sql
from queueing.db import fetch_all, fetch_one

log = logging.getLogger("hearth.listener")

OPS_GROUP = "ops"
# The channel-layer message a consumer handles in ``hearth_events``: {"events": [...]}.
EVENTS_MESSAGE = "hearth.events"
APPLICATION_NAME = "hearth-listener"
# How far back (in ids) a catch-up reads: a transaction that took its id this
# many ids before the last forwarded one and committed during the gap is still found.
CATCH_UP_REWIND = 10_000
# How long a health-check query may take before the connection counts as dead.
HEALTH_CHECK_SECONDS = 10.0
# Every SWEEP_SECONDS the listener reads the newest events from the table and
# forwards any it was never told of: writers NOTIFY after their commit, and a
# writer that died in between leaves its events unannounced. SWEEP_REWIND ids
# back covers transactions that took their id a little before the last forwarded.
SWEEP_SECONDS = 2.0
SWEEP_REWIND = 1_000
# Django OPTIONS that are not libpq connection parameters.
_NOT_LIBPQ = {"pool", "server_side_binding", "isolation_level", "assume_role", "cursor_factory"}


class SweepingInMemoryChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, sweeping expired messages and groups once a second, not per call.

    The stock layer walks every group membership of the process on every
    ``receive`` and ``group_send``; with a thousand sockets (a thousand order
    groups) that walk, once per message per socket, was the largest single cost
    of a web process's event loop. Expiry is a safety net (60 s), so checking it
    once a second changes nothing a screen can see.
    """

    sweep_interval = 1.0
    _last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            super()._clean_expired()


def kitchen_group(slug: str) -> str:
    return f"kitchen.{slug}"


def order_group(token: str) -> str:
    return f"order.{token}"


def event_groups(event: dict[str, Any]) -> list[str]:
    """Who hears an event: ops, the kitchens of its outlet and the outlet it left, its order."""
    groups = [OPS_GROUP]
    for slug in (event.get("outlet"), event.get("from_outlet")):
        if isinstance(slug, str) and slug and kitchen_group(slug) not in groups:
            groups.append(kitchen_group(slug))
    token = event.get("order")
    if isinstance(token, str) and token:
        groups.append(order_group(token))
    return groups


def listener_conninfo() -> str:
    """libpq conninfo of Django's default database, named so pg_stat_activity shows the listener."""
    db: dict[str, Any] = settings.DATABASES["default"]
    options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if k not in _NOT_LIBPQ}
    params: dict[str, Any] = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        # A half-open TCP connection is found by the kernel too, not only by the health check.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        **options,
        "application_name": f"{APPLICATION_NAME}:{os.getpid()}",
    }
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def latest_event_id() -> int:
    """The newest event id now (0 when there is none)."""
    row = fetch_one(sql.EVENTS_LAST_ID, {})
    return int(row["last_event_id"]) if row else 0


def event_payloads_after(
    *,
    after: int,
    outlet_id: int | None = None,
    order_id: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Events with id > ``after`` (of one outlet, one order, or all), oldest first, as NOTIFY payloads.

    With ``limit``, only the newest ``limit`` of them.
    """
    params: dict[str, Any] = {"after": after, "limit": limit}
    if order_id is not None:
        statement = sql.EVENTS_AFTER_FOR_ORDER
        params["order_id"] = order_id
    elif outlet_id is not None:
        statement = sql.EVENTS_AFTER_FOR_OUTLET
        params["outlet_id"] = outlet_id
    else:
        statement = sql.EVENTS_AFTER
    return [json.loads(row["payload"]) for row in fetch_all(statement, params)]


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    """Every key of the payload present, so outlet-level and order events have one shape."""
    for key in ("order", "number", "kind", "outlet", "from_outlet", "at"):
        event.setdefault(key, None)
    event.setdefault("fence", 0)
    event.setdefault("detail", {})
    return event


class EventListener:
    """Owns the process's LISTEN connection and forwards every event to the channel layer.

    Two tasks: the connection task reads payloads (and catch-ups) into a pending
    list in arrival order; the fan-out task sends whatever is pending as one
    message per group. Under load several events then share one channel-layer
    message, so each socket pays its per-message cost once per batch, not once per
    event; with little traffic a batch is one event and nothing waits.
    """

    def __init__(self, *, conninfo: str, retry_min: float, retry_max: float) -> None:
        self.conninfo = conninfo
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()  # the first LISTEN is in place
        self.connected = False
        self.backend_pid: int | None = None
        self.reconnects = 0
        self.forwarded = 0
        # The highest id accepted, and the ids accepted above ``last_id - CATCH_UP_REWIND``.
        self.last_id: int | None = None
        # Events up to the first mark were in the table before this process listened:
        # screens replay them if they ask; a catch-up never forwards them.
        self.first_mark = 0
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks or any(t.done() for t in self._tasks):
            for task in self._tasks:
                task.cancel()
            self._tasks = [
                self.loop.create_task(self._run(), name="hearth-listener"),
                self.loop.create_task(self._fan_out_loop(), name="hearth-listener-fan-out"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(sql.EVENTS_LISTEN)
                    self.backend_pid = conn.info.backend_pid
                    caught_up = await self._catch_up(conn)
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

    async def _catch_up(
        self, conn: psycopg.AsyncConnection[Any], rewind: int = CATCH_UP_REWIND
    ) -> int:
        """After LISTEN: set the first mark, or queue what committed while the connection was away."""
        if self.last_id is None:
            cur = await conn.execute(sql.EVENTS_LAST_ID)
            row = await cur.fetchone()
            self.last_id = self.first_mark = int(row[0]) if row else 0
            return 0
        after = max(self.first_mark, self.last_id - rewind)
        cur = await conn.execute(sql.EVENTS_AFTER, {"after": after, "limit": None})
        return sum(self.accept(payload) for _id, payload in await cur.fetchall())

    async def _stream(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=SWEEP_SECONDS):
                self.accept(notify.payload)
            # The sweep doubles as the health check of an idle connection.
            async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                swept = await self._catch_up(conn, rewind=SWEEP_REWIND)
            if swept:
                log.debug("listener swept up %d event(s) not yet announced", swept)

    def accept(self, payload: str) -> bool:
        """Queue one event for its groups unless it was queued already; True when queued."""
        try:
            event = json.loads(payload)
            event_id = int(event["id"])
        except (ValueError, TypeError, KeyError):
            log.error("listener dropped a malformed event payload: %.200r", payload)
            return False
        if event_id in self._recent:
            return False
        self._remember(event_id)
        self._pending.append(normalise_event(event))
        self._wake.set()
        return True

    async def _fan_out_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                await self.fan_out(batch)
            except Exception:  # a bug here must not stop live updates for good
                log.exception("listener could not fan out %d event(s)", len(batch))

    async def fan_out(self, events: list[dict[str, Any]]) -> None:
        """One channel-layer message per group with its events in arrival (commit) order."""
        by_group: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            for group in event_groups(event):
                by_group.setdefault(group, []).append(event)
        layer = get_channel_layer()
        # Sent side by side: a batch's groups are independent, and each group gets one
        # message per batch, so each socket still sees commit order.
        await asyncio.gather(
            *(
                layer.group_send(group, {"type": EVENTS_MESSAGE, "events": batch})
                for group, batch in by_group.items()
            )
        )
        self.forwarded += len(events)

    def _remember(self, event_id: int) -> None:
        self._recent.add(event_id)
        self._recent_order.append(event_id)
        if self.last_id is None or event_id > self.last_id:
            self.last_id = event_id
        floor = self.last_id - CATCH_UP_REWIND
        while self._recent_order and self._recent_order[0] <= floor:
            self._recent.discard(self._recent_order.popleft())


_listener: EventListener | None = None


def listener_running() -> EventListener:
    """The process's listener, started on the running event loop if it is not yet."""
    global _listener
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.loop is not loop:
        _listener = EventListener(
            conninfo=listener_conninfo(),
            retry_min=float(getattr(settings, "HEARTH_LISTENER_RETRY_MIN", 0.1)),
            retry_max=float(getattr(settings, "HEARTH_LISTENER_RETRY_MAX", 5.0)),
        )
    _listener.start()
    return _listener


async def listener_ready(*, timeout: float) -> EventListener | None:
    """The running listener once its first LISTEN is in place; None if that takes longer than ``timeout``."""
    listener = listener_running()
    if not listener.started.is_set():
        try:
            async with asyncio.timeout(timeout):
                await listener.started.wait()
        except TimeoutError:
            return None
    return listener
