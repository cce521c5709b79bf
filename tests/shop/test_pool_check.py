"""The web pool's check: no round trip for a connection with nothing to read; a dead one never lent."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from shop.database import _readable, check_quietly, pool_check_quietly
from tests.processes import test_database_url as database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)


def test_pool_check__no_round_trip_for_a_quiet_connection__a_dead_one_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As Django makes its pool: the empty-query check on every connection lent.
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url_of_tests(),
        min_size=1,
        max_size=1,
        check=ConnectionPool.check_connection,
        open=False,
    )
    pool_check_quietly(type("Wrapper", (), {"pool": pool})())
    full_checks: list[int] = []
    full_check = ConnectionPool.check_connection

    def counted(conn: psycopg.Connection[Any]) -> None:
        full_checks.append(conn.info.backend_pid)
        full_check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    with pool:
        for _ in range(3):
            with pool.connection() as conn:
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        assert full_checks == []  # lent three times, no empty query

        with psycopg.connect(database_url_of_tests(), autocommit=True) as admin:
            # Waits (up to 10 s) until the backend has ended, its reason sent.
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        with pool.connection() as conn:
            again = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    assert full_checks[:1] == [pid]  # the dead one was checked the slow way, and not lent
    assert again != pid


def test_check_quietly__a_connection_with_a_notice_waiting_is_checked_and_still_lent() -> None:
    # Something to read on a live connection (here a NOTIFY it listens for): the full check.
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        conn.execute("LISTEN pool_check")
        with psycopg.connect(database_url_of_tests(), autocommit=True) as other:
            other.execute("NOTIFY pool_check")
        deadline = time.monotonic() + 10
        while not _readable(conn.pgconn.socket) and time.monotonic() < deadline:
            time.sleep(0.01)
        check_quietly(conn)  # does not raise: the empty query answered
        assert conn.execute("SELECT 1").fetchone() == (1,)
