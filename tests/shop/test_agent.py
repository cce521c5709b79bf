"""The outlet agent against a live server: every order cooked exactly once; stale fences dropped."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from django.db.models import Count

from queueing.models import Order, OrderEvent, Outlet
from queueing.services import order_claim_next, order_mark_ready, outlets_reroute
from shop.agent import Agent, AgentConfig, Answer
from shop.ordering import order_place, order_request_parse
from tests.processes import Process, manage, process_env, wait_for, web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MakeOutlet = Callable[..., tuple[Outlet, str]]
ITEMS = ["margherita", "pepperoni", "cola", "garlic-bread", "tiramisu", "water"]


def place_orders(count: int, *, outlets: list[str], start: int = 0) -> list[Order]:
    """A mix of takeaway orders at each outlet and delivery orders over ten zones."""
    orders = []
    for i in range(start, start + count):
        payload: dict[str, object] = {
            "lines": [{"item": ITEMS[i % len(ITEMS)], "qty": 1 + i % 3}, {"item": "cola"}],
            "customer": {"name": f"customer {i}", "address": f"{i} High Street"},
            "rush": i % 7 == 0,
        }
        if i % 2:
            payload |= {"kind": "takeaway", "outlet": outlets[i % len(outlets)]}
        else:
            payload |= {"kind": "delivery", "zone": f"Z{i % 10}"}
        orders.append(order_place(request=order_request_parse(payload))[0])
    return orders


@contextmanager
def agent(
    tmp_path: Path,
    url: str,
    slug: str,
    token: str,
    *,
    pace: str = "0",
    stations: str = "2",
    extra: tuple[str, ...] = (),
    **env: str,
) -> Iterator[Process]:
    proc = Process(
        manage(
            "outlet_agent",
            "--outlet",
            slug,
            "--server",
            url,
            "--pace",
            pace,
            "--stations",
            stations,
            "--heartbeat-interval",
            "1",
            "--made-log",
            str(tmp_path / "made.jsonl"),
            *extra,
        ),
        env=process_env(HEARTH_OUTLET_TOKEN=token, **env),
        log_path=tmp_path / f"agent-{slug}.log",
    )
    try:
        yield proc
    finally:
        proc.stop()


def made_lines(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "made.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def sigterm_exit_code(proc: Process) -> int:
    proc.signal(signal.SIGTERM)
    return proc.popen.wait(timeout=5)


def test_three_agents__300_orders__each_completed_exactly_once(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    outlets = {slug: make_outlet(slug)[1] for slug in ("north", "east", "west")}
    place_orders(150, outlets=list(outlets))

    with ExitStack() as stack:
        _, url = stack.enter_context(web_server(tmp_path))
        agents = [
            stack.enter_context(agent(tmp_path, url, slug, token))
            for slug, token in outlets.items()
        ]
        place_orders(150, outlets=list(outlets), start=150)  # while the agents cook

        wait_for(
            lambda: Order.objects.filter(state="completed").count() == 300,
            timeout=90,  # about 15 s on a quiet 2-core machine; headroom for a busy one
            interval=0.25,
            message="300 orders completed",
        )
        codes = [sigterm_exit_code(a) for a in agents]
        logs = [a.output() for a in agents]

    assert codes == [0, 0, 0], logs
    orders = {o.token: o for o in Order.objects.select_related("outlet")}
    assert len(orders) == 300
    assert {o.state for o in orders.values()} == {"completed"}
    # Every outlet cooked, and its own orders only.
    assert {o.outlet.slug for o in orders.values()} == set(outlets)
    made = made_lines(tmp_path)
    assert Counter(m["order"] for m in made) == Counter(set(orders))  # one line per order
    for m in made:
        order = orders[str(m["order"])]
        assert (m["number"], m["fence"], m["outlet"]) == (order.pk, order.fence, order.outlet.slug)
        assert m["at"]
    completions = (
        OrderEvent.objects.filter(type="completed").values("order").annotate(n=Count("id"))
    )
    assert len(completions) == 300
    assert {c["n"] for c in completions} == {1}
    assert all("fence lost" not in log for log in logs)
    assert all("stopped; " in log for log in logs)


def test_agent__stale_fence__logs_fence_lost_drops_the_work_and_carries_on(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    north, token = make_outlet("north")
    (order,) = place_orders(1, outlets=["north"])  # a delivery order: rerouting keeps it

    with (
        web_server(tmp_path) as (_, url),
        agent(
            tmp_path,
            url,
            "north",
            token,
            pace="0.005",
            stations="1",  # ~2.4 s of cooking
        ) as proc,
    ):
        first = wait_for(
            lambda: Order.objects.filter(pk=order.pk, state="preparing").first(),
            timeout=15,
            message="the agent claimed the order",
        )
        # The order is taken away and queued again (a new fence), as a reroute does.
        outlets_reroute(outlet_ids=[north.pk], reason="test")
        wait_for(
            lambda: f"fence lost on order {order.pk}" in proc.output(),
            timeout=15,
            message="the agent noticing its fence is stale",
        )
        done = wait_for(
            lambda: Order.objects.filter(pk=order.pk, state="completed").first(),
            timeout=15,
            message="the order cooked again under its new claim",
        )
        code = sigterm_exit_code(proc)
        output = proc.output()

    assert code == 0, output
    assert done.fence > first.fence + 1  # rerouted (+1), then claimed again (+1)
    made = made_lines(tmp_path)
    assert [(m["order"], m["fence"]) for m in made] == [(order.token, done.fence)]
    assert OrderEvent.objects.filter(order=order, type="completed").count() == 1
    assert OrderEvent.objects.filter(order=order, type="ready", fence=first.fence).count() == 0
    assert "north station 1" in output


def test_agent__renews_the_lease_while_cooking(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    (order,) = place_orders(1, outlets=["north"])

    with (
        web_server(tmp_path, HEARTH_LEASE_SECONDS="1") as (_, url),
        agent(
            tmp_path,
            url,
            "north",
            token,
            pace="0.006",
            stations="1",  # ~2.9 s of cooking
        ) as proc,
    ):
        claimed = wait_for(
            lambda: Order.objects.filter(pk=order.pk, state="preparing").first(),
            timeout=15,
            message="the agent claimed the order",
        )
        assert claimed.lease_expires_at is not None
        wait_for(
            lambda: Order.objects.filter(
                pk=order.pk, state="preparing", lease_expires_at__gt=claimed.lease_expires_at
            ).exists(),
            timeout=5,
            message="a renewed lease",
        )
        wait_for(
            lambda: Order.objects.filter(pk=order.pk, state="completed").exists(),
            timeout=10,
            message="the order completed",
        )
        output = proc.output()

    order.refresh_from_db()
    assert order.fence == claimed.fence  # the one claim held throughout
    assert "fence lost" not in output


def test_agent__claim_wait__an_idle_station_parks_that_long_then_parks_again(
    tmp_path: Path, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")

    with (
        web_server(tmp_path) as (web, url),
        agent(tmp_path, url, "north", token, stations="1", extra=("--claim-wait", "1.5")) as proc,
    ):
        # Daphne's access log (its output): each wait ends in 204 after 80-100 % of 1.5 s.
        wait_for(
            lambda: web.output().count('claim?wait=1.5" 204') >= 3,
            timeout=30,
            message="three parked claims of 1.5 s answered 204",
        )
        output, served = proc.output(), web.output()

    assert "claim?wait=50" not in served
    assert "Traceback" not in output + served


def test_agent__an_idle_outlets_heartbeats_reuse_one_connection(
    tmp_path: Path, make_outlet: MakeOutlet
) -> None:
    """httpx drops an idle connection after 5 s by default, the heartbeat interval: every
    beat of an idle outlet was a new TCP connection (an accept and a close more for the web)."""
    _, token = make_outlet("north")
    beat = re.compile(r"^(\S+) .*\"POST /api/outlets/north/heartbeat\" 200", re.M)

    with (
        web_server(tmp_path) as (web, url),
        agent(tmp_path, url, "north", token, stations="1", extra=("--heartbeat-interval", "6")),
    ):
        wait_for(
            lambda: len(beat.findall(web.output())) >= 3,
            timeout=40,
            message="three heartbeats, 6 s apart",
        )
        clients = beat.findall(web.output())

    assert len(set(clients[:3])) == 1, clients  # one client address:port, one connection


@pytest.mark.parametrize("wait", ["0", "0.5", "61", "nan"])
def test_agent__claim_wait_out_of_range__refused_before_it_starts(wait: str) -> None:
    result = subprocess.run(
        manage("outlet_agent", "--outlet", "north", "--token", "t", "--claim-wait", wait),
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--claim-wait" in result.stderr or "expected a number" in result.stderr


def test_agent__a_claim_that_waited__parks_again_at_once_without_backing_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 204 after at least half the wait is an idle outlet, not a server that cannot wait."""
    station = Agent(AgentConfig(outlet="north", token="t", claim_wait=1.0))
    claims = 0

    async def parked(name: str, *, who: str) -> Answer:
        nonlocal claims
        claims += 1
        if claims == 3:
            station.stop.set()
        await asyncio.sleep(0.6)  # the server answers 204 after 60 % of the wait
        return Answer(204, {}, retried=False)

    slept: list[float] = []
    real_sleep = station._sleep

    async def sleep(seconds: float) -> bool:
        slept.append(seconds)
        return await real_sleep(seconds)

    monkeypatch.setattr(station, "claim_waiting", parked)
    monkeypatch.setattr(station, "_sleep", sleep)

    async def run() -> None:
        await station.station_loop(1)
        await station.client.aclose()

    asyncio.run(run())

    assert claims == 3
    assert slept == []  # it parked again at once, each time


