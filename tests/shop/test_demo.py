"""The demo's users: the manager can do a manager's work in the admin, and no more."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from queueing.models import Order, Outlet
from queueing.services import order_claim_next
from queueing.services.outlets import outlet_activate
from shop.demo import demo_seed
from shop.models import Payment
from shop.payments import order_bump_paid

# What the demo's manager finds in the admin, as the README tells it: outlets, the menu,
# orders (with their events and the notifier's status, read only), staff, payments (read
# only), and users only as a list to pick staff from.
MANAGER_SEES = {
    ("queueing", "Outlet"): {"add": True, "change": True, "delete": False, "view": True},
    ("queueing", "Order"): {"add": False, "change": True, "delete": False, "view": True},
    ("queueing", "OrderEvent"): {"add": False, "change": False, "delete": False, "view": True},
    ("queueing", "NotifierStatus"): {"add": False, "change": False, "delete": False, "view": True},
    ("shop", "MenuItem"): {"add": True, "change": True, "delete": True, "view": True},
    ("shop", "Membership"): {"add": True, "change": True, "delete": True, "view": True},
    ("shop", "Payment"): {"add": False, "change": False, "delete": False, "view": True},
    ("auth", "User"): {"add": False, "change": False, "delete": False, "view": True},
}


def paid_order(*, method: str = "card") -> Order:
    """A takeaway order at north, cooked, handed over and paid."""
    north = Outlet.objects.get(slug="north")
    if north.state != "active":
        outlet_activate(outlet=north)  # a demo outlet takes orders once its agent heartbeats
    answer = Client().post(
        "/api/orders",
        json.dumps(
            {
                "kind": "takeaway",
                "outlet": "north",
                "lines": [{"item": "pepperoni", "qty": 2}],
                "customer": {"name": "Grace"},
            }
        ),
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    [ticket] = order_claim_next(outlet=north, station="oven-1")
    order_bump_paid(
        token=ticket.token,
        fence=ticket.fence,
        outlet=north,
        data={"paid": True, "method": method},
        by="cook-north",
    )
    return Order.objects.get(token=ticket.token)


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(username=username))
    return client


@pytest.mark.django_db
def test_demo_manager__admin_shows_outlets_menu_orders_and_staff_but_not_accounts() -> None:
    demo_seed()
    client = Client()
    client.force_login(User.objects.get(username="manager"))

    index = client.get("/admin/")
    assert index.status_code == 200
    assert b"have permission to view or edit anything" not in index.content
    for page in (
        "/admin/queueing/outlet/",
        "/admin/queueing/order/",
        "/admin/queueing/orderevent/",
        "/admin/shop/menuitem/",
        "/admin/shop/menuitem/add/",
        "/admin/shop/membership/",
        "/admin/shop/membership/add/",
    ):
        assert client.get(page).status_code == 200, page
    # Accounts stay a superuser's: changing a user could grant superuser.
    assert client.get("/admin/auth/user/add/").status_code == 403
    assert client.get("/admin/auth/group/").status_code == 403
    assert client.get("/ops/").status_code == 200


@pytest.mark.django_db
def test_demo_seed__run_twice_keeps_one_managers_group_with_the_same_permissions() -> None:
    demo_seed()
    demo_seed()
    manager = User.objects.get(username="manager")
    assert manager.groups.count() == 1
    assert manager.has_perm("shop.change_menuitem")
    assert not manager.has_perm("auth.change_user")


@pytest.mark.django_db
def test_migrate__makes_the_managers_group_with_exactly_a_managers_permissions() -> None:
    """Without the demo too: a real chain's database has the group the README describes."""
    from django.contrib.auth.models import Group

    from shop.access import MANAGERS_ADMIN_PERMISSIONS

    group = Group.objects.get(name="Managers")  # made by migrate (post_migrate), not the demo
    have = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
    assert have == set(MANAGERS_ADMIN_PERMISSIONS)


@pytest.mark.django_db
def test_demo_manager__admin_index_offers_exactly_a_managers_records() -> None:
    demo_seed()
    index = signed_in("manager").get("/admin/")
    seen = {
        (app["app_label"], model["object_name"]): model["perms"]
        for app in index.context["app_list"]
        for model in app["models"]
    }
    assert seen == MANAGER_SEES


@pytest.mark.django_db
def test_demo_manager__views_payments_in_the_admin_but_cannot_add_change_or_delete_them() -> None:
    demo_seed()
    order = paid_order(method="card")
    payment = Payment.objects.get(order=order)
    client = signed_in("manager")

    listing = client.get("/admin/shop/payment/")
    assert listing.status_code == 200
    table = re.search(r'<table id="result_list">.*?</table>', listing.content.decode(), re.S)
    assert table is not None
    row = re.sub(r"<[^>]+>", " ", table.group(0))  # the one row's cells, as text
    for shown in (
        f"Order {order.pk}",
        "Hearth North",
        "£20.00",
        "Card",
        "at the counter",
        "cook-north",
    ):
        assert shown in row, shown
    filters = (
        f"order__outlet__id__exact={order.outlet_id}",
        "method__exact=card",
        f"paid_at__year={payment.paid_at.year}",
    )
    for query in filters:
        filtered = client.get(f"/admin/shop/payment/?{query}")
        assert filtered.status_code == 200, query
        assert f"Order {order.pk}" in filtered.content.decode(), query
    assert (
        f"Order {order.pk}"
        not in client.get("/admin/shop/payment/?method__exact=cash").content.decode()
    )

    page = client.get(f"/admin/shop/payment/{payment.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # shown read only
    assert client.get("/admin/shop/payment/add/").status_code == 403
    assert (
        client.post(f"/admin/shop/payment/{payment.pk}/change/", {"amount": "0"}).status_code == 403
    )
    assert (
        client.post(f"/admin/shop/payment/{payment.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    payment.refresh_from_db()
    assert payment.amount == Decimal("20.00")


@pytest.mark.django_db
def test_payments_admin__not_even_a_superuser_adds_changes_or_deletes_a_payment() -> None:
    demo_seed()
    payment = Payment.objects.get(order=paid_order())
    User.objects.create_superuser("root", password="pw-root-123")
    client = signed_in("root")
    assert client.get(f"/admin/shop/payment/{payment.pk}/change/").status_code == 200
    assert client.get("/admin/shop/payment/add/").status_code == 403
    assert (
        client.post(f"/admin/shop/payment/{payment.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert Payment.objects.filter(pk=payment.pk).exists()


@pytest.mark.django_db
def test_payments_admin__staff_who_are_not_managers_cannot_see_payments() -> None:
    demo_seed()
    payment = Payment.objects.get(order=paid_order())
    # A cook is not admin staff: the admin sends them to sign in.
    cook = signed_in("cook-north")
    answer = cook.get("/admin/shop/payment/")
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]
    # Admin staff without the Managers group see no payments either.
    User.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    clerk = signed_in("clerk")
    assert clerk.get("/admin/shop/payment/").status_code == 403
    assert clerk.get(f"/admin/shop/payment/{payment.pk}/change/").status_code == 403
