"""Prices and paying: each order keeps the prices it was placed at, shows its total, and is paid."""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queueing.models import Order, Outlet
from queueing.services import order_claim_next
from shop import ops
from shop.models import Membership, MenuItem, Payment
from shop.payments import Takings, local_day_start, takings_by_outlet, takings_total
from tests.shop.test_openapi import conforms

pytestmark = pytest.mark.django_db

TAKEAWAY = {
    "kind": "takeaway",
    "outlet": "north",
    "lines": [{"item": "pepperoni", "qty": 1}, {"item": "cola", "qty": 3}],
    "customer": {"name": "Grace"},
}


def post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


def place(body: dict[str, Any] = TAKEAWAY) -> dict[str, Any]:
    answer = post(Client(), "/api/orders", body)
    assert answer.status_code == 202, answer.content
    return answer.json()


@pytest.fixture
def cook(north: Outlet) -> Client:
    user = User.objects.create_user("cook-north", password="pw-north-1")
    Membership.objects.create(user=user, outlet=north)
    client = Client()
    client.force_login(user)
    return client


def bump(cook: Client, north: Outlet, token: str, **extra: Any) -> Any:
    [claimed] = order_claim_next(outlet=north, station="s1")
    assert claimed.token == token
    return post(cook, "/kitchen/north/complete", {"token": token, "fence": claimed.fence, **extra})


# --- Prices on the order ---------------------------------------------------------------


def test_order_api__lines_carry_their_price_and_the_order_its_total(
    menu: None, north: Outlet
) -> None:
    placed = place()

    assert [(ln["item"], ln["price"]) for ln in placed["lines"]] == [
        ("pepperoni", "10.00"),
        ("cola", "2.00"),
    ]
    assert placed["total"] == "16.00"
    assert placed["paid"] is None
    conforms(placed, "PlacedOrder")


def test_order__keeps_the_prices_it_was_placed_at(menu: None, north: Outlet) -> None:
    placed = place()
    MenuItem.objects.filter(slug="cola").update(price=Decimal("9.99"))

    followed = Client().get(f"/api/orders/{placed['token']}").json()

    assert followed["total"] == "16.00"
    assert followed["lines"][1]["price"] == "2.00"
    conforms(followed, "OrderWithTimeline")
    stored = Order.objects.get(token=placed["token"]).lines
    assert [ln["price"] for ln in stored] == ["10.00", "2.00"]


def test_order_page__shows_the_total_and_what_is_owed(menu: None, north: Outlet) -> None:
    placed = place()

    html = Client().get(f"/o/{placed['token']}/").content.decode()

    assert "£16.00" in html
    assert "To pay: £16.00" in html


def test_menu_item__negative_price_refused(menu: None) -> None:
    item = MenuItem(slug="free", name="Free", price=Decimal("-1.00"), prep_seconds=10)
    with pytest.raises(ValidationError):
        item.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        item.save()


# --- The order form's live total -------------------------------------------------------


def test_order_form__offers_a_live_total_from_each_rows_price(menu: None, north: Outlet) -> None:
    html = Client().get("/order/").content.decode()

    assert 'data-price="8.50"' in html  # margherita's row
    assert 'id="order-total"' in html
    assert "<script>" not in html  # the CSP allows no inline script: the total is order_form.js


# --- GET /api/menu ---------------------------------------------------------------------


def test_menu_api__lists_available_items_with_prices_in_one_query(menu: None) -> None:
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        answer = client.get("/api/menu")

    assert answer.status_code == 200
    assert len(queries) == 1
    body = answer.json()
    conforms(body, "Menu")
    slugs = [i["slug"] for i in body["items"]]
    assert "calzone" not in slugs  # not available today
    margherita = next(i for i in body["items"] if i["slug"] == "margherita")
    assert margherita == {
        "slug": "margherita",
        "name": "Margherita",
        "price": "8.50",
        "prep_seconds": 420,
        "available": True,
    }
    assert body["currency"] == "GBP"
    assert "max-age" in answer["Cache-Control"]


def test_menu_api__refuses_other_methods(menu: None) -> None:
    answer = post(Client(), "/api/menu", {})
    assert answer.status_code == 405
    conforms(answer.json(), "Error")


# --- Paying ----------------------------------------------------------------------------


