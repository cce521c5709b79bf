"""The order endpoints' short path (shop.api.fast) answers exactly as Django's full stack does."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from json import dumps as json_dumps
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from queueing.models import Heartbeat, Outlet
from shop.api.fast import CLAIM_PATH, FAST_PATH, ApiHandler, parks
from tests.processes import web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ORDER = {
    "kind": "takeaway",
    "outlet": "north",
    "lines": [{"item": "margherita", "qty": 1}],
    "customer": {"name": "Ada"},
}
# What every answer must carry, whichever path served it.
SECURITY_HEADERS = (
    "Content-Type",
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
)


@pytest.fixture
def webs(
    tmp_path: Path, menu: None, make_outlet: Callable[..., tuple[Outlet, str]]
) -> Iterator[dict[str, str]]:
    """Two web processes on the same database: the short path on, and off."""
    _, north_token = make_outlet("north")
    with (
        web_server(tmp_path, HEARTH_API_FAST="1") as (fast_process, fast),
        web_server(tmp_path, HEARTH_API_FAST="0") as (full_process, full),
    ):
        yield {
            "fast": fast,
            "full": full,
            "north_token": north_token,
            "fast_pid": str(fast_process.pid),
            "full_pid": str(full_process.pid),
            "fast_log": str(fast_process.log_path),
        }


def answer_of(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return response.status_code, {}, response.text
    body = response.json()
    for volatile in ("number", "token", "status_url", "estimated_ready_at", "message", "timeline"):
        body.pop(volatile, None)
    return response.status_code, headers_of(response), body


def headers_of(response: httpx.Response) -> dict[str, str]:
    """The security headers of an answer."""
    headers = {h: response.headers.get(h, "") for h in SECURITY_HEADERS}
    # django-csp writes the same directives in an order of its own in each process.
    headers["Content-Security-Policy"] = " ".join(
        sorted(headers["Content-Security-Policy"].split("; "))
    )
    return headers


def test_fast_path__orders_answer_as_through_the_full_stack(webs: dict[str, str]) -> None:
    answers: dict[str, list[Any]] = {}
    for name in ("fast", "full"):
        with httpx.Client(base_url=webs[name], timeout=30) as http:
            placed = http.post("/api/orders", json=ORDER)
            token = placed.json()["token"]
            followed = http.get(f"/api/orders/{token}")
            assert followed.json()["timeline"][0]["type"] == "placed"
            assert "set-cookie" not in placed.headers and "set-cookie" not in followed.headers
            answers[name] = [
                answer_of(placed),
                answer_of(followed),
                answer_of(http.get("/api/orders/no-such-token")),
                answer_of(http.put("/api/orders", json=ORDER)),
                answer_of(
                    http.post(
                        "/api/orders", content=b"{", headers={"Content-Type": "application/json"}
                    )
                ),
                answer_of(
                    http.post("/api/orders", content=b"x", headers={"Content-Type": "text/plain"})
                ),
                answer_of(http.get(f"/api/orders/{token}", headers={"Host": "evil.example"})),
            ]
    assert answers["fast"] == answers["full"]
    assert [status for status, _, _ in answers["fast"]] == [202, 200, 404, 405, 400, 415, 400]


def test_fast_path__heartbeats_answer_as_through_the_full_stack(
    webs: dict[str, str], make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    _, south_token = make_outlet("south")
    north_token = webs["north_token"]
    answers: dict[str, list[Any]] = {}
    for name in ("fast", "full"):
        with httpx.Client(base_url=webs[name], timeout=30) as http:

            def beat(token: str, content: bytes | None = None, **json: Any) -> httpx.Response:
                return http.post(
                    "/api/outlets/north/heartbeat",
                    content=content if content is not None else json_dumps(json).encode(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )

            counted = beat(north_token, seq=7 if name == "fast" else 8)
            assert counted.json()["outlet"] == "north"
            answers[name] = [
                answer_of(counted),
                answer_of(beat("forged")),
                answer_of(
                    http.post(
                        "/api/outlets/north/heartbeat",
                        json={},
                        headers={"Authorization": f"Bearer {north_token}", "Host": "evil.example"},
                    )
                ),
                answer_of(beat(south_token)),  # another outlet's token
                answer_of(beat(north_token, content=b"{")),
                answer_of(beat(north_token, seq=-1)),
                answer_of(beat(north_token, content=b'{"source": "\\ud800"}')),  # a lone surrogate
                answer_of(http.get("/api/outlets/north/heartbeat")),
            ]
            for volatile in ("at",):
                answers[name][0][2].pop(volatile, None)
    assert answers["fast"] == answers["full"]
    assert [status for status, _, _ in answers["fast"]] == [200, 401, 400, 403, 400, 400, 400, 405]
    # Each path wrote its one good beat and nothing for the refused ones; the short path's
    # went on the event loop's own connection, not through Django's, and none failed there.
    assert sorted(Heartbeat.objects.values_list("seq", flat=True)) == [7, 8]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'hearth-beats:%%'"
        )
        beats = {name for (name,) in cursor.fetchall()}
    assert f"hearth-beats:{webs['fast_pid']}" in beats
    assert f"hearth-beats:{webs['full_pid']}" not in beats
    log = Path(webs["fast_log"]).read_text()
    assert "on the event loop failed" not in log


def test_fast_path__a_burst_of_heartbeats_is_written_in_batches(
    tmp_path: Path, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    # A fleet reconnecting at once: every beat answered as its own, written together.
    tokens = dict((slug, make_outlet(slug)[1]) for slug in (f"outlet-{n}" for n in range(40)))
    with web_server(tmp_path, HEARTH_API_FAST="1") as (process, url):

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"/api/outlets/{slug}/heartbeat",
                            json={"seq": 1, "source": "burst"},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        for slug, token in tokens.items()
                    )
                )

        answers = asyncio.run(burst())
        log = process.log_path.read_text()
    assert [a.status_code for a in answers] == [200] * len(tokens)
    assert [a.json()["outlet"] for a in answers] == list(tokens)
    written = list(Heartbeat.objects.values_list("outlet__slug", "at"))
    assert sorted(slug for slug, _ in written) == sorted(tokens)
    # One statement, one clock: fewer distinct times than beats means beats shared a commit.
    assert len({at for _, at in written}) < len(tokens), written
    assert "on the event loop failed" not in log


def test_fast_path__claims_answer_as_through_the_full_stack(
    webs: dict[str, str], make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    """Parked claims (``?wait=``) take the short path; each answer is the full stack's."""
    _, south_token = make_outlet("south")
    auth = {"Authorization": f"Bearer {webs['north_token']}"}
    claim = "/api/outlets/north/claim?wait=1"
    answers: dict[str, list[Any]] = {}
    for name in ("fast", "full"):
        with httpx.Client(base_url=webs[name], timeout=30, headers=auth) as http:
            station = {"station": f"{name}-s1"}
            nothing = http.post(claim, json=station)  # parked for 1 s, then 204
            assert http.post("/api/orders", json=ORDER).status_code == 202
            claimed = http.post(claim, json=station)
            assert claimed.json()["order"]["lines"][0]["item"] == "margherita"
            answers[name] = [
                (nothing.status_code, headers_of(nothing), nothing.text),
                (claimed.status_code, answer_of(claimed)[1]),
                answer_of(http.post(claim, json=station, headers={"Authorization": "Bearer x"})),
                answer_of(
                    http.post(
                        claim, json=station, headers={"Authorization": f"Bearer {south_token}"}
                    )
                ),
                answer_of(http.post(claim, json={"station": ""})),
                answer_of(http.post(claim, content=b"x", headers={"Content-Type": "text/plain"})),
                answer_of(http.get(claim)),
                answer_of(http.post(claim, json=station, headers={"Host": "evil.example"})),
            ]
    assert answers["fast"] == answers["full"]
    assert [answer[0] for answer in answers["fast"]] == [204, 200, 401, 403, 400, 415, 405, 400]


