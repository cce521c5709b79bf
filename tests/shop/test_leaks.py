"""What must not leak: staff identity to customers, other outlets' orders to an outlet."""

from __future__ import annotations

import pytest
from django.test import Client

from queueing.models import Order, Outlet
from queueing.services import order_claim_next
from tests.shop.test_api_agents import MakeOutlet, call, place

STATION = "cook-north·ab12"

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed(menu: None, make_outlet: MakeOutlet) -> Order:
    north, _ = make_outlet("north")
    order = place(kind="takeaway", outlet="north")
    order_claim_next(outlet=north, station=STATION)
    return order


@pytest.mark.parametrize("path", ["/api/orders/{token}", "/o/{token}/", "/o/{token}/part/"])
def test_customer_pages_and_api__carry_no_station_or_staff_name(
    client: Client, claimed: Order, path: str
) -> None:
    answer = client.get(path.format(token=claimed.token))
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "cook-north" not in text and "ab12" not in text and "station" not in text


@pytest.mark.parametrize("action", ["ready", "complete", "renew"])
@pytest.mark.parametrize("fence", ["right", "stale", "huge"])
def test_agent_of_another_outlet__gets_404_that_says_nothing_whatever_the_fence(
    client: Client, menu: None, make_outlet: MakeOutlet, action: str, fence: str
) -> None:
    north, _ = make_outlet("north")
    _, east_token = make_outlet("east", name="Hearth East")
    order = place(kind="takeaway", outlet="north")
    [ticket] = order_claim_next(outlet=north, station="n1")
    sent = {"right": ticket.fence, "stale": ticket.fence - 1, "huge": 2**62}[fence]

    answer = call(client, f"/api/orders/{order.token}/{action}", east_token, {"fence": sent})

    assert answer.status_code == 404
    # exactly what a token that names no order gets
    assert answer.json() == {
        "error": "not_found",
        "message": "no order with this token",
        "token": order.token,
    }
    order.refresh_from_db()
    assert order.state == "preparing"


def test_agent_of_another_outlet__batch_complete_refusal_says_nothing(
    client: Client, menu: None, make_outlet: MakeOutlet
) -> None:
    north, _ = make_outlet("north")
    _, east_token = make_outlet("east")
    order = place(kind="takeaway", outlet="north")
    [ticket] = order_claim_next(outlet=north, station="n1")
    answer = call(
        client,
        "/api/outlets/east/complete",
        east_token,
        {"claims": [{"token": order.token, "fence": ticket.fence + 5}]},
    )
    assert answer.json()["refused"] == [
        {"error": "not_found", "message": "no order with this token", "token": order.token}
    ]


def test_kitchen_of_another_outlet__ticket_of_another_outlet_is_not_found(
    client: Client, menu: None, make_outlet: MakeOutlet, django_user_model: object
) -> None:
    from shop.models import Membership

    north, _ = make_outlet("north")
    east, _ = make_outlet("east")
    order = place(kind="takeaway", outlet="north")
    [ticket] = order_claim_next(outlet=north, station="n1")
    cook = django_user_model.objects.create_user("eastcook")  # type: ignore[attr-defined]
    Membership.objects.create(user=cook, outlet=Outlet.objects.get(slug="east"))
    client.force_login(cook)
    for action in ("ready", "complete", "recall"):
        answer = client.post(
            f"/kitchen/east/{action}",
            {"token": order.token, "fence": ticket.fence + 1},
            content_type="application/json",
        )
        assert answer.status_code == 404, answer.content
        text = answer.content.decode()
        assert str(order.pk) not in text and "north" not in text.lower()
