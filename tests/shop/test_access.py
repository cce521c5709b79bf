"""Who opens which screen: anonymous visitors sign in, outlet staff only their kitchen, managers all."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from queueing.models import Order, Outlet
from queueing.services import order_enqueue
from shop.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def cook_north(north: Outlet) -> User:
    user = User.objects.create_user("cook-north", password="pw-north-1")
    Membership.objects.create(user=user, outlet=north)
    return user


@pytest.fixture
def manager(db: None) -> User:
    user = User.objects.create_user("manager", password="pw-manager-1")
    user.user_permissions.add(Permission.objects.get(codename="manager"))
    return user


def client_for(user: User | None, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def queued_order(outlet: Outlet) -> Order:
    ticket = order_enqueue(
        kind="takeaway",
        lines=[
            {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 420}
        ],
        customer={"name": "Ada"},
        prep_seconds=420,
        quick=False,
        outlet=outlet,
    )
    return Order.objects.get(pk=ticket.id)


# --- Kitchen screen ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/kitchen/north/", "/ops/", "/ops/outlets/add/", "/ops/outlets/north/drain/"]
)
def test_screens__anonymous_visitor_is_sent_to_the_login_page(north: Outlet, path: str) -> None:
    response = client_for(None).get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_kitchen__staff_of_the_outlet_open_it(cook_north: User, north: Outlet) -> None:
    response = client_for(cook_north).get("/kitchen/north/")
    assert response.status_code == 200
    assert b"Hearth North" in response.content


def test_kitchen__staff_of_another_outlet_get_403(cook_north: User, south: Outlet) -> None:
    response = client_for(cook_north).get("/kitchen/south/")
    assert response.status_code == 403
    assert b"Hearth South" in response.content  # the page says which outlet they are not staff of


def test_kitchen__a_user_with_no_outlet_gets_403(north: Outlet) -> None:
    nobody = User.objects.create_user("nobody", password="pw-nobody-1")
    assert client_for(nobody).get("/kitchen/north/").status_code == 403
    assert client_for(nobody).get("/kitchen/north/tickets/").status_code == 403


@pytest.mark.parametrize("path", ["/kitchen/north/", "/kitchen/south/"])
def test_kitchen__a_manager_opens_every_kitchen(
    manager: User, north: Outlet, south: Outlet, path: str
) -> None:
    assert client_for(manager).get(path).status_code == 200


def test_kitchen__a_superuser_opens_every_kitchen(north: Outlet) -> None:
    admin = User.objects.create_superuser("boss", password="pw-boss-1")
    assert client_for(admin).get("/kitchen/north/").status_code == 200
    assert client_for(admin).get("/ops/").status_code == 200


def test_kitchen__unknown_outlet_is_404(manager: User) -> None:
    assert client_for(manager).get("/kitchen/nowhere/").status_code == 404


def test_kitchen_tickets_part__anonymous_gets_401_not_a_login_page(north: Outlet) -> None:
    response = client_for(None).get("/kitchen/north/tickets/")
    assert response.status_code == 401


# --- Kitchen actions -------------------------------------------------------------------


def test_kitchen_action__csrf_is_enforced(menu: None, cook_north: User, north: Outlet) -> None:
    order = queued_order(north)
    client = client_for(cook_north, csrf=True)
    response = client.post(
        "/kitchen/north/start", json.dumps({"token": order.token}), content_type="application/json"
    )
    assert response.status_code == 403
    order.refresh_from_db()
    assert order.state == "queued"  # nothing changed


def test_kitchen_action__with_the_csrf_header_it_acts(
    menu: None, cook_north: User, north: Outlet
) -> None:
    order = queued_order(north)
    client = client_for(cook_north, csrf=True)
    page = client.get("/kitchen/north/")
    token = page.context["csrf_token"]
    response = client.post(
        "/kitchen/north/start",
        json.dumps({"token": order.token, "tab": "ab12"}),
        content_type="application/json",
        headers={"X-CSRFToken": str(token)},
    )
    assert response.status_code == 200, response.content
    order.refresh_from_db()
    assert order.state == "preparing"
    assert order.claimed_by == "cook-north·ab12"


def test_kitchen_action__anonymous_gets_401_json(north: Outlet) -> None:
    response = client_for(None).post("/kitchen/north/next", "{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_kitchen_action__staff_of_another_outlet_cannot_act(
    menu: None, cook_north: User, south: Outlet
) -> None:
    order = queued_order(south)
    response = client_for(cook_north).post(
        "/kitchen/south/start", json.dumps({"token": order.token}), content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    order.refresh_from_db()
    assert order.state == "queued"


def test_kitchen_action__another_outlets_ticket_is_not_found_here(
    menu: None, cook_north: User, north: Outlet, south: Outlet
) -> None:
    """A cook of north cannot start a south ticket by sending its token to north's screen."""
    order = queued_order(south)
    response = client_for(cook_north).post(
        "/kitchen/north/start", json.dumps({"token": order.token}), content_type="application/json"
    )
    assert response.status_code == 404
    order.refresh_from_db()
    assert order.state == "queued"


def test_kitchen_action__get_is_refused(cook_north: User, north: Outlet) -> None:
    assert client_for(cook_north).get("/kitchen/north/next").status_code == 405


# --- Operations ----------------------------------------------------------------------


def test_ops__a_cook_gets_403(cook_north: User) -> None:
    assert client_for(cook_north).get("/ops/").status_code == 403
    assert client_for(cook_north).get("/ops/overview/").status_code == 403


