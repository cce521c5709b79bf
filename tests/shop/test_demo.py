"""The demo's users: the manager can do a manager's work in the admin, and no more."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from shop.demo import demo_seed


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