def _threads(pid: str) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def _park(base: str, token: str, count: int) -> list[int]:
    async with httpx.AsyncClient(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        return [
            r.status_code
            for r in await asyncio.gather(
                *(
                    client.post("/api/outlets/north/claim?wait=10", json={"station": f"s{i}"})
                    for i in range(count)
                )
            )
        ]


def test_fast_path__parked_claims_hold_no_thread_each(webs: dict[str, str]) -> None:
    """Through Django's handler each parked claim holds a thread of its own; here none does."""
    for name in ("full", "fast"):
        pid = webs[f"{name}_pid"]
        before = _threads(pid)
        statuses: list[int] = []

        def park(base: str = webs[name], out: list[int] = statuses) -> None:
            out.extend(asyncio.run(_park(base, webs["north_token"], 60)))

        parking = threading.Thread(target=park)
        parking.start()
        most = before
        while parking.is_alive():  # the claims wait 10 s, parked side by side
            most = max(most, _threads(pid))
            time.sleep(0.1)
        assert statuses == [204] * 60
        if name == "full":
            assert most - before >= 60  # the cost this path avoids, seen as it parks
        else:
            assert most - before < 20, (before, most)


def test_fast_path__a_signed_in_member_of_staff_may_still_rush(webs: dict[str, str]) -> None:
    client = Client()
    client.force_login(User.objects.create_user("boss", is_staff=True))
    cookie = client.cookies["sessionid"].value
    for base in (webs["fast"], webs["full"]):
        rushed = httpx.post(
            base + "/api/orders", json={**ORDER, "rush": True}, cookies={"sessionid": cookie}
        )
        assert rushed.status_code == 202, rushed.text
        assert rushed.json()["rush"] is True
        anonymous = httpx.post(base + "/api/orders", json={**ORDER, "rush": True})
        assert anonymous.status_code == 403


def test_fast_path__covers_the_order_endpoints_heartbeats_and_claims_only() -> None:
    assert FAST_PATH.fullmatch("/api/orders") and FAST_PATH.fullmatch("/api/orders/Ab-_9")
    assert FAST_PATH.fullmatch("/api/outlets/north-2/heartbeat")
    assert CLAIM_PATH.fullmatch("/api/outlets/north-2/claim")
    assert not CLAIM_PATH.fullmatch("/api/outlets/n/claim/x")
    # Only a claim that waits (read as the view reads ``wait``) takes the short path.
    assert parks(b"wait=25") and parks(b"station=a&wait=0.5") and parks(b"wait=0&wait=3")
    for answers_at_once in (b"", b"wait=0", b"wait=0.0", b"wait=nan", b"wait=x", b"wait=5&wait=0"):
        assert not parks(answers_at_once), answers_at_once
    for other in (
        "/api/orders/x/ready",
        "/api/outlets/n/claim",
        "/api/outlets/n/stations/release",
        "/api/outlets//heartbeat",
        "/order/",
        "/api/orders/",
    ):
        assert not FAST_PATH.fullmatch(other), other


def test_fast_path__skips_the_middleware_an_api_call_never_uses() -> None:
    names = {type(m).__name__ for m in _middleware_chain(ApiHandler())}
    assert {"MessageMiddleware", "CsrfViewMiddleware", "AxesMiddleware"}.isdisjoint(names)
    assert {"SecurityMiddleware", "SessionMiddleware", "CSPMiddleware"} <= names


def _middleware_chain(handler: ApiHandler) -> Iterator[Any]:
    """The middleware instances of a handler, outermost first."""
    layer: Any = handler._middleware_chain
    while layer is not None:
        middleware = getattr(layer, "__wrapped__", None) or layer
        get_response = getattr(middleware, "get_response", None)
        if get_response is None:
            return
        yield middleware
        layer = get_response
