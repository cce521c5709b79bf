"""Waking listeners: one empty NOTIFY per process per window, only after a commit that wrote events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import transaction

from queueing import sql
from queueing.events import events_cursor, events_since
from queueing.wake import Waker, waker
from tests import processes
from tests.orders import place

MakeOutlet = Callable[..., tuple[Any, str]]


@pytest.fixture
def wakes(db: None) -> Iterator[psycopg.Connection[Any]]:
    """A connection LISTENing on the events channel, as a web process's listener does."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as conn:
        conn.execute(sql.EVENTS_LISTEN)
        yield conn


def test_waker__a_burst_costs_one_notify_per_window(wakes: psycopg.Connection[Any]) -> None:
    burst = Waker(window=0.5)
    try:
        started = time.monotonic()
        threads = [
            threading.Thread(target=lambda: [burst.wake() for _ in range(500)]) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls_took = time.monotonic() - started
        # The first wake-up goes out at once, the rest of the burst shares the next window.
        received = list(wakes.notifies(timeout=10, stop_after=1))
        received += wakes.notifies(timeout=burst.window * 3)
        assert 1 <= len(received) <= 2 + int(calls_took / burst.window)
        assert burst.sent == len(received)
        assert {(n.channel, n.payload) for n in received} == {(sql.EVENTS_CHANNEL, "")}
    finally:
        burst.close()


@pytest.mark.django_db(transaction=True)
def test_many_changes_in_one_transaction__one_wake_up_after_the_commit(
    make_outlet: MakeOutlet, wakes: psycopg.Connection[Any]
) -> None:
    make_outlet("camden")
    list(wakes.notifies(timeout=10, stop_after=1))  # the outlet added and vouched for:
    while list(wakes.notifies(timeout=1, stop_after=1)):  # not this test's (one wake-up or two)
        pass
    cursor, _ = events_cursor()
    with transaction.atomic():
        tickets = [place(zone=f"Z{i}") for i in range(50)]
        assert not waker._due.is_set()  # nothing is due before the commit
        assert list(wakes.notifies(timeout=0.2)) == []
    # Fifty changes, one commit: one wake-up, and it carries nothing.
    (wake,) = list(wakes.notifies(timeout=10, stop_after=1)) + list(wakes.notifies(timeout=1))
    assert wake.payload == ""
    events, _ = events_since(cursor)
    assert [e["id"] for e in events] == [t.event_id for t in tickets]
