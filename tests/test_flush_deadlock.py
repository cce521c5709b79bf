"""A test's flush survives a deadlock with a web process still reading the tables.

Transactional tests empty the database with one TRUNCATE of every table, which takes
its locks table by table. A live web process (the listener, a socket's re-check) may
at that moment hold a lock on a later table and ask for an earlier one: PostgreSQL
breaks the deadlock by failing one side, and when that side was the TRUNCATE the test
errored at teardown (CI, stop 13: "Database test_hearth couldn't be flushed").
"""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest
from django.core.management.color import no_style
from django.core.management.sql import sql_flush
from django.db import connection

from tests.processes import test_database_url as database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)


def test_flush__a_reader_holding_a_later_table_while_asking_for_an_earlier__still_empties(
    make_outlet,
) -> None:
    make_outlet("north")
    (truncate,) = sql_flush(no_style(), connection)
    tables = re.findall(r'"([^"]+)"', truncate)
    first, last = tables[0], tables[-1]
    holding = threading.Event()
    outcome: list[BaseException | None] = []

    def reader() -> None:
        try:
            with psycopg.connect(database_url_of_tests(), autocommit=False) as other:
                # The TRUNCATE (1 s, the server's default) finds the deadlock first and is
                # its victim, however slowly this side runs on a busy machine.
                other.execute("SET deadlock_timeout = '30s'")
                other.execute(f'SELECT 1 FROM "{last}" LIMIT 1')
                holding.set()
                # Wait until the flush is queued behind this lock, then ask for its first table.
                for _ in range(200):
                    waiting = other.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                        (last,),
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    time.sleep(0.05)
                other.execute(f'SELECT 1 FROM "{first}" LIMIT 1')
                other.commit()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert holding.wait(10)
    connection.ops.execute_sql_flush([truncate])
    thread.join(30)
    assert outcome == [None]  # the reader went through; the TRUNCATE gave way and went again
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{first}"')
        assert cursor.fetchone() == (0,)
