"""/metrics' web-process figures through real Daphne processes: open sockets and commit → socket lag.

Each web process writes its own figures to PostgreSQL every interval, so a scrape
of any one process shows them all; these tests open real sockets and scrape over
HTTP, polling with a generous deadline since the figures arrive within a few
intervals.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from queueing.services import order_claim_next
from tests.processes import Process, wait_for, web_server
from tests.shop.test_live import manager, open_socket, place, recv_until, staff, start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-secret-0123456789"
INTERVAL = "0.5"  # each process writes its row this often; gone after three silent intervals
DEADLINE = 60.0
WEB = {"HEARTH_METRICS_TOKEN": TOKEN, "HEARTH_WEB_METRICS_INTERVAL": INTERVAL}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def process_of(proc: Process) -> str:
    """The start of the process's label (``host:pid:``; its boot id is its own)."""
    return f"{socket.gethostname()}:{proc.pid}:"


def sockets_open(samples: Samples) -> dict[str, float]:
    return {
        kind: samples[("hearth_sockets_open", (("kind", kind),))]
        for kind in ("kitchen", "order", "ops")
    }


def sockets_of(samples: Samples, process: str) -> dict[str, float]:
    """The process's open sockets by kind; empty when it is not reported."""
    figures: dict[str, float] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "hearth_web_process_sockets_open" and label["process"].startswith(process):
            figures[label["kind"]] = value
    return figures


def lag_of(samples: Samples, process: str) -> dict[str, float]:
    """The process's lag histogram: {"count", "sum", "<le>"...}; empty while it has none."""
    figures: dict[str, float] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if not label.get("process", "").startswith(process):
            continue
        if name == "hearth_socket_lag_seconds_bucket":
            figures[label["le"]] = value
        elif name == "hearth_socket_lag_seconds_count":
            figures["count"] = value
        elif name == "hearth_socket_lag_seconds_sum":
            figures["sum"] = value
    return figures


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    with web_server(tmp_path, **WEB) as (proc, base):
        yield proc, base


def ws(base: str) -> str:
    return base.replace("http://", "ws://") + "/"


def test_sockets_open__counted_by_kind_and_counted_down_when_they_close(
    web: tuple[Process, str], make_outlet: Any
) -> None:
    proc, base = web
    north, _ = make_outlet("north")
    orders = [place(north) for _ in range(3)]
    cook, boss = staff("cook", north), manager("boss")
    with ExitStack() as stack:
        customers = [
            stack.enter_context(open_socket(ws(base), f"ws/orders/{order.token}/"))
            for order in orders
        ]
        kitchens = [
            stack.enter_context(open_socket(ws(base), "ws/kitchen/north/", user=cook))
            for _ in range(2)
        ]
        ops = stack.enter_context(open_socket(ws(base), "ws/ops/", user=boss))
        for sock in (*customers, *kitchens, ops):
            start(sock)
        expected = {"kitchen": 2, "order": 3, "ops": 1}

        def counted() -> Samples | None:
            samples = scrape(base)
            mine = sockets_of(samples, process_of(proc))
            return samples if sockets_open(samples) == expected == mine else None

        samples = wait_for(counted, timeout=DEADLINE, message=f"{expected} open sockets")
        assert samples[("hearth_web_processes", ())] == 1

        customers[0].close()
        kitchens[0].close()
        expected = {"kitchen": 1, "order": 2, "ops": 1}
        wait_for(
            lambda: sockets_open(scrape(base)) == expected,
            timeout=DEADLINE,
            message=f"{expected} open sockets after two closed",
        )
    expected = {"kitchen": 0, "order": 0, "ops": 0}
    wait_for(
        lambda: sockets_open(scrape(base)) == expected,
        timeout=DEADLINE,
        message="no open sockets after all closed",
    )


def test_socket_lag__an_event_fanned_out_is_counted_in_the_histogram(
    web: tuple[Process, str], make_outlet: Any
) -> None:
    proc, base = web
    north, _ = make_outlet("north")
    order = place(north)
    with open_socket(ws(base), f"ws/orders/{order.token}/") as customer:
        start(customer)
        # The process reports once its listener runs; nothing it fanned out yet.
        before = wait_for(
            lambda: lag_of(scrape(base), process_of(proc)),
            timeout=DEADLINE,
            message="the process's lag histogram",
        )
        order_claim_next(outlet=north, station="oven")
        message = recv_until(customer, lambda m: m["type"] == "event")[-1]
        assert message["event"]["type"] == "claimed"
        after = wait_for(
            lambda: (
                (lag := lag_of(scrape(base), process_of(proc)))["count"] > before["count"] and lag
            ),
            timeout=DEADLINE,
            message="the claim counted in the lag histogram",
        )
    assert after["+Inf"] == after["count"]
    # Cumulative buckets; the claim took well under 30 s from its commit to the socket.
    assert after["30.0"] == after["count"]
    assert after["0.005"] <= after["0.1"] <= after["1.0"] <= after["+Inf"]
    assert 0 <= after["sum"] - before["sum"] < 30 * (after["count"] - before["count"])


def test_two_web_processes__a_scrape_of_one_shows_the_other_and_forgets_it_once_dead(
    tmp_path: Path, make_outlet: Any
) -> None:
    north, _ = make_outlet("north")
    orders = [place(north) for _ in range(3)]
    with ExitStack() as stack:
        proc_a, web_a = stack.enter_context(web_server(tmp_path, **WEB))
        proc_b, web_b = stack.enter_context(web_server(tmp_path, **WEB))
        on_a = stack.enter_context(open_socket(ws(web_a), f"ws/orders/{orders[0].token}/"))
        on_b = [
            stack.enter_context(open_socket(ws(web_b), f"ws/orders/{order.token}/"))
            for order in orders[1:]
        ]
        for sock in (on_a, *on_b):
            start(sock)
        order_claim_next(outlet=north, station="oven")  # an event both processes fan out

        def both_seen() -> Samples | None:
            samples = scrape(web_a)
            seen = (
                sockets_open(samples)["order"] == 3
                and sockets_of(samples, process_of(proc_a))["order"] == 1
                and sockets_of(samples, process_of(proc_b))["order"] == 2
                and lag_of(samples, process_of(proc_b)).get("count", 0) >= 1
            )
            return samples if seen else None

        samples = wait_for(both_seen, timeout=DEADLINE, message="web B's sockets seen through A")
        assert samples[("hearth_web_processes", ())] == 2

        # B dies without a word: after three silent intervals A's scrape no longer counts it.
        proc_b.signal(signal.SIGKILL)

        def b_forgotten() -> Samples | None:
            samples = scrape(web_a)
            gone = (
                sockets_open(samples)["order"] == 1
                and not sockets_of(samples, process_of(proc_b))
                and not lag_of(samples, process_of(proc_b))
            )
            return samples if gone else None

        samples = wait_for(b_forgotten, timeout=DEADLINE, message="dead web B forgotten")
        assert samples[("hearth_web_processes", ())] == 1
        assert sockets_of(samples, process_of(proc_a))["order"] == 1
