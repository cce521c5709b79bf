"""``/metrics``: the queue's figures in Prometheus' text format, behind a bearer token.

Every figure is read from PostgreSQL at each scrape, so any web process answers
for the whole deployment (several web processes and notifiers on several
machines). The queue's figures are the database's own: rates are windows over
the event table (an index on its time keeps them cheap) rather than
process-local counters, and a restart loses nothing. Only open sockets and
commit → socket lag live in the web processes: each writes its own row every few
seconds (``shop.live_metrics``) and the scrape reads the rows of them all.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from queueing import selectors
from queueing.models import EventType, OrderState, OutletState
from shop.live_metrics import LAG_BUCKETS, SOCKET_KINDS, web_processes_seen

WINDOW_SECONDS = 60
QUEUE_STATES = (OrderState.QUEUED, OrderState.PREPARING, OrderState.READY)


class QueueCollector(Collector):
    """One scrape: outlets, their queues, the notifier and the last minute's events."""

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "hearth_outlet_state", "1 for the outlet's current state", labels=["outlet", "state"]
        )
        heartbeat = GaugeMetricFamily(
            "hearth_outlet_heartbeat_age_seconds",
            "Seconds since the outlet's last heartbeat (database clock)",
            labels=["outlet"],
        )
        depth = GaugeMetricFamily(
            "hearth_queue_orders", "Open orders at the outlet", labels=["outlet", "state"]
        )
        oldest = GaugeMetricFamily(
            "hearth_queue_oldest_age_seconds",
            "Age of the outlet's oldest order not yet ready (0 when none)",
            labels=["outlet"],
        )
        for outlet in selectors.outlets_health():
            health: Any = outlet  # annotated by the selector: heartbeat_age, oldest_age, counts
            for choice in OutletState:
                state.add_metric([outlet.slug, choice.value], float(outlet.state == choice))
            if health.heartbeat_age is not None:
                heartbeat.add_metric([outlet.slug], health.heartbeat_age.total_seconds())
            for order_state in QUEUE_STATES:
                depth.add_metric([outlet.slug, order_state.value], getattr(health, order_state))
            age = health.oldest_age.total_seconds() if health.oldest_age else 0.0
            oldest.add_metric([outlet.slug], age)
        yield from (state, heartbeat, depth, oldest)

        counted = selectors.events_counted_since(seconds=WINDOW_SECONDS)
        events = GaugeMetricFamily(
            "hearth_events_last_minute",
            "Events written in the last minute, by type (claims, completions, reroutes, …)",
            labels=["type"],
        )
        for event_type in EventType:
            events.add_metric([event_type.value], counted.get(event_type.value, 0))
        yield events

        yield GaugeMetricFamily(
            "hearth_orders_needing_attention",
            "Orders set aside for a manager",
            value=selectors.orders_needing_attention_count(),
        )
        yield GaugeMetricFamily(
            "hearth_orders_waiting",
            "Open orders no outlet holds (every outlet was down)",
            value=selectors.orders_waiting_count(),
        )

        status: Any = selectors.notifier_status()  # annotated with tick_age
        leader = GaugeMetricFamily(
            "hearth_notifier_leader", "1 for the leading notifier", labels=["leader"]
        )
        if status is not None and status.leader:
            leader.add_metric([status.leader], 1)
        yield leader
        tick_age = GaugeMetricFamily(
            "hearth_notifier_last_tick_age_seconds",
            "Seconds since the leading notifier's last tick (database clock)",
        )
        if status is not None and status.tick_age is not None:
            tick_age.add_metric([], status.tick_age.total_seconds())
        yield tick_age
        yield GaugeMetricFamily(
            "hearth_notifier_alert",
            "1 while the notifier holds an alert (e.g. most outlets fell silent at once)",
            value=float(bool(status and status.alert)),
        )


class WebProcessCollector(Collector):
    """The web processes' own figures, as each last wrote them: sockets and commit → socket lag."""

    def collect(self) -> Iterator[Metric]:
        rows = web_processes_seen()
        yield GaugeMetricFamily(
            "hearth_web_processes",
            "Web processes that reported in the last three intervals (those with a listener)",
            value=len(rows),
        )
        total = GaugeMetricFamily(
            "hearth_sockets_open", "Open live sockets of all web processes", labels=["kind"]
        )
        each = GaugeMetricFamily(
            "hearth_web_process_sockets_open",
            "Open live sockets of one web process (host:pid:boot)",
            labels=["process", "kind"],
        )
        lag = HistogramMetricFamily(
            "hearth_socket_lag_seconds",
            "From an event's write (its 'at': its transaction's start, database clock; an upper "
            "bound of commit to socket) to its fan-out to the process's "
            "sockets; per process since it started: sum rate() by le across processes",
            labels=["process"],
        )
        bounds = (*map(str, LAG_BUCKETS), "+Inf")
        for kind in SOCKET_KINDS:
            total.add_metric([kind], sum(row[f"{kind}_sockets"] for row in rows))
        for row in rows:
            for kind in SOCKET_KINDS:
                each.add_metric([row["process"], kind], row[f"{kind}_sockets"])
            written = row["lag_buckets"]
            if set(written) != set(bounds):
                continue  # a release with other buckets: its series would not add up with these
            lag.add_metric(
                [row["process"]],
                [(bound, float(written[bound])) for bound in bounds],
                sum_value=row["lag_sum"],
            )
        yield from (total, each, lag)


def _authorised(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The scrape; 404 while HEARTH_METRICS_TOKEN is empty, 401 without that token."""
    token = settings.HEARTH_METRICS_TOKEN
    if not token:
        raise Http404("metrics are off")
    if not _authorised(request, token):
        answer = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        answer["WWW-Authenticate"] = 'Bearer realm="hearth metrics"'
        return answer
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    registry.register(WebProcessCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
