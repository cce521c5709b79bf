"""A waiting claim (?wait=N) through a real web process: parked on the listener, woken by a commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from queueing.models import Order, Outlet
from shop.ordering import order_place, order_request_parse
from tests.processes import web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MakeOutlet = Callable[..., tuple[Outlet, str]]


def place_takeaway(outlet: str) -> Order:
    order, _ = order_place(
        request=order_request_parse(
            {
                "kind": "takeaway",
                "outlet": outlet,
                "lines": [{"item": "margherita"}],
                "customer": {"name": "Ada"},
            }
        )
    )
    return order


def test_parked_claim__an_order_placed__returns_it(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=60) as http:
        # Warm up: the listener starts with the first waiting claim.
        assert http.post("/api/outlets/north/claim?wait=0.2", headers=auth).status_code == 204

        async def parked_then_placed() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                waiting = asyncio.create_task(
                    client.post(
                        "/api/outlets/north/claim?wait=30", headers=auth, json={"station": "n-1"}
                    )
                )
                await asyncio.sleep(0.5)  # parked (or not yet: either way it must return it)
                assert not waiting.done()
                await asyncio.to_thread(place_takeaway, "north")
                return await waiting

        started = time.monotonic()
        answer = asyncio.run(parked_then_placed())
        assert answer.status_code == 200, answer.text
        assert answer.json()["order"]["token"] == Order.objects.get().token
        assert time.monotonic() - started < 25  # woken, not timed out


def test_parked_claim__nothing_comes__204_after_the_wait(
    tmp_path: Path, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=60) as http:
        started = time.monotonic()
        answer = http.post(
            "/api/outlets/north/claim?wait=1.5", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 204
        assert time.monotonic() - started >= 1.5 * 0.8 - 0.05  # at least 80 % of the wait


def test_parked_claims__parked_together__are_answered_spread_out(
    tmp_path: Path, make_outlet: MakeOutlet
) -> None:
    # A fleet that parked together must not re-park together every wait.
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    with web_server(tmp_path) as (_, url):

        async def twelve_stations() -> list[float]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:

                async def park(n: int) -> float:
                    answer = await client.post(
                        "/api/outlets/north/claim?wait=2", headers=auth, json={"station": f"s{n}"}
                    )
                    assert answer.status_code == 204
                    return time.monotonic()

                started = time.monotonic()
                return [end - started for end in await asyncio.gather(*map(park, range(12)))]

        ends = asyncio.run(twelve_stations())
    assert min(ends) >= 2 * 0.8 - 0.05, ends
    # Uniform over the last 0.4 s: twelve ends within 0.1 s of each other: 1 chance in 450,000.
    assert max(ends) - min(ends) >= 0.1, ends


def test_parked_claim__client_gone__claims_nothing(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/api/outlets/north/claim?wait=0.2", headers=auth).status_code == 204

        async def park_and_leave() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                waiting = asyncio.create_task(
                    client.post(
                        "/api/outlets/north/claim?wait=30", headers=auth, json={"station": "gone"}
                    )
                )
                await asyncio.sleep(0.5)
                waiting.cancel()  # the connection closes
                with pytest.raises(asyncio.CancelledError):
                    await waiting

        asyncio.run(park_and_leave())
        time.sleep(0.5)  # the server sees the disconnect (nothing to wait for: it must not claim)
        order = place_takeaway("north")
        # Someone else still parked or claiming finds it queued: the gone claim took nothing.
        claimed = http.post(
            "/api/outlets/north/claim?wait=5", headers=auth, json={"station": "here"}
        )
        assert claimed.status_code == 200, claimed.text
        order.refresh_from_db()
        assert order.claimed_by == "here"


def test_parked_claim__wrong_token__401_at_once(tmp_path: Path, make_outlet: MakeOutlet) -> None:
    make_outlet("north")
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=60) as http:
        started = time.monotonic()
        answer = http.post(
            "/api/outlets/north/claim?wait=30", headers={"Authorization": "Bearer nope"}
        )
        assert answer.status_code == 401
        assert answer.json()["error"] == "unauthenticated"
        assert time.monotonic() - started < 20  # refused, not parked for the wait
        bad = http.post("/api/outlets/north/claim?wait=-1", headers={"Authorization": "Bearer x"})
        assert bad.status_code in (400, 401)


def test_parked_claim__the_wait_is_bounded(tmp_path: Path, make_outlet: MakeOutlet) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=60) as http:
        for wait in ("61", "nan", "x", "-1"):
            answer = http.post(f"/api/outlets/north/claim?wait={wait}", headers=auth)
            assert answer.status_code == 400, wait
            assert answer.json()["field"] == "wait"


def test_parked_claims__orders_one_after_another__each_wakes_a_station(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    with web_server(tmp_path) as (_, url):

        async def two_stations_ten_orders() -> list[float]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                got: asyncio.Queue[float] = asyncio.Queue()

                async def station(name: str) -> None:
                    while True:
                        answer = await client.post(
                            "/api/outlets/north/claim?wait=30", headers=auth, json={"station": name}
                        )
                        if answer.status_code == 200:
                            fence, order = answer.json()["fence"], answer.json()["order"]["token"]
                            for step in ("ready", "complete"):
                                done = await client.post(
                                    f"/api/orders/{order}/{step}",
                                    headers=auth,
                                    json={"fence": fence},
                                )
                                assert done.status_code == 200, done.text
                            await got.put(time.monotonic())

                stations = [asyncio.create_task(station(f"n-{n}")) for n in (1, 2)]
                took = []
                try:
                    await asyncio.sleep(1)
                    for _ in range(10):
                        await asyncio.to_thread(place_takeaway, "north")
                        placed = time.monotonic()
                        # Well inside the 30 s wait: a claim woken late would show as a timeout.
                        took.append(await asyncio.wait_for(got.get(), 15) - placed)
                finally:
                    for task in stations:
                        task.cancel()
                    await asyncio.gather(*stations, return_exceptions=True)
                return took

        took = asyncio.run(two_stations_ten_orders())
        assert len(took) == 10
