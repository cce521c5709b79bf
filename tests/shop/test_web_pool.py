"""The web process's connection pool lends no connection whose backend the server has ended."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from django.db import connection

from queueing.models import Outlet
from tests.processes import web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _terminate_pooled_backends() -> int:
    """End every client session of the test database but this one and the hearth-* ones
    (listener, waker, heartbeats): the web process's pooled connections; how many. Each has
    ended (its reason sent, its socket closed) when this returns."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity a"
            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
            " AND a.backend_type = 'client backend'"
            " AND a.application_name NOT LIKE 'hearth-%%'"  # its own listener, waker, beats
        )
        return len(cursor.fetchall())


def test_web_pool__connections_the_server_closed_are_not_lent(
    tmp_path: Path, menu: None, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    make_outlet("north")
    order = {
        "kind": "takeaway",
        "outlet": "north",
        "lines": [{"item": "margherita", "qty": 1}],
        "customer": {"name": "Ada"},
    }
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=30) as http:
        token = http.post("/api/orders", json=order).json()["token"]
        for _ in range(5):  # the pool holds its connections now
            assert http.get(f"/api/orders/{token}").status_code == 200
        assert _terminate_pooled_backends() >= 1
        # Every pooled connection is dead: each request must get a live one all the same.
        statuses = [http.get(f"/api/orders/{token}").status_code for _ in range(10)]
        statuses.append(http.post("/api/orders", json=order).status_code)
    assert statuses == [200] * 10 + [202]
