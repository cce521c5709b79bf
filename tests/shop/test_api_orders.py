"""The customer's API: placing and following orders, and every bad input refused with nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing.models import Order, OrderEvent, Outlet
from queueing.services import outlet_drain, outlet_mark_down
from shop.models import IdempotentRequest
from shop.ordering import order_place, order_request_parse

pytestmark = pytest.mark.django_db

DELIVERY = {
    "kind": "delivery",
    "zone": "N1",
    "lines": [{"item": "margherita", "qty": 2, "note": "no basil"}],
    "customer": {"name": "Ada", "phone": "020 7946 0000", "address": "12 Analytical Row"},
}
TAKEAWAY = {
    "kind": "takeaway",
    "outlet": "north",
    "lines": [{"item": "pepperoni", "qty": 1}, {"item": "cola", "qty": 3}],
    "customer": {"name": "Grace"},
}


def row_counts() -> tuple[int, int, int]:
    return Order.objects.count(), OrderEvent.objects.count(), IdempotentRequest.objects.count()


def post(client: Client, body: Any, **headers: str) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/orders", raw, content_type="application/json", headers=headers)


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    order = json.loads(json.dumps(base))
    order.update(changes)
    return order


def line(item: str = "margherita", **extra: Any) -> dict[str, Any]:
    return {"item": item, **extra}


@pytest.fixture
def shop(menu: None, make_outlet: Callable[..., tuple[Outlet, str]]) -> Iterator[dict[str, Outlet]]:
    """Outlets north (active), east (draining) and west (down), and the sample menu."""
    outlets = {slug: make_outlet(slug)[0] for slug in ("north", "east", "west")}
    outlet_drain(outlet=outlets["east"])
    outlet_mark_down(outlet=outlets["west"])
    yield outlets


def test_place_delivery__answers_202_with_number_token_outlet_and_status_url(
    client: Client, shop: dict[str, Outlet]
) -> None:
    response = post(client, DELIVERY)

    assert response.status_code == 202
    answer = response.json()
    order = Order.objects.get(token=answer["token"])
    assert answer["number"] == order.pk
    assert answer["state"] == "queued"
    assert answer["outlet"] == "north"  # the only active outlet
    assert answer["status_url"] == f"http://testserver/o/{order.token}/"
    assert answer["lines"] == [
        {"item": "margherita", "name": "Margherita", "qty": 2, "note": "no basil", "price": "8.50"}
    ]
    assert answer["total"] == "17.00"
    assert response["Idempotent-Replayed"] == "false"
    assert list(order.events.values_list("type", flat=True)) == ["placed"]


def test_place_takeaway__queues_at_the_named_outlet(
    client: Client, shop: dict[str, Outlet]
) -> None:
    response = post(client, TAKEAWAY)

    assert response.status_code == 202
    order = Order.objects.get(token=response.json()["token"])
    assert order.outlet == shop["north"]
    assert order.kind == "takeaway"
    assert [ln["qty"] for ln in order.lines] == [1, 3]


def test_order_detail__shows_state_outlet_and_timeline(
    client: Client, shop: dict[str, Outlet]
) -> None:
    token = post(client, DELIVERY).json()["token"]

    response = client.get(f"/api/orders/{token}")

    assert response.status_code == 200
    answer = response.json()
    assert (answer["token"], answer["state"], answer["outlet"]) == (token, "queued", "north")
    assert answer["status_url"].endswith(f"/o/{token}/")
    assert len(answer["timeline"]) == 1
    event = answer["timeline"][0]
    assert (event["type"], event["outlet"]) == ("placed", "north")
    assert event["at"]


@pytest.mark.parametrize(
    "token", ["no-such-order-token-1234", "x" * 41, "bad%00token", "..", "a b"]
)
def test_order_detail__unknown_token__404(
    client: Client, shop: dict[str, Outlet], token: str
) -> None:
    response = client.get(f"/api/orders/{token}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


BAD_ORDERS: list[tuple[str, Any, int, str | None]] = [
    # (case, body, status, field named in the answer)
    ("malformed json", '{"kind": "delivery", ', 400, None),
    ("empty body", "", 400, None),
    ("json array", [DELIVERY], 400, None),
    ("json string", '"order please"', 400, None),
    ("json number", "42", 400, None),
    ("json null", "null", 400, None),
    ("unknown kind", with_(DELIVERY, kind="dine-in"), 400, "kind"),
    ("unknown menu item", with_(DELIVERY, lines=[line(), line("hawaiian")]), 400, "lines[1].item"),
    ("menu item not a string", with_(DELIVERY, lines=[line(["margherita"])]), 400, "lines[0].item"),
    ("unavailable item", with_(DELIVERY, lines=[line("calzone")]), 400, "lines[0].item"),
    ("qty 0", with_(DELIVERY, lines=[line(qty=0)]), 400, "lines[0].qty"),
    ("qty -1", with_(DELIVERY, lines=[line(qty=-1)]), 400, "lines[0].qty"),
    ("qty 51", with_(DELIVERY, lines=[line(qty=51)]), 400, "lines[0].qty"),
    ("qty string", with_(DELIVERY, lines=[line(qty="2")]), 400, "lines[0].qty"),
    ("qty true", with_(DELIVERY, lines=[line(qty=True)]), 400, "lines[0].qty"),
    ("qty float", with_(DELIVERY, lines=[line(qty=1.5)]), 400, "lines[0].qty"),
    ("qty huge", with_(DELIVERY, lines=[line(qty=10**40)]), 400, "lines[0].qty"),
    ("line not an object", with_(DELIVERY, lines=["margherita"]), 400, "lines[0]"),
    ("empty lines", with_(DELIVERY, lines=[]), 400, "lines"),
    ("no lines", {k: v for k, v in DELIVERY.items() if k != "lines"}, 400, "lines"),
    ("too many lines", with_(DELIVERY, lines=[line()] * 31), 400, "lines"),
    ("note too long", with_(DELIVERY, lines=[line(note="x" * 201)]), 400, "lines[0].note"),
    ("delivery without zone", {k: v for k, v in DELIVERY.items() if k != "zone"}, 400, "zone"),
    ("delivery with blank zone", with_(DELIVERY, zone="  "), 400, "zone"),
    (
        "delivery without address",
        with_(DELIVERY, customer={"name": "Ada", "phone": "1"}),
        400,
        "customer.address",
    ),
    ("no customer name", with_(DELIVERY, customer={"address": "x"}), 400, "customer.name"),
    ("customer not an object", with_(DELIVERY, customer="Ada"), 400, "customer"),
    ("rush not a boolean", with_(DELIVERY, rush="yes"), 400, "rush"),
    (
        "takeaway without outlet",
        {k: v for k, v in TAKEAWAY.items() if k != "outlet"},
        400,
        "outlet",
    ),
    ("takeaway at unknown outlet", with_(TAKEAWAY, outlet="south"), 400, "outlet"),
    ("takeaway at draining outlet", with_(TAKEAWAY, outlet="east"), 422, "outlet"),
    ("takeaway at down outlet", with_(TAKEAWAY, outlet="west"), 422, "outlet"),
    ("NUL in a name", with_(DELIVERY, customer={"name": "A\u0000da", "address": "x"}), 400, None),
    ("lone surrogate", '{"kind": "delivery", "zone": "\\ud800"}', 400, None),
    ("nested too deeply", "[" * 20000 + "]" * 20000, 400, None),
    ("body over 64 KiB", with_(DELIVERY, padding="x" * (64 * 1024)), 413, None),
]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [case[1:] for case in BAD_ORDERS],
    ids=[case[0] for case in BAD_ORDERS],
)
def test_place_bad_input__refused_naming_the_field_and_nothing_written(
    client: Client, shop: dict[str, Outlet], body: Any, status: int, field: str | None
) -> None:
    before = row_counts()

    response = post(client, body)

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["error"] and answer["message"]
    if field is not None:
        assert answer["field"] == field
    assert row_counts() == before


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_place__wrong_method__405_and_nothing_written(
    client: Client, shop: dict[str, Outlet], method: str
) -> None:
    before = row_counts()

    response = client.generic(
        method.upper(), "/api/orders", json.dumps(DELIVERY), content_type="application/json"
    )

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"
    assert row_counts() == before


def test_order_detail__post__405(client: Client, shop: dict[str, Outlet]) -> None:
    token = post(client, DELIVERY).json()["token"]

    assert client.post(f"/api/orders/{token}").status_code == 405


def test_idempotency_key__replay_returns_the_same_order_with_202_and_no_second_order(
    client: Client, shop: dict[str, Outlet]
) -> None:
    first = post(client, DELIVERY, **{"Idempotency-Key": "k-1"})
    before = row_counts()

    # The same request, written with other spacing and key order, is the same request.
    again = post(
        client, json.dumps(DELIVERY, indent=2, sort_keys=True), **{"Idempotency-Key": "k-1"}
    )

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["token"] == first.json()["token"]
    assert again.json()["number"] == first.json()["number"]
    assert again["Idempotent-Replayed"] == "true"
    assert row_counts() == before


def test_idempotency_key__replay_after_the_outlet_stopped_taking_orders__still_the_first_order(
    client: Client, shop: dict[str, Outlet]
) -> None:
    first = post(client, TAKEAWAY, **{"Idempotency-Key": "k-walk-in"})
    outlet_drain(outlet=shop["north"])
    before = row_counts()

    again = post(client, TAKEAWAY, **{"Idempotency-Key": "k-walk-in"})

    assert again.status_code == 202
    assert again.json()["token"] == first.json()["token"]
    assert row_counts() == before


def test_idempotency_key__same_key_different_body__422_and_nothing_written(
    client: Client, shop: dict[str, Outlet]
) -> None:
    post(client, DELIVERY, **{"Idempotency-Key": "k-2"})
    before = row_counts()

    response = post(client, with_(DELIVERY, zone="N2"), **{"Idempotency-Key": "k-2"})

    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"
    assert row_counts() == before


def test_idempotency_key__too_long__400(client: Client, shop: dict[str, Outlet]) -> None:
    before = row_counts()

    response = post(client, DELIVERY, **{"Idempotency-Key": "k" * 201})

    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"
    assert row_counts() == before


def test_idempotency_key__refused_request_does_not_use_up_the_key(
    client: Client, shop: dict[str, Outlet]
) -> None:
    refused = post(client, with_(DELIVERY, lines=[line(qty=0)]), **{"Idempotency-Key": "k-3"})

    placed = post(client, DELIVERY, **{"Idempotency-Key": "k-3"})

    assert (refused.status_code, placed.status_code) == (400, 202)
    assert placed["Idempotent-Replayed"] == "false"


# --- fuzzing: random JSON never gets a 500 and never leaves half an order -------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ITEMS = st.sampled_from(["margherita", "cola", "calzone", "hawaiian", ""]) | JSON_VALUES
LINES = (
    st.lists(
        st.fixed_dictionaries(
            {"item": ITEMS},
            optional={"qty": st.integers(-3, 60) | JSON_VALUES, "note": JSON_VALUES},
        ),
        max_size=4,
    )
    | JSON_VALUES
)
ORDER_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["delivery", "takeaway"]) | JSON_VALUES,
        "zone": st.sampled_from(["N1", "", "\x00"]) | JSON_VALUES,
        "outlet": st.sampled_from(["north", "east", "west", "nowhere"]) | JSON_VALUES,
        "lines": LINES,
        "customer": st.fixed_dictionaries(
            {}, optional={"name": JSON_VALUES, "address": JSON_VALUES, "phone": JSON_VALUES}
        )
        | JSON_VALUES,
        "rush": JSON_VALUES,
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=ORDER_SHAPED | JSON_VALUES, key=st.none() | st.sampled_from(["fuzz-a", "fuzz-b"]))
def test_place__random_json__never_a_500_and_no_partial_writes(
    client: Client, shop: dict[str, Outlet], body: Any, key: str | None
) -> None:
    before = row_counts()
    headers = {"Idempotency-Key": key} if key else {}

    response = post(client, json.dumps(body), **headers)

    assert response.status_code < 500
    assert response["Content-Type"] == "application/json"
    orders, events, keys = row_counts()
    if response.status_code == 202 and response["Idempotent-Replayed"] == "false":
        assert (orders, events, keys) == (
            before[0] + 1,
            before[1] + 1,
            before[2] + (1 if key else 0),
        )
    else:
        assert (orders, events, keys) == before


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_place__random_bytes__never_a_500(
    client: Client, shop: dict[str, Outlet], raw: bytes
) -> None:
    before = row_counts()

    response = post(client, raw)

    assert response.status_code < 500
    if response.status_code != 202:
        assert row_counts() == before


@pytest.mark.django_db(transaction=True)
def test_place__one_write_statement_without_a_transaction_or_savepoint(
    client: Client, shop: dict[str, Outlet]
) -> None:
    """Placing an order is one statement that commits on its own: a transaction around it
    cost a BEGIN and a COMMIT, a nested one a savepoint (two round trips each)."""
    with CaptureQueriesContext(connection) as without_key:
        assert post(client, TAKEAWAY).status_code == 202
    with CaptureQueriesContext(connection) as with_key:
        assert post(client, TAKEAWAY, **{"Idempotency-Key": "k-savepoint"}).status_code == 202
    statements = [q["sql"].split()[0].upper() for q in without_key.captured_queries]
    assert "BEGIN" not in statements and "COMMIT" not in statements, statements
    assert statements.count("WITH") == 1, statements  # the order, its event, its outlet held
    assert not any(s.startswith(("SAVEPOINT", "RELEASE")) for s in statements), statements
    # With a key, the key's row and the order commit together (its savepoint catches a twin).
    keyed = [q["sql"].split()[0].upper() for q in with_key.captured_queries]
    assert keyed.count("COMMIT") == 1, keyed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", ["", "k-built"], ids=["no key", "key"])
@pytest.mark.parametrize("body", [TAKEAWAY, DELIVERY], ids=["takeaway", "delivery"])
def test_place__the_order_answered_is_the_row_written_and_is_not_read_back(
    shop: dict[str, Outlet], body: dict[str, Any], key: str
) -> None:
    request = order_request_parse(body)
    with CaptureQueriesContext(connection) as placing:
        order, created = order_place(request=request, idempotency_key=key, body=b"{}")
    assert created
    assert not [q for q in placing.captured_queries if 'FROM "queueing_order"' in q["sql"]]
    stored = Order.objects.get(pk=order.pk)
    for name in (f.attname for f in Order._meta.concrete_fields):
        assert getattr(order, name) == getattr(stored, name), name
    assert order.outlet == stored.outlet == shop["north"]