def test_agent__wrong_token__exits_non_zero_saying_so(
    tmp_path: Path, make_outlet: MakeOutlet
) -> None:
    make_outlet("north")

    with web_server(tmp_path) as (_, url), agent(tmp_path, url, "north", "forged-token") as proc:
        code = proc.popen.wait(timeout=15)
        output = proc.output()

    assert code == 1
    assert "refuses this agent" in output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_agent__stop_while_cooking__exits_0_at_once_leaving_the_order_to_its_lease(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet, sig: signal.Signals
) -> None:
    _, token = make_outlet("north")
    (order,) = place_orders(1, outlets=["north"])

    with web_server(tmp_path) as (_, url), agent(tmp_path, url, "north", token, pace="1") as proc:
        wait_for(
            lambda: Order.objects.filter(pk=order.pk, state="preparing").exists(),
            timeout=15,
            message="the agent claimed the order",
        )
        wait_for(lambda: "cooking" in proc.output(), timeout=5, message="cooking")
        proc.signal(sig)
        code = proc.popen.wait(timeout=3)
        output = proc.output()

    assert code == 0, output
    assert f"order {order.pk} left to its lease" in output
    order.refresh_from_db()
    assert order.state == "preparing"  # not completed by a stopping agent
    assert made_lines(tmp_path) == []