def test_kitchen_bump__with_paid_records_the_payment(
    menu: None, north: Outlet, cook: Client
) -> None:
    placed = place()

    answer = bump(cook, north, placed["token"], paid=True, method="card")

    assert answer.status_code == 200, answer.content
    payment = Payment.objects.get(order__token=placed["token"])
    assert (payment.amount, payment.method, payment.where) == (Decimal("16.00"), "card", "counter")
    assert payment.by == "cook-north"
    html = Client().get(f"/o/{placed['token']}/").content.decode()
    assert "Paid at the counter" in html and "To pay" not in html
    followed = Client().get(f"/api/orders/{placed['token']}").json()
    assert followed["paid"]["method"] == "card" and followed["paid"]["amount"] == "16.00"
    conforms(followed, "OrderWithTimeline")


def test_kitchen_bump__without_paid_records_nothing(
    menu: None, north: Outlet, cook: Client
) -> None:
    placed = place()
    assert bump(cook, north, placed["token"]).status_code == 200
    assert not Payment.objects.exists()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"paid": "yes", "method": "cash"}, "paid"),
        ({"paid": True}, "method"),
        ({"paid": True, "method": "bitcoin"}, "method"),
        ({"paid": True, "method": "cash", "amount": "-5"}, "amount"),
        ({"paid": True, "method": "cash", "amount": "lots"}, "amount"),
        ({"paid": True, "method": "cash", "amount": 16.0}, "amount"),
        ({"paid": True, "method": "cash", "amount": "15.00"}, "amount"),
    ],
)
def test_kitchen_bump__bad_payment_refused_and_order_left_open(
    menu: None, north: Outlet, cook: Client, extra: dict[str, Any], field: str
) -> None:
    placed = place()

    answer = bump(cook, north, placed["token"], **extra)

    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == "invalid" and answer.json()["field"] == field
    assert Order.objects.get(token=placed["token"]).state == "preparing"
    assert not Payment.objects.exists()


def test_kitchen_bump__amount_equal_to_the_total_accepted(
    menu: None, north: Outlet, cook: Client
) -> None:
    placed = place()
    answer = bump(cook, north, placed["token"], paid=True, method="cash", amount="16.00")
    assert answer.status_code == 200, answer.content
    assert Payment.objects.get().amount == Decimal("16.00")


