"""The web process's pool checks a connection it lends without a round trip, when it can.

Django's pool (``CONN_HEALTH_CHECKS``) runs psycopg_pool's check, an empty query,
on every connection it lends: one more round trip to PostgreSQL per request. A
server that ends a session (a restart, ``pg_terminate_backend``, an idle timeout)
sends its reason and closes the socket, so a pooled connection with nothing to
read is as alive as an empty query could show; only one with something waiting
(or a broken one) is checked the slow way. A link cut with no word from the server
is missed by both: the empty query would wait on it as the request's query does.
"""

from __future__ import annotations

import logging
import select
from typing import Any

from psycopg_pool import ConnectionPool

log = logging.getLogger("hearth.database")


def pool_check_quietly(wrapper: Any) -> None:
    """Give the pool of Django's connection ``wrapper`` the quiet check (the pool is made now)."""
    pool: Any = getattr(wrapper, "pool", None)  # None: this process does not pool
    if pool is None:
        return
    # psycopg_pool takes its check when the pool is made, and Django makes it with the
    # empty query (or none, without health checks); there is no setter.
    check = getattr(pool, "_check", "unknown")
    if check is ConnectionPool.check_connection:
        pool._check = check_quietly
    elif check is not None:  # None: no health checks were asked for
        log.warning("the web pool keeps its check (%r): an empty query every request", check)


def check_quietly(conn: Any) -> None:
    """psycopg_pool's check (an empty query) only when the idle connection has something to read."""
    try:
        quiet = not conn.closed and not readable(conn.pgconn.socket)
    except Exception:  # noqa: BLE001 - a broken connection: the full check says so
        quiet = False
    if not quiet:
        ConnectionPool.check_connection(conn)


def readable(fd: int) -> bool:
    """Whether something waits to be read on ``fd`` (or it was closed), without waiting."""
    poller = select.poll()  # not select(): a busy web process has descriptors past 1,024
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
