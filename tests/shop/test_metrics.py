"""/metrics: Prometheus text, read from PostgreSQL, behind a bearer token."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db.models.functions import Now
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from queueing.models import Outlet
from queueing.services import order_claim_next
from shop.live_metrics import LiveFigures, web_process_write
from shop.models import WebProcess
from tests.orders import place

TOKEN = "metrics-secret-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.django_db
def test_metrics__off_when_no_token_is_configured(client: Client, settings) -> None:
    settings.HEARTH_METRICS_TOKEN = ""
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_metrics__refused_without_the_token(client: Client, settings, header: str | None) -> None:
    settings.HEARTH_METRICS_TOKEN = TOKEN
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    answer = client.get("/metrics", **extra)
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert b"hearth_" not in answer.content


def test_metrics__queue_outlets_and_recent_events(client: Client, settings, north: Outlet) -> None:
    settings.HEARTH_METRICS_TOKEN = TOKEN
    for _ in range(3):
        place("takeaway", outlet=north)
    order_claim_next(outlet=north, station="s1")

    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain")
    samples = _samples(answer.content.decode())
    assert samples[("hearth_queue_orders", (("outlet", "north"), ("state", "queued")))] == 2
    assert samples[("hearth_queue_orders", (("outlet", "north"), ("state", "preparing")))] == 1
    assert samples[("hearth_queue_oldest_age_seconds", (("outlet", "north"),))] >= 0
    assert samples[("hearth_outlet_state", (("outlet", "north"), ("state", "active")))] == 1
    assert samples[("hearth_outlet_state", (("outlet", "north"), ("state", "down")))] == 0
    assert samples[("hearth_events_last_minute", (("type", "placed"),))] == 3
    assert samples[("hearth_events_last_minute", (("type", "claimed"),))] == 1
    assert samples[("hearth_events_last_minute", (("type", "rerouted"),))] == 0
    assert samples[("hearth_orders_needing_attention", ())] == 0


def test_grafana_dashboard__charts_only_metrics_that_exist(
    client: Client, settings, north: Outlet
) -> None:
    settings.HEARTH_METRICS_TOKEN = TOKEN
    place("takeaway", outlet=north)
    from queueing.models import NotifierStatus

    NotifierStatus.objects.create(pk=1, leader="host:1")
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    served = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in (("", "_bucket", "_count", "_sum") if family.type == "histogram" else ("",))
    }
    dashboard = Path(__file__).resolve().parents[2] / "docs/grafana/hearth-dashboard.json"
    charted = set(re.findall(r"hearth_[a-z_]+", dashboard.read_text()))
    assert charted, "the dashboard charts nothing"
    assert charted <= served, f"charted but not served: {sorted(charted - served)}"


def test_live_figures__lag_lands_in_cumulative_buckets() -> None:
    figures = LiveFigures()
    now = datetime.now(UTC)
    figures.events_fanned_out(
        [{"at": (now - timedelta(seconds=s)).isoformat()} for s in (0.2, 0.7, 3.0, 60.0)]
        + [{"at": None}]  # an event without a time is not counted
    )
    row = figures.row()
    assert row["lag_count"] == 4
    assert 63.5 < row["lag_sum"] < 70
    buckets = row["lag_buckets"]
    assert (buckets["0.1"], buckets["0.25"], buckets["1.0"], buckets["5.0"]) == (0, 1, 2, 3)
    assert (buckets["30.0"], buckets["+Inf"]) == (3, 4)


@pytest.mark.django_db(transaction=True)
def test_web_processes__a_stale_row_is_not_shown_and_the_next_write_deletes_it(
    client: Client, settings
) -> None:
    settings.HEARTH_METRICS_TOKEN = TOKEN
    settings.HEARTH_WEB_METRICS_INTERVAL = 1  # gone after 3 s without a write
    WebProcess.objects.create(host="gone", pid=1, boot="0", kitchen_sockets=4)
    WebProcess.objects.update(seen_at=Now() - timedelta(seconds=10))

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        return _samples(answer.content.decode())

    samples = scrape()
    assert samples[("hearth_web_processes", ())] == 0
    assert samples[("hearth_sockets_open", (("kind", "kitchen"),))] == 0

    figures = LiveFigures()
    figures.socket_opened("kitchen")
    figures.socket_opened("order")
    figures.socket_opened("order")
    figures.socket_closed("order")
    row = figures.row()
    offset = web_process_write(row)
    assert abs(offset) < 5  # one machine: the database's clock is this process's

    assert list(WebProcess.objects.values_list("host", "pid", "boot")) == [
        (row["host"], row["pid"], row["boot"])
    ]
    samples = scrape()
    process = (("process", f"{row['host']}:{row['pid']}:{row['boot']}"),)
    assert samples[("hearth_web_processes", ())] == 1
    assert samples[("hearth_sockets_open", (("kind", "kitchen"),))] == 1
    assert samples[("hearth_sockets_open", (("kind", "order"),))] == 1
    assert samples[("hearth_web_process_sockets_open", (("kind", "order"), *process))] == 1
    assert samples[("hearth_socket_lag_seconds_count", process)] == 0


@pytest.mark.django_db(transaction=True)
def test_web_processes__two_with_the_same_host_and_pid_are_two(client: Client, settings) -> None:
    """Containers: the same host name and pid 1 in each; their starts tell them apart."""
    settings.HEARTH_METRICS_TOKEN = TOKEN
    for boot, sockets in (("aaaa", 2), ("bbbb", 3)):
        figures = LiveFigures()
        for _ in range(sockets):
            figures.socket_opened("order")
        web_process_write({**figures.row(), "host": "web", "pid": 1, "boot": boot})
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    samples = _samples(answer.content.decode())
    assert samples[("hearth_web_processes", ())] == 2
    assert samples[("hearth_sockets_open", (("kind", "order"),))] == 5
    for boot, sockets in (("aaaa", 2), ("bbbb", 3)):
        labels = (("kind", "order"), ("process", f"web:1:{boot}"))
        assert samples[("hearth_web_process_sockets_open", labels)] == sockets