def test_agent__restarted__hands_back_what_its_stations_held_at_once_and_completes_the_ready_one(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    north, token = make_outlet("north")
    orders = place_orders(2, outlets=["north"], start=1)  # the only outlet: both here
    # What the agent's stations held when it was killed: one being made, one made and
    # marked ready whose completion never came (the lease is the default 120 s).
    (held,) = order_claim_next(outlet=north, station="north-1")
    (ready,) = order_claim_next(outlet=north, station="north-2")
    order_mark_ready(token=ready.token, fence=ready.fence, outlet=north)
    assert {held.id, ready.id} == {o.pk for o in orders}

    with (
        web_server(tmp_path) as (_, url),
        agent(tmp_path, url, "north", token, stations="2") as proc,
    ):
        wait_for(
            lambda: (
                Order.objects.filter(pk__in=[held.id, ready.id], state="completed").count() == 2
            ),
            timeout=30,  # far less than the 120 s lease: nothing waited for it
            message="the restarted agent finishing what its stations held",
        )
        output = proc.output()

    assert "handed back 2 orders" in output, output
    assert "is made already" in output, output
    for ticket in (held, ready):
        types = list(
            OrderEvent.objects.filter(order_id=ticket.id)
            .order_by("id")
            .values_list("type", flat=True)
        )
        assert "released" in types and "lease_expired" not in types, types
    # The ready one was handed over, not cooked again: it was never back in the queue.
    assert not OrderEvent.objects.filter(
        order_id=ready.id, state="queued", type="released"
    ).exists()
    assert OrderEvent.objects.filter(order_id=ready.id, type="ready").count() == 1
    assert sorted(m["order"] for m in made_lines(tmp_path)) == sorted([held.token, ready.token])
