"""The web pool's check: no round trip for a connection with nothing to read; a dead one never lent."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from shop.pool_check import check_quietly, pool_check_quietly, readable
from tests.processes import process_env
from tests.processes import test_database_url as database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The backend pid of every connection given psycopg_pool's empty-query check."""
    checked: list[int] = []
    full_check = ConnectionPool.check_connection

    def counted(conn: psycopg.Connection[Any]) -> None:
        checked.append(conn.info.backend_pid)
        full_check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return checked


def test_pool_check_quietly__swaps_the_empty_query_check_django_gives() -> None:
    # As Django makes its pool: the empty-query check on every connection lent.
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url_of_tests(),
        min_size=1,
        max_size=1,
        check=ConnectionPool.check_connection,
        open=False,
    )
    pool_check_quietly(type("Wrapper", (), {"pool": pool})())
    assert pool._check is check_quietly


def test_check_quietly__lends_a_quiet_connection_unchecked__a_dead_one_checked_and_replaced(
    full_checks: list[int],
) -> None:
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url_of_tests(), min_size=1, max_size=1, check=check_quietly, open=False
    )
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


def test_check_quietly__a_live_connection_with_something_to_read_gets_the_full_check(
    full_checks: list[int],
) -> None:
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        conn.execute("LISTEN pool_check")
        with psycopg.connect(database_url_of_tests(), autocommit=True) as other:
            other.execute("NOTIFY pool_check")
        deadline = time.monotonic() + 30
        while not readable(conn.pgconn.socket) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert readable(conn.pgconn.socket)  # the notification waits on the socket
        check_quietly(conn)  # the empty query answers: no exception
        assert full_checks == [conn.info.backend_pid]
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_web_process__its_pool_gets_the_quiet_check() -> None:
    """shop.asgi swaps the check Django gave its pool (a psycopg_pool change would undo it)."""
    probe = (
        "import shop.asgi\n"
        "from django.db import connection\n"
        "from shop.pool_check import check_quietly\n"
        "assert connection.pool._check is check_quietly, connection.pool._check\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
