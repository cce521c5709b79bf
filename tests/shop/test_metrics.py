"""/metrics: Prometheus text, read from PostgreSQL, behind a bearer token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from queueing.models import Outlet
from queueing.services import order_claim_next
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
    served = {family.name for family in text_string_to_metric_families(text)}
    dashboard = Path(__file__).resolve().parents[2] / "docs/grafana/hearth-dashboard.json"
    charted = set(re.findall(r"hearth_[a-z_]+", dashboard.read_text()))
    assert charted, "the dashboard charts nothing"
    assert charted <= served, f"charted but not served: {sorted(charted - served)}"