def manager_client() -> Client:
    user = User.objects.create_user("boss", password="pw-boss-123")
    user.user_permissions.add(Permission.objects.get(codename="manager"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_ops_hand_over__paid_on_delivery(menu: None, north: Outlet) -> None:
    placed = place(
        {
            "kind": "delivery",
            "zone": "N1",
            "lines": [{"item": "margherita", "qty": 2}],
            "customer": {"name": "Ada", "address": "12 Analytical Row"},
        }
    )
    order = Order.objects.get(token=placed["token"])
    client = manager_client()
    url = f"/ops/orders/{order.pk}/handover/"
    page = client.get(url).content.decode()
    assert "To pay: £17.00" in page
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf is not None

    client.post(url, {"csrfmiddlewaretoken": csrf.group(1), "paid": "on", "method": "cash"})

    payment = Payment.objects.get(order=order)
    assert (payment.amount, payment.method, payment.where) == (Decimal("17.00"), "cash", "delivery")
    html = Client().get(f"/o/{order.token}/").content.decode()
    assert "Paid on delivery" in html


def test_ops_hand_over__bad_method_refused_and_order_left_open(menu: None, north: Outlet) -> None:
    placed = place()
    order = Order.objects.get(token=placed["token"])
    client = manager_client()
    url = f"/ops/orders/{order.pk}/handover/"
    csrf = re.search(
        r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(url).content.decode()
    )
    assert csrf is not None

    client.post(url, {"csrfmiddlewaretoken": csrf.group(1), "paid": "on", "method": "iou"})

    assert Order.objects.get(pk=order.pk).state != "completed"
    assert not Payment.objects.exists()


def paid_at(token: str, when: datetime) -> None:
    Payment.objects.filter(order__token=token).update(paid_at=when)


def test_takings_by_outlet__sums_the_last_hour_and_the_day_per_outlet(
    menu: None, north: Outlet, south: Outlet, cook: Client
) -> None:
    now = timezone.now()
    first = place()  # 10.00 + 3 × 2.00
    bump(cook, north, first["token"], paid=True, method="cash")
    second = place({**TAKEAWAY, "lines": [{"item": "water", "qty": 2}]})
    bump(cook, north, second["token"], paid=True, method="card")
    unpaid = place()
    bump(cook, north, unpaid["token"])
    earlier = place({**TAKEAWAY, "lines": [{"item": "margherita", "qty": 1}]})
    bump(cook, north, earlier["token"], paid=True, method="cash")
    paid_at(earlier["token"], now - timedelta(hours=2))  # today, not the last hour
    yesterday = place({**TAKEAWAY, "lines": [{"item": "quattro-formaggi", "qty": 1}]})
    bump(cook, north, yesterday["token"], paid=True, method="cash")
    paid_at(yesterday["token"], now - timedelta(hours=5))  # before the day began

    takings = takings_by_outlet(day_start=now - timedelta(hours=3))

    assert takings == {north.pk: Takings(hour=Decimal("19.00"), today=Decimal("27.50"))}
    assert takings_by_outlet(day_start=now + timedelta(minutes=1)) == {
        north.pk: Takings(hour=Decimal("19.00"))
    }


def test_takings_total__adds_up_outlets_and_orders_handed_over_nowhere() -> None:
    total = takings_total(
        [Takings(hour=Decimal("1.50"), today=Decimal("1.50")), Takings(today=Decimal("10.00"))]
    )
    assert total == Takings(hour=Decimal("1.50"), today=Decimal("11.50"))
    assert takings_total([]) == Takings()


def test_local_day_start__is_midnight_where_the_chain_is() -> None:
    with timezone.override(zoneinfo.ZoneInfo("Europe/London")):
        start = local_day_start(now=datetime(2026, 7, 1, 23, 30, tzinfo=UTC))  # 00:30 BST
    assert start == datetime(2026, 7, 1, 23, 0, tzinfo=UTC)  # 00:00 BST on the 2nd


def test_ops__takings_per_outlet_and_for_the_chain_in_the_last_hour_history(
    menu: None, north: Outlet, south: Outlet, cook: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = timezone.now()
    monkeypatch.setattr(ops, "local_day_start", lambda: now - timedelta(hours=3))
    first = place()
    bump(cook, north, first["token"], paid=True, method="cash")  # 16.00
    earlier = place(
        {
            **TAKEAWAY,
            "lines": [{"item": "quattro-formaggi", "qty": 50}, {"item": "pepperoni", "qty": 50}],
        }
    )
    bump(cook, north, earlier["token"], paid=True, method="card")  # 1,050.00
    paid_at(earlier["token"], now - timedelta(hours=2))
    nowhere = place({**TAKEAWAY, "lines": [{"item": "water", "qty": 1}]})
    bump(cook, north, nowhere["token"], paid=True, method="cash")  # 1.50, its outlet since gone
    Order.objects.filter(token=nowhere["token"]).update(outlet=None)

    html = manager_client().get("/ops/overview/").content.decode()

    def row(slug: str) -> str:
        found = re.search(
            rf'<tr class="outlet-row[^"]*" data-outlet="{slug}">(.*?)</tr>', html, re.S
        )
        assert found is not None
        return re.sub(r"\s+", " ", found.group(1))

    assert "taken last hour <b>£16.00</b>" in row("north")
    assert "today <b>£1,066.00</b>" in row("north")
    assert "taken last hour <b>£0.00</b>" in row("south")
    assert "today <b>£0.00</b>" in row("south")
    chain = re.search(r'<tr class="chain-row">(.*?)</tr>', html, re.S)
    assert chain is not None
    assert "taken last hour <b>£17.50</b>" in chain.group(1)
    assert "today <b>£1,067.50</b>" in chain.group(1)
    assert "style=" not in html and "<script" not in html  # the CSP allows neither


def test_ops__takings_cost_one_query_however_many_outlets(
    menu: None, north: Outlet, cook: Client, make_outlet: Any
) -> None:
    client = manager_client()
    client.get("/ops/overview/")  # warm the session and the ring cache alike
    with CaptureQueriesContext(connection) as few:
        client.get("/ops/overview/")
    for i in range(4):
        make_outlet(f"t{i}")
    for _ in range(3):
        bump(cook, north, place()["token"], paid=True, method="cash")
    with CaptureQueriesContext(connection) as many:
        assert client.get("/ops/overview/").status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
    assert sum("shop_payment" in q["sql"] for q in many.captured_queries) == 1


def test_order_api__an_open_order_costs_no_payment_query(menu: None, north: Outlet) -> None:
    placed = place()
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        client.get(f"/api/orders/{placed['token']}")
    assert not any("shop_payment" in q["sql"] for q in queries.captured_queries)
