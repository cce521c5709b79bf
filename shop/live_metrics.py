"""This web process's live figures: open sockets by kind, and event → socket lag.

Only the web process that holds a socket knows of it, and one scrape reaches one
web process of many (on several machines), so each process keeps its figures in
memory and writes them, as one row of ``shop_webprocess``, every
``HEARTH_WEB_METRICS_INTERVAL`` seconds from a task started with its listener
(one statement off the event path). ``/metrics`` reads the rows seen recently:
the lag is a histogram per process (cumulative since the process started, so
Prometheus sums ``rate()`` over processes, and a process that dies simply ends
its series); sockets are gauges per process and summed. A row not written for
three intervals is a process gone: the scrape ignores it and the next write of
any process deletes it (a process that was only frozen writes its row again).

The lag runs from the event's ``at`` (its transaction's start, database clock: so
it includes the writing transaction's own time, an upper bound of commit → socket;
PostgreSQL keeps no commit time unless ``track_commit_timestamp`` is on) to the
moment this process has handed it to its sockets' queues. The process's
clock is read against the database's at every write, so machines whose clocks
differ still measure the lag on one clock.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from psycopg.types.json import Jsonb

log = logging.getLogger("hearth.live")

SOCKET_KINDS = ("kitchen", "order", "ops")
# Upper bounds (seconds) of the lag histogram's buckets; "+Inf" is added after them.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STALE_INTERVALS = 3

# Delete the rows not written for ``stale`` seconds (processes gone), skipping those
# another process is deleting; a statement (and transaction) of its own, so it never
# holds another row's lock while this process's own row is written.
WEB_PROCESSES_GONE = """
DELETE FROM shop_webprocess WHERE id IN (
    SELECT id FROM shop_webprocess
    WHERE seen_at < now() - make_interval(secs => %(stale)s)
      AND NOT (host = %(host)s AND pid = %(pid)s AND boot = %(boot)s)
    ORDER BY id FOR UPDATE SKIP LOCKED)
"""

# Write this process's row; answer with the database's clock for the clock offset.
WEB_PROCESS_WRITE = """
INSERT INTO shop_webprocess AS p
    (host, pid, boot, seen_at, kitchen_sockets, order_sockets, ops_sockets,
     lag_buckets, lag_sum, lag_count)
VALUES (%(host)s, %(pid)s, %(boot)s, now(), %(kitchen)s, %(order)s, %(ops)s,
        %(lag_buckets)s, %(lag_sum)s, %(lag_count)s)
ON CONFLICT (host, pid, boot) DO UPDATE SET
    seen_at = now(),
    kitchen_sockets = excluded.kitchen_sockets,
    order_sockets = excluded.order_sockets,
    ops_sockets = excluded.ops_sockets,
    lag_buckets = excluded.lag_buckets,
    lag_sum = excluded.lag_sum,
    lag_count = excluded.lag_count
RETURNING extract(epoch FROM clock_timestamp())::float8 AS db_clock
"""

# The rows of the processes seen in the last ``stale`` seconds, by name.
WEB_PROCESSES_SEEN = """
SELECT host || ':' || pid || ':' || boot AS process, kitchen_sockets, order_sockets, ops_sockets,
       lag_buckets::text AS lag_buckets, lag_sum, lag_count
FROM shop_webprocess
WHERE seen_at >= now() - make_interval(secs => %(stale)s)
ORDER BY host, pid, boot
"""


class LiveFigures:
    """One process's sockets open by kind and its lag histogram, kept on its event loop."""

    def __init__(self) -> None:
        self.sockets: Counter[str] = Counter()
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.lag_sum = 0.0
        self.clock_offset = 0.0  # the database's clock less this process's (seconds)

    def socket_opened(self, kind: str) -> None:
        self.sockets[kind] += 1

    def socket_closed(self, kind: str) -> None:
        self.sockets[kind] -= 1

    def events_fanned_out(self, events: Iterable[dict[str, Any]]) -> None:
        """Count the lag of events this process has just handed to its sockets."""
        now = time.time() + self.clock_offset
        for event in events:
            at = event.get("at")
            if not isinstance(at, str):
                continue
            lag = max(0.0, now - datetime.fromisoformat(at).timestamp())
            self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self.lag_sum += lag

    def row(self) -> dict[str, Any]:
        """The parameters of ``WEB_PROCESS_WRITE`` (buckets cumulative, as Prometheus has them)."""
        cumulative, total = {}, 0
        for bound, count in zip((*map(str, LAG_BUCKETS), "+Inf"), self.lag_counts, strict=True):
            total += count
            cumulative[bound] = total
        return {
            "host": socket.gethostname()[:200],
            "pid": os.getpid(),
            "boot": BOOT,
            **{kind: self.sockets[kind] for kind in SOCKET_KINDS},
            "lag_buckets": cumulative,
            "lag_sum": self.lag_sum,
            "lag_count": total,
        }


figures = LiveFigures()
BOOT = secrets.token_hex(4)  # this process's start: host and pid alone may repeat (containers)


def stale_seconds() -> float:
    return STALE_INTERVALS * float(settings.HEARTH_WEB_METRICS_INTERVAL)


def web_process_write(row: dict[str, Any]) -> float:
    """Write this process's row; returns the database's clock less this process's (seconds)."""
    try:
        with connection.cursor() as cursor:
            sent = time.time()
            params: dict[str, Any] = {
                **row,
                "lag_buckets": Jsonb(row["lag_buckets"]),
                "stale": stale_seconds(),
            }
            cursor.execute(WEB_PROCESSES_GONE, params)
            cursor.execute(WEB_PROCESS_WRITE, params)
            answered = time.time()
            (db_clock,) = cursor.fetchone()
    finally:
        connection.close()  # back to the pool until the next write
    return float(db_clock) - (sent + answered) / 2


def web_processes_seen() -> list[dict[str, Any]]:
    """The rows of the web processes that wrote theirs within the stale window."""
    with connection.cursor() as cursor:
        cursor.execute(WEB_PROCESSES_SEEN, {"stale": stale_seconds()})
        names = [col.name for col in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["lag_buckets"] = json.loads(row["lag_buckets"])
    return rows


_awrite = sync_to_async(web_process_write, thread_sensitive=False)


async def report_forever() -> None:
    """Write this process's row every interval, for as long as the process runs."""
    while True:
        try:
            figures.clock_offset = await _awrite(figures.row())
        except Exception as exc:  # noqa: BLE001 (written next time; the figures stay in memory)
            log.warning("web process metrics not written (%s: %s)", type(exc).__name__, exc)
        await asyncio.sleep(float(settings.HEARTH_WEB_METRICS_INTERVAL))


_reporter: asyncio.Task[None] | None = None


def reporting() -> None:
    """Start this process's writer on the running event loop unless it runs already."""
    global _reporter
    loop = asyncio.get_running_loop()
    if _reporter is None or _reporter.done() or _reporter.get_loop() is not loop:
        _reporter = loop.create_task(report_forever(), name="hearth-web-metrics")
