"""Shared fixtures: a real PostgreSQL (DATABASE_URL, or the embedded one), the menu, outlets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.db.backends.postgresql.operations import DatabaseOperations
from hypothesis import settings as hypothesis_settings

from queueing.models import Outlet
from queueing.services import outlet_create
from queueing.services.outlets import outlet_activate

# No per-example deadline: on a busy machine (CI, other work on the same cores) an
# example's wall time says nothing about the code, and a test that fails on a busy
# machine is a defect of the test.
hypothesis_settings.register_profile("hearth", deadline=None)
hypothesis_settings.load_profile("hearth")


FLUSH_TRIES = 5


def _flush_retried_on_deadlock(flush: Callable[..., None]) -> Callable[..., None]:
    """A transactional test's TRUNCATE, tried again when PostgreSQL picks it as a deadlock's victim.

    The TRUNCATE takes its locks table by table; a live web process of the test (the
    listener, a socket's re-check) may hold a later table and ask for an earlier one.
    The reader finishes once the TRUNCATE gives way, so the next try goes through.
    """

    def execute_sql_flush(self: DatabaseOperations, sql_list: list[str]) -> None:
        for attempt in range(1, FLUSH_TRIES + 1):
            try:
                return flush(self, sql_list)
            except OperationalError as exc:
                if (
                    attempt == FLUSH_TRIES
                    or self.connection.in_atomic_block  # an outer transaction is aborted: no retry
                    or not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected)
                ):
                    raise
                time.sleep(0.1 * attempt)

    return execute_sql_flush


DatabaseOperations.execute_sql_flush = _flush_retried_on_deadlock(  # type: ignore[method-assign]
    DatabaseOperations.execute_sql_flush
)


@pytest.fixture(scope="session", autouse=True)
def _waker_closed_before_teardown(django_db_setup: None) -> Iterator[None]:
    """The NOTIFY connection of this process closes before the test database is dropped."""
    yield
    from queueing.wake import waker

    waker.close()


@pytest.fixture
def menu(db: None) -> None:
    call_command("loaddata", "sample_menu", verbosity=0)


@pytest.fixture
def make_outlet(db: None) -> Callable[..., tuple[Outlet, str]]:
    """Create an outlet; returns (outlet, agent token).

    A new outlet is down until its first heartbeats; ``active=True`` (the default)
    has a manager vouch for it at once, as most tests want an outlet taking orders.
    """

    def make(
        slug: str, *, weight: int = 1, name: str = "", active: bool = True
    ) -> tuple[Outlet, str]:
        outlet, token = outlet_create(slug=slug, name=name or slug.title(), weight=weight)
        if active:
            outlet_activate(outlet=outlet)
            outlet.refresh_from_db()
        return outlet, token

    return make


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the embedded PostgreSQL if this run started it (one already running is left alone)."""
    from shop import database

    if database.started_here:
        database.embedded_server_stop()


@pytest.fixture(autouse=True)
def no_order_rate_limit(settings: Any) -> None:
    """One test client places many orders; tests/shop/test_abuse.py turns the limit back on."""
    settings.HEARTH_ORDER_RATE_LIMIT = 0