def test_ops__signed_out_the_page_redirects_but_its_live_part_answers_401() -> None:
    client = Client()
    assert client.get("/ops/").status_code == 302  # a person is sent to sign in
    part = client.get("/ops/overview/")  # a fetch is told, not redirected into the login page
    assert part.status_code == 401
    assert "login" not in part.content.decode().lower()
    tickets = client.get("/kitchen/north/tickets/")
    assert tickets.status_code == 401


def test_ops__a_manager_opens_it(manager: User, north: Outlet) -> None:
    response = client_for(manager).get("/ops/")
    assert response.status_code == 200
    assert b"Hearth North" in response.content


def test_ops_action__a_cook_cannot_drain(cook_north: User, north: Outlet) -> None:
    response = client_for(cook_north).post("/ops/outlets/north/drain/")
    assert response.status_code == 403
    north.refresh_from_db()
    assert north.state == "active"


def test_ops_action__csrf_is_enforced(manager: User, north: Outlet) -> None:
    response = client_for(manager, csrf=True).post("/ops/outlets/north/drain/")
    assert response.status_code == 403
    north.refresh_from_db()
    assert north.state == "active"


def test_order_form__csrf_is_enforced(menu: None, north: Outlet) -> None:
    response = client_for(None, csrf=True).post(
        "/order/", {"kind": "takeaway", "outlet": "north", "name": "Ada", "qty_margherita": "1"}
    )
    assert response.status_code == 403
    assert not Order.objects.exists()


# --- Login -----------------------------------------------------------------------------


def test_admin_login__is_the_same_login_page(db: None) -> None:
    response = client_for(None).get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/admin/"


def test_login__signs_in_and_goes_where_it_was_sent(cook_north: User, north: Outlet) -> None:
    client = Client()
    page = client.get("/accounts/login/?next=/kitchen/north/")
    assert page.status_code == 200
    response = client.post(
        "/accounts/login/",
        {"username": "cook-north", "password": "pw-north-1", "next": "/kitchen/north/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/kitchen/north/"
    assert client.get("/kitchen/north/").status_code == 200


def test_login__a_wrong_password_is_said_plainly(cook_north: User) -> None:
    response = Client().post("/accounts/login/", {"username": "cook-north", "password": "nope"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content


def test_home__links_a_cook_to_their_kitchen_only(
    cook_north: User, north: Outlet, south: Outlet
) -> None:
    html = client_for(cook_north).get("/").content.decode()
    assert "/kitchen/north/" in html
    assert "/kitchen/south/" not in html
    assert "/ops/" not in html


def test_home__links_a_manager_to_ops_and_every_kitchen(
    manager: User, north: Outlet, south: Outlet
) -> None:
    html = client_for(manager).get("/").content.decode()
    assert "/ops/" in html and "/kitchen/north/" in html and "/kitchen/south/" in html


def test_home__anonymous_sees_the_order_link(db: None) -> None:
    html = client_for(None).get("/").content.decode()
    assert 'href="/order/"' in html
    assert "/kitchen/" not in html


# --- The top bar ----------------------------------------------------------------------


def nav_kitchen_links(html: str) -> list[str]:
    return re.findall(r'<a href="(/kitchen/[^"]+)" class="nav-kitchen">', html)


def test_nav__links_a_signed_in_cook_to_their_kitchens_on_every_page(
    cook_north: User, north: Outlet, south: Outlet
) -> None:
    Membership.objects.create(user=cook_north, outlet=south)
    client = client_for(cook_north)
    for path in ("/", "/order/", "/api/docs/"):
        assert nav_kitchen_links(client.get(path).content.decode()) == [
            "/kitchen/north/",
            "/kitchen/south/",
        ], path


def test_nav__the_kitchens_cost_one_query_however_many(
    cook_north: User, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    client = client_for(cook_north)
    client.get("/order/")  # warm the session

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            client.get("/order/")
        return len(captured.captured_queries)

    one = queries()
    for slug in ("a1", "a2", "a3"):
        Membership.objects.create(user=cook_north, outlet=make_outlet(slug)[0])
    assert queries() == one
    assert len(nav_kitchen_links(client.get("/order/").content.decode())) == 3  # 4: home lists all


def test_nav__anonymous_visitors_and_a_manager_without_an_outlet_get_no_kitchen_link(
    manager: User, north: Outlet
) -> None:
    assert nav_kitchen_links(client_for(None).get("/order/").content.decode()) == []
    html = client_for(manager).get("/order/").content.decode()
    assert nav_kitchen_links(html) == [] and 'href="/ops/"' in html


def test_nav__a_page_without_the_top_bar_makes_no_kitchen_query(
    cook_north: User, north: Outlet
) -> None:
    client = client_for(cook_north)
    with CaptureQueriesContext(connection) as on_the_order_form:
        client.get("/order/")
    with CaptureQueriesContext(connection) as on_the_tickets:
        client.get("/kitchen/north/tickets/")  # fetched again on every kitchen event

    def nav_queries(captured: CaptureQueriesContext) -> int:
        return sum(q["sql"].startswith('SELECT DISTINCT "queueing_outlet"') for q in captured)

    assert (nav_queries(on_the_order_form), nav_queries(on_the_tickets)) == (1, 0)


# --- The favicon --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/order/", "/api/docs/", "/accounts/login/"])
def test_favicon__every_page_names_the_svg_icon(db: None, path: str) -> None:
    html = Client().get(path).content.decode()
    assert '<link rel="icon" href="/static/hearth/favicon.svg" type="image/svg+xml">' in html


def test_favicon__the_admin_names_it_too(db: None) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-12"))
    assert 'href="/static/hearth/favicon.svg"' in client.get("/admin/").content.decode()


def test_favicon__is_served_as_svg(db: None) -> None:
    response = Client().get("/static/hearth/favicon.svg")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(response.streaming_content)  # type: ignore[attr-defined]
