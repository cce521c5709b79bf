"""The outlet agents' API: bearer tokens, heartbeats, claims with fences, fenced acknowledgements."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing.models import Heartbeat, Order, OrderEvent, Outlet
from queueing.services import outlet_mark_down
from shop.models import IdempotentRequest
from shop.ordering import order_place, order_request_parse
from tests.processes import web_server

pytestmark = pytest.mark.django_db

MakeOutlet = Callable[..., tuple[Outlet, str]]


def row_counts() -> tuple[int, int, int, int]:
    return (
        Order.objects.count(),
        OrderEvent.objects.count(),
        IdempotentRequest.objects.count(),
        Heartbeat.objects.count(),
    )


def place(
    *, kind: str = "delivery", outlet: str = "", zone: str = "N1", item: str = "margherita"
) -> Order:
    payload: dict[str, Any] = {
        "kind": kind,
        "lines": [{"item": item}],
        "customer": {"name": "Ada", "address": "x"},
    }
    if kind == "delivery":
        payload["zone"] = zone
    else:
        payload["outlet"] = outlet
    order, _ = order_place(request=order_request_parse(payload))
    return order


def call(
    client: Client, path: str, token: str | None, body: Any = None, *, method: str = "POST"
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    raw = "" if body is None else body if isinstance(body, str) else json.dumps(body)
    return client.generic(method, path, raw, content_type="application/json", headers=headers)


BODIES: dict[str, Any] = {
    "complete": {"claims": [{"token": "x", "fence": 1}]},
    "stations/release": {"stations": ["north-1"]},
}


@pytest.fixture
def north(menu: None, make_outlet: MakeOutlet) -> tuple[Outlet, str]:
    return make_outlet("north")


@pytest.fixture
def east(menu: None, make_outlet: MakeOutlet) -> tuple[Outlet, str]:
    return make_outlet("east")


# --- tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        ("Basic dXNlcjpwYXNz", 401),
        ("Bearer forged-token-that-is-no-outlets", 401),
    ],
    ids=["missing", "empty bearer", "other scheme", "forged"],
)
@pytest.mark.parametrize("endpoint", ["heartbeat", "claim", "complete", "stations/release"])
def test_agent_endpoints__without_a_valid_token__401_and_nothing_written(
    client: Client, north: tuple[Outlet, str], header: str | None, status: int, endpoint: str
) -> None:
    place(kind="takeaway", outlet="north")
    before = row_counts()
    headers = {"Authorization": header} if header else {}
    body = BODIES.get(endpoint, {})

    response = client.post(
        f"/api/outlets/north/{endpoint}",
        json.dumps(body),
        content_type="application/json",
        headers=headers,
    )

    assert response.status_code == status
    assert response.json()["error"] == "unauthenticated"
    assert row_counts() == before


@pytest.mark.parametrize("endpoint", ["heartbeat", "claim", "complete", "stations/release"])
def test_agent_endpoints__another_outlets_token__403_and_nothing_written(
    client: Client, north: tuple[Outlet, str], east: tuple[Outlet, str], endpoint: str
) -> None:
    place(kind="takeaway", outlet="north")
    before = row_counts()
    body = BODIES.get(endpoint, {})

    response = call(client, f"/api/outlets/north/{endpoint}", east[1], body)

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert row_counts() == before


def test_acknowledging__another_outlets_order__404_and_nothing_written(
    client: Client, north: tuple[Outlet, str], east: tuple[Outlet, str]
) -> None:
    place(kind="takeaway", outlet="north")
    claim = call(client, "/api/outlets/north/claim", north[1]).json()
    before = row_counts()

    for action in ("ready", "complete", "renew"):
        response = call(
            client,
            f"/api/orders/{claim['order']['token']}/{action}",
            east[1],
            {"fence": claim["fence"]},
        )
        assert response.status_code == 404, action
        assert response.json()["message"] == "no order with this token"
    assert row_counts() == before


def test_retired_outlets_token__401(client: Client, north: tuple[Outlet, str]) -> None:
    from queueing.services import outlet_retire

    outlet_retire(outlet=north[0])

    assert call(client, "/api/outlets/north/heartbeat", north[1]).status_code == 401


# --- heartbeat --------------------------------------------------------------------------


def test_heartbeat__records_the_database_time_and_a_history_row(
    client: Client, north: tuple[Outlet, str]
) -> None:
    response = call(client, "/api/outlets/north/heartbeat", north[1], {"seq": 3, "source": "till"})

    assert response.status_code == 200
    answer = response.json()
    assert (answer["outlet"], answer["state"]) == ("north", "active")
    north[0].refresh_from_db()
    assert north[0].last_heartbeat_at is not None
    assert answer["at"] == north[0].last_heartbeat_at.isoformat()
    assert list(Heartbeat.objects.values_list("source", "seq")) == [("till", 3)]


def test_heartbeat__one_statement_for_the_check_and_the_beat(
    client: Client, north: tuple[Outlet, str], django_assert_num_queries: Any
) -> None:
    # The commonest request of an idle fleet (1,000 outlets: 200 a second) costs one round trip.
    with django_assert_num_queries(1):
        response = call(client, "/api/outlets/north/heartbeat", north[1], {"seq": 1})
    assert response.status_code == 200


def test_heartbeat__wrong_or_another_outlets_token__401_403_nothing_written(
    client: Client, north: tuple[Outlet, str], make_outlet: MakeOutlet
) -> None:
    _, south_token = make_outlet("south")
    before = row_counts()

    assert call(client, "/api/outlets/north/heartbeat", "nope", {"seq": 1}).status_code == 401
    assert call(client, "/api/outlets/north/heartbeat", south_token, {"seq": 1}).status_code == 403
    assert call(client, "/api/outlets/north/heartbeat", None, {"seq": 1}).status_code == 401

    assert row_counts() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"seq": "1"}, "seq"),
        ({"seq": -1}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"seq": True}, "seq"),
        ({"source": 5}, "source"),
    ],
)
def test_heartbeat__bad_fields__400_and_nothing_written(
    client: Client, north: tuple[Outlet, str], body: dict[str, Any], field: str
) -> None:
    before = row_counts()

    response = call(client, "/api/outlets/north/heartbeat", north[1], body)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert row_counts() == before


# --- claims -----------------------------------------------------------------------------


def test_claim__nothing_waiting__204(client: Client, north: tuple[Outlet, str]) -> None:
    response = call(client, "/api/outlets/north/claim", north[1])

    assert response.status_code == 204
    assert response.content == b""


def test_claim__answers_the_order_with_its_fence_in_priority_order(
    client: Client, north: tuple[Outlet, str]
) -> None:
    pizza = place(kind="takeaway", outlet="north", item="margherita")
    drink = place(kind="takeaway", outlet="north", item="cola")  # quick: boosted ahead

    first = call(client, "/api/outlets/north/claim", north[1], {"station": "oven-1"})
    second = call(client, "/api/outlets/north/claim", north[1])

    assert (first.status_code, second.status_code) == (200, 200)
    claim = first.json()
    assert claim["order"]["token"] == drink.token
    assert claim["order"]["number"] == drink.pk
    assert claim["order"]["kind"] == "takeaway"
    assert claim["order"]["lines"][0]["item"] == "cola"
    assert claim["order"]["lines"][0]["prep_seconds"] == 10
    assert claim["lease_seconds"] > 0
    drink.refresh_from_db()
    assert (drink.state, drink.fence, drink.claimed_by) == ("preparing", claim["fence"], "oven-1")
    assert second.json()["order"]["token"] == pizza.token


def test_claim__with_limit__answers_a_batch(client: Client, north: tuple[Outlet, str]) -> None:
    for _ in range(3):
        place(kind="takeaway", outlet="north")

    response = call(client, "/api/outlets/north/claim", north[1], {"limit": 2})

    assert response.status_code == 200
    claims = response.json()["claims"]
    assert len(claims) == 2
    assert Order.objects.filter(state="preparing").count() == 2


def test_claim__its_answer_was_lost__the_retry_gets_the_same_claim(
    client: Client, north: tuple[Outlet, str]
) -> None:
    first, second = place(kind="takeaway", outlet="north"), place(kind="takeaway", outlet="north")
    lost = call(client, "/api/outlets/north/claim", north[1], {"station": "north-1"}).json()
    events = OrderEvent.objects.count()

    retry = call(client, "/api/outlets/north/claim", north[1], {"station": "north-1"})

    assert retry.status_code == 200
    assert (retry.json()["order"]["token"], retry.json()["fence"]) == (
        lost["order"]["token"],
        lost["fence"],
    )
    assert retry.json()["state"] == "preparing"
    assert OrderEvent.objects.count() == events  # nothing changed: no event
    # Another station is not handed it; completed, it is not sent again.
    other = call(client, "/api/outlets/north/claim", north[1], {"station": "north-2"}).json()
    assert {lost["order"]["token"], other["order"]["token"]} == {first.token, second.token}
    call(client, f"/api/orders/{lost['order']['token']}/ready", north[1], {"fence": lost["fence"]})
    call(
        client, f"/api/orders/{lost['order']['token']}/complete", north[1], {"fence": lost["fence"]}
    )
    assert (
        call(client, "/api/outlets/north/claim", north[1], {"station": "north-1"}).status_code
        == 204
    )


def test_release__hands_back_what_the_stations_held_and_the_next_claim_hands_over_the_ready_one(
    client: Client, north: tuple[Outlet, str]
) -> None:
    place(kind="takeaway", outlet="north")
    place(kind="takeaway", outlet="north")
    made = call(client, "/api/outlets/north/claim", north[1], {"station": "north-1"}).json()
    token = made["order"]["token"]
    ready = call(client, f"/api/orders/{token}/ready", north[1], {"fence": made["fence"]})
    assert ready.status_code == 200
    cooking = call(client, "/api/outlets/north/claim", north[1], {"station": "north-2"}).json()

    response = call(
        client,
        "/api/outlets/north/stations/release",
        north[1],
        {"stations": ["north-1", "north-2"]},
    )

    assert response.status_code == 200
    released = {r["token"]: r for r in response.json()["released"]}
    assert released[token]["state"] == "ready" and released[token]["fence"] == made["fence"] + 1
    back = released[cooking["order"]["token"]]
    assert (back["state"], back["fence"]) == ("queued", cooking["fence"] + 1)
    stale = call(client, f"/api/orders/{token}/complete", north[1], {"fence": made["fence"]})
    assert stale.status_code == 409 and stale.json()["error"] == "stale_fence"
    # The restarted station is handed the ready one first: to complete, not to cook.
    handed = call(client, "/api/outlets/north/claim", north[1], {"station": "north-1"}).json()
    assert (handed["order"]["token"], handed["state"]) == (token, "ready")
    done = call(client, f"/api/orders/{token}/complete", north[1], {"fence": handed["fence"]})
    assert done.json()["state"] == "completed"
    again = call(client, "/api/outlets/north/stations/release", north[1], {"stations": ["x"]})
    assert again.json() == {"released": []}


@pytest.mark.parametrize(
    "body", ['{"stations": []}', '{"stations": "north-1"}', '{"stations": [""]}', "{}", "[1]"]
)
def test_release__bad_body__400_and_nothing_written(
    client: Client, north: tuple[Outlet, str], body: str
) -> None:
    before = row_counts()
    response = call(client, "/api/outlets/north/stations/release", north[1], body)
    assert response.status_code == 400
    assert row_counts() == before


def test_claim__a_down_outlet_claims_nothing(client: Client, north: tuple[Outlet, str]) -> None:
    place(kind="takeaway", outlet="north")
    Outlet.objects.filter(slug="north").update(state="down")
    assert call(client, "/api/outlets/north/claim", north[1]).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        '{"limit": 0}',
        '{"limit": 51}',
        '{"limit": "2"}',
        '{"limit": true}',
        '{"station": ""}',
        "[1]",
        "{",
    ],
)
def test_claim__bad_body__400_and_nothing_claimed(
    client: Client, north: tuple[Outlet, str], body: str
) -> None:
    place(kind="takeaway", outlet="north")
    before = row_counts()

    response = call(client, "/api/outlets/north/claim", north[1], body)

    assert response.status_code == 400
    assert Order.objects.get().state == "queued"
    assert row_counts() == before


def test_claim__wrong_method__405(client: Client, north: tuple[Outlet, str]) -> None:
    response = call(client, "/api/outlets/north/claim", north[1], method="GET")

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_claim__body_over_64_kib__413(client: Client, north: tuple[Outlet, str]) -> None:
    place(kind="takeaway", outlet="north")
    before = row_counts()

    response = call(
        client, "/api/outlets/north/claim", north[1], {"station": "x", "pad": "y" * 70000}
    )

    assert response.status_code == 413
    assert row_counts() == before


# --- fenced acknowledgements -------------------------------------------------------------


def test_ready_then_complete__with_the_fence__moves_the_order_on(
    client: Client, north: tuple[Outlet, str]
) -> None:
    place(kind="takeaway", outlet="north")
    claim = call(client, "/api/outlets/north/claim", north[1]).json()
    token, fence = claim["order"]["token"], claim["fence"]

    renewed = call(client, f"/api/orders/{token}/renew", north[1], {"fence": fence})
    ready = call(client, f"/api/orders/{token}/ready", north[1], {"fence": fence})
    done = call(client, f"/api/orders/{token}/complete", north[1], {"fence": fence})

    assert renewed.status_code == 200 and renewed.json()["lease_expires_at"]
    assert ready.status_code == 200 and ready.json()["state"] == "ready"
    assert done.status_code == 200 and done.json() == {
        "token": token,
        "number": claim["order"]["number"],
        "state": "completed",
        "fence": fence,
    }
    types = list(
        Order.objects.get(token=token).events.order_by("id").values_list("type", flat=True)
    )
    assert types == ["placed", "claimed", "ready", "completed"]


@pytest.mark.parametrize("action", ["ready", "complete", "renew"])
def test_acknowledging__after_a_reroute__404_like_no_order_and_nothing_written(
    client: Client, north: tuple[Outlet, str], east: tuple[Outlet, str], action: str
) -> None:
    place(kind="delivery", zone="N1")
    order = Order.objects.get()
    owner, other = (north, east) if order.outlet_id == north[0].pk else (east, north)
    claim = call(client, f"/api/outlets/{owner[0].slug}/claim", owner[1]).json()
    outlet_mark_down(outlet=owner[0])  # the order moves to the other outlet, with a new fence
    before = row_counts()

    response = call(
        client, f"/api/orders/{order.token}/{action}", owner[1], {"fence": claim["fence"]}
    )

    # the order is the other outlet's now: nothing about it (not its fence, state or outlet)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "no order with this token",
        "token": order.token,
    }
    order.refresh_from_db()
    assert (order.state, order.outlet_id) == ("queued", other[0].pk)
    assert row_counts() == before


@pytest.mark.parametrize("action", ["ready", "complete", "renew"])
def test_acknowledging__unknown_order__404(
    client: Client, north: tuple[Outlet, str], action: str
) -> None:
    before = row_counts()

    response = call(client, f"/api/orders/no-such-order-000000000/{action}", north[1], {"fence": 1})

    assert response.status_code == 404
    assert row_counts() == before


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{",
        "[]",
        '{"fence": "2"}',
        '{"fence": -1}',
        '{"fence": 1.0}',
        '{"fence": true}',
        f'{{"fence": {2**64}}}',
    ],
)
def test_acknowledging__bad_fence__400_and_nothing_written(
    client: Client, north: tuple[Outlet, str], body: str
) -> None:
    place(kind="takeaway", outlet="north")
    token = call(client, "/api/outlets/north/claim", north[1]).json()["order"]["token"]
    before = row_counts()

    response = call(client, f"/api/orders/{token}/complete", north[1], body)

    assert response.status_code == 400
    assert Order.objects.get().state == "preparing"
    assert row_counts() == before


def test_complete__twice__second_is_409_invalid_state(
    client: Client, north: tuple[Outlet, str]
) -> None:
    place(kind="takeaway", outlet="north")
    claim = call(client, "/api/outlets/north/claim", north[1]).json()
    path = f"/api/orders/{claim['order']['token']}/complete"
    call(client, path, north[1], {"fence": claim["fence"]})
    before = row_counts()

    response = call(client, path, north[1], {"fence": claim["fence"]})

    assert response.status_code == 409
    assert response.json()["error"] == "invalid_state"
    assert row_counts() == before


# --- batch complete ---------------------------------------------------------------------


def test_batch_complete__completes_fresh_claims_and_refuses_stale_ones(
    client: Client, north: tuple[Outlet, str]
) -> None:
    for _ in range(3):
        place(kind="takeaway", outlet="north")
    claims = call(client, "/api/outlets/north/claim", north[1], {"limit": 3}).json()["claims"]
    body = {"claims": [{"token": c["order"]["token"], "fence": c["fence"]} for c in claims]}
    body["claims"][1]["fence"] -= 1  # stale
    body["claims"].append({"token": "no-such-order", "fence": 1})

    response = call(client, "/api/outlets/north/complete", north[1], body)

    assert response.status_code == 200
    answer = response.json()
    assert sorted(c["token"] for c in answer["completed"]) == sorted(
        [claims[0]["order"]["token"], claims[2]["order"]["token"]]
    )
    refused = {r["token"]: r["error"] for r in answer["refused"]}
    assert refused == {claims[1]["order"]["token"]: "stale_fence", "no-such-order": "not_found"}
    assert Order.objects.filter(state="completed").count() == 2
    assert Order.objects.get(token=claims[1]["order"]["token"]).state == "preparing"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "claims"),
        ({"claims": []}, "claims"),
        ({"claims": "x"}, "claims"),
        ({"claims": [1]}, "claims[0]"),
        ({"claims": [{"fence": 1}]}, "claims[0].token"),
        ({"claims": [{"token": "a", "fence": "1"}]}, "claims[0].fence"),
        ({"claims": [{"token": "a", "fence": 1}, {"token": "a", "fence": 2}]}, "claims[1].token"),
        ({"claims": [{"token": "a", "fence": 1}] * 201}, "claims"),
    ],
)
def test_batch_complete__bad_body__400_naming_the_field_and_nothing_written(
    client: Client, north: tuple[Outlet, str], body: dict[str, Any], field: str
) -> None:
    before = row_counts()

    response = call(client, "/api/outlets/north/complete", north[1], body)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert row_counts() == before


# --- through a real server --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_live_server__place_claim_ready_complete_over_http(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}
    order = {
        "kind": "takeaway",
        "outlet": "north",
        "lines": [{"item": "margherita", "qty": 2}],
        "customer": {"name": "Ada"},
    }

    with web_server(tmp_path) as (_, url), httpx.Client(base_url=url, timeout=10) as http:
        placed = http.post("/api/orders", json=order)
        assert placed.status_code == 202, placed.text
        claim = http.post("/api/outlets/north/claim", headers=auth, json={"station": "live"})
        assert claim.status_code == 200, claim.text
        fence = claim.json()["fence"]
        order_token = placed.json()["token"]
        assert claim.json()["order"]["token"] == order_token
        assert http.post("/api/outlets/north/claim", headers=auth).status_code == 204
        stale = http.post(
            f"/api/orders/{order_token}/complete", headers=auth, json={"fence": fence - 1}
        )
        assert stale.status_code == 409
        assert (
            http.post(
                f"/api/orders/{order_token}/ready", headers=auth, json={"fence": fence}
            ).status_code
            == 200
        )
        assert (
            http.post(
                f"/api/orders/{order_token}/complete", headers=auth, json={"fence": fence}
            ).status_code
            == 200
        )
        followed = http.get(f"/api/orders/{order_token}").json()
        big = http.post("/api/orders", content=b'{"kind": "' + b"x" * 70000 + b'"}')
        # Sent in chunks without a Content-Length: measured as it is read.
        chunked = http.post("/api/orders", content=iter([b"[" * 40000, b"]" * 40000]))
        wrong = http.put("/api/orders", json=order)

    assert followed["state"] == "completed"
    assert [e["type"] for e in followed["timeline"]] == ["placed", "claimed", "ready", "completed"]
    assert (big.status_code, chunked.status_code, wrong.status_code) == (413, 413, 405)
    assert Order.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_live_server__concurrent_retries_with_one_idempotency_key__one_order(
    tmp_path: Path, menu: None, make_outlet: MakeOutlet
) -> None:
    make_outlet("north")
    order = {
        "kind": "delivery",
        "zone": "N1",
        "lines": [{"item": "cola"}],
        "customer": {"name": "Ada", "address": "x"},
    }

    with web_server(tmp_path) as (_, url):

        def send(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=10) as http:
                return http.post("/api/orders", json=order, headers={"Idempotency-Key": "one-key"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))

    assert [a.status_code for a in answers] == [202] * 8
    assert len({a.json()["token"] for a in answers}) == 1
    assert sorted(a.headers["Idempotent-Replayed"] for a in answers) == ["false"] + ["true"] * 7
    assert Order.objects.count() == 1


# --- fuzzing: random bodies never get a 500, refusals write nothing ---------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
AGENT_BODIES = JSON_VALUES | st.fixed_dictionaries(
    {},
    optional={
        "fence": JSON_VALUES | st.integers(0, 5),
        "limit": JSON_VALUES | st.integers(0, 60),
        "station": JSON_VALUES,
        "seq": JSON_VALUES,
        "source": JSON_VALUES,
        "claims": st.lists(
            st.fixed_dictionaries({}, optional={"token": JSON_VALUES, "fence": JSON_VALUES}),
            max_size=3,
        )
        | JSON_VALUES,
    },
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(
        ["heartbeat", "claim", "complete-batch", "ready", "complete", "renew"]
    ),
    body=AGENT_BODIES,
)
def test_agent_endpoints__random_json__never_a_500(
    client: Client, north: tuple[Outlet, str], endpoint: str, body: Any
) -> None:
    order = place(kind="takeaway", outlet="north")
    path = {
        "heartbeat": "/api/outlets/north/heartbeat",
        "claim": "/api/outlets/north/claim",
        "complete-batch": "/api/outlets/north/complete",
    }.get(endpoint, f"/api/orders/{order.token}/{endpoint}")
    before = row_counts()

    response = call(client, path, north[1], body)

    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["error"]
        assert row_counts() == before
