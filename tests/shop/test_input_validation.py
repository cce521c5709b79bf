"""Input is checked where it enters: zones, the admin's JSON and weights."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from queueing.models import Order, Outlet
from queueing.services import order_enqueue
from tests.shop.test_api_agents import MakeOutlet

pytestmark = pytest.mark.django_db

LINE = {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 60}


@pytest.fixture
def north(menu: None, make_outlet: MakeOutlet) -> Outlet:
    return make_outlet("north")[0]


@pytest.fixture
def boss() -> User:
    return User.objects.create_superuser("boss", password="x" * 12)


def delivery(zone: str) -> dict[str, Any]:
    return {
        "kind": "delivery",
        "zone": zone,
        "lines": [{"item": "margherita"}],
        "customer": {"name": "Ann", "address": "1 High St"},
    }


@pytest.mark.parametrize("zone", ["A1²", "N1\u0661", "<b>N1</b>", " -N1", "N1-", "x" * 41])
def test_place__a_zone_outside_the_pattern_is_400_naming_zone(
    client: Client, north: Outlet, zone: str
) -> None:
    answer = client.post("/api/orders", json.dumps(delivery(zone)), content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["field"] == "zone"
    assert not Order.objects.exists()


@pytest.mark.parametrize("zone", ["N1", "SE-12", "Old Town 3"])
def test_place__zones_in_the_pattern_are_taken(client: Client, north: Outlet, zone: str) -> None:
    answer = client.post("/api/orders", json.dumps(delivery(zone)), content_type="application/json")
    assert answer.status_code == 202, answer.content


def test_order_form__still_renders_when_an_old_order_has_a_strange_zone(
    client: Client, north: Outlet
) -> None:
    order_enqueue(
        kind="delivery", lines=[LINE], customer={"name": "A"}, prep_seconds=60, quick=False,
        zone="A1²",
    )  # fmt: skip
    answer = client.get("/order/")
    assert answer.status_code == 200
    assert "A1²" not in answer.content.decode()


def admin_request(user: User) -> Any:
    request = RequestFactory().post("/admin/")
    request.user = user
    return request


@pytest.mark.parametrize(
    "customer",
    ['["Ann"]', '"Ann"', "42", '{"name": "Ann", "card": "4111"}', '{"name": 5}', '{"phone": "1"}'],
)
def test_admin_order__customer_must_be_an_object_of_contact_texts(
    north: Outlet, boss: User, customer: str
) -> None:
    order = Order.objects.get(
        pk=order_enqueue(
            kind="takeaway", lines=[LINE], customer={"name": "A"}, prep_seconds=60, quick=False,
            outlet=north,
        ).id
    )  # fmt: skip
    model_admin = admin.site._registry[Order]
    form_class = model_admin.get_form(admin_request(boss), order, change=True)
    form = form_class({"customer": customer}, instance=order)
    assert not form.is_valid()
    assert "customer" in form.errors


def test_admin_order_list__renders_even_with_a_customer_that_is_not_an_object(
    north: Outlet, boss: User
) -> None:
    ticket = order_enqueue(
        kind="takeaway", lines=[LINE], customer={"name": "A"}, prep_seconds=60, quick=False,
        outlet=north,
    )  # fmt: skip
    Order.objects.filter(pk=ticket.id).update(customer=["Ann"])
    client = Client()
    client.force_login(boss)
    assert client.get("/admin/queueing/order/").status_code == 200


@pytest.mark.parametrize(("weight", "ok"), [(0, False), (1, True), (100, True), (101, False)])
def test_admin_outlet__weight_has_the_ops_forms_bounds(
    north: Outlet, boss: User, weight: int, ok: bool
) -> None:
    model_admin = admin.site._registry[Outlet]
    form_class = model_admin.get_form(admin_request(boss), north, change=True)
    data = {"name": "North", "weight": weight, "amber_after": 300, "red_after": 600}
    form = form_class(data, instance=north)
    assert form.is_valid() is ok, form.errors
