"""A manager's ways out on the screens: the ops page (CSRF, managers only), the admin, the command."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from queueing.models import Order, OrderEvent, OrderState, Outlet, OutletState
from queueing.services import order_claim_next, order_mark_ready, outlet_mark_down
from shop.models import Membership
from tests.orders import place

pytestmark = pytest.mark.django_db


def manager_client() -> Client:
    user = User.objects.create_user("boss", password="pw-boss-123")
    user.user_permissions.add(Permission.objects.get(codename="manager"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_post(client: Client, url: str, data: dict[str, str] | None = None) -> str:
    """GET the confirmation page, then POST its form with its CSRF token; the page after."""
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    answer = client.post(url, {"csrfmiddlewaretoken": token.group(1), **(data or {})}, follow=True)
    assert answer.status_code == 200
    return answer.content.decode()


def set_aside(outlet: Outlet) -> Order:
    ticket = place("takeaway", outlet=outlet)
    Order.objects.filter(pk=ticket.id).update(state="attention", attempts=3)
    return Order.objects.get(pk=ticket.id)


def ready_at_dead(north: Outlet) -> Order:
    """A ready order left at north after it went down (a take-down moves ready orders too;
    one is left only as a race leaves it, until the notifier's next sweep)."""
    place("takeaway", outlet=north)
    [claimed] = order_claim_next(outlet=north, station="s1")
    order_mark_ready(token=claimed.token, fence=claimed.fence, outlet=north)
    Outlet.objects.filter(pk=north.pk).update(state=OutletState.DOWN, down_by_manager=True)
    return Order.objects.get(pk=claimed.id)


def state(order: Order) -> tuple[str, int | None, int]:
    order.refresh_from_db()
    return order.state, order.outlet_id, order.fence


def test_ops__lists_attention_and_stranded_orders_with_their_ways_out(
    north: Outlet, south: Outlet
) -> None:
    stuck = set_aside(south)
    stranded = ready_at_dead(north)
    html = manager_client().get("/ops/").content.decode()
    for order in (stuck, stranded):
        assert f"/ops/orders/{order.pk}/send/" in html
        assert f"/ops/orders/{order.pk}/handover/" in html
        assert f"/ops/orders/{order.pk}/cancel/" in html
    assert "at Hearth North, which is down" in html
    assert "marked down by a manager: stays down until a manager reactivates it" in html


def test_ops__attention_order_sent_to_an_outlet(north: Outlet, south: Outlet) -> None:
    order = set_aside(north)
    client = manager_client()
    page = client.get(f"/ops/orders/{order.pk}/send/").content.decode()
    assert '<option value="south">' in page  # only active outlets are offered
    answer = csrf_post(client, f"/ops/orders/{order.pk}/send/", {"outlet": "south"})
    assert f"Order {order.pk} sent to Hearth South" in answer
    assert state(order)[:2] == ("queued", south.pk)


def test_ops__ready_at_dead_outlet_handed_over_then_retire_works(
    north: Outlet, south: Outlet
) -> None:
    order = ready_at_dead(north)
    client = manager_client()
    # Retire is not offered while the order is there: the confirmation says why (409).
    refused = client.get("/ops/outlets/north/retire/")
    assert refused.status_code == 409
    assert "open order" in refused.content.decode()

    answer = csrf_post(client, f"/ops/orders/{order.pk}/handover/")

    assert f"Order {order.pk} marked handed over" in answer
    assert state(order)[0] == OrderState.COMPLETED
    assert "is retired" in csrf_post(client, "/ops/outlets/north/retire/")
    north.refresh_from_db()
    assert north.state == "retired"


def test_ops__cancel_with_a_reason_the_customer_sees(north: Outlet) -> None:
    order = set_aside(north)
    client = manager_client()
    csrf_post(client, f"/ops/orders/{order.pk}/cancel/", {"reason": "Our oven broke"})
    assert state(order)[0] == "cancelled"
    page = Client().get(f"/o/{order.token}/").content.decode()
    assert "Our oven broke" in page and "Your order was cancelled" in page


def test_ops__refusals_are_messages_and_change_nothing(north: Outlet, south: Outlet) -> None:
    order = set_aside(north)
    outlet_mark_down(outlet=south)
    client = manager_client()
    before = (state(order), OrderEvent.objects.count())

    assert "south is not taking orders" in csrf_post(
        client, f"/ops/orders/{order.pk}/send/", {"outlet": "south"}
    )
    assert "no outlet atlantis" in csrf_post(
        client, f"/ops/orders/{order.pk}/send/", {"outlet": "atlantis"}
    )
    assert "say why" in csrf_post(client, f"/ops/orders/{order.pk}/cancel/", {"reason": " "})
    assert (state(order), OrderEvent.objects.count()) == before

    csrf_post(client, f"/ops/orders/{order.pk}/handover/")
    again = csrf_post(client, f"/ops/orders/{order.pk}/cancel/", {"reason": "x"})
    assert f"order {order.pk} is completed already" in again
    assert state(order)[0] == "completed"
    assert client.get("/ops/orders/999999/handover/").status_code == 404
    assert client.get(f"/ops/orders/{order.pk}/explode/").status_code == 404


def test_ops__without_csrf_or_as_another_outlets_staff_is_refused(
    north: Outlet, south: Outlet
) -> None:
    order = set_aside(north)
    client = manager_client()
    assert client.post(f"/ops/orders/{order.pk}/handover/").status_code == 403  # no CSRF token
    cook = User.objects.create_user("cook-south")
    Membership.objects.create(user=cook, outlet=south)
    as_cook = Client()
    as_cook.force_login(cook)
    assert as_cook.post(f"/ops/orders/{order.pk}/handover/").status_code == 403
    assert as_cook.get(f"/ops/orders/{order.pk}/send/").status_code == 403
    assert state(order)[0] == "attention"


def test_order_page__attention_says_a_manager_is_looking_then_shows_the_outcome(
    north: Outlet, south: Outlet
) -> None:
    order = set_aside(north)
    page = Client().get(f"/o/{order.token}/").content.decode()
    assert "A manager is looking at it" in page and "update this page" not in page
    csrf_post(manager_client(), f"/ops/orders/{order.pk}/send/", {"outlet": "south"})
    page = Client().get(f"/o/{order.token}/").content.decode()
    assert "A manager sent your order to Hearth South" in page


def command(*args: str) -> str:
    out = StringIO()
    call_command("order", *args, stdout=out)
    return out.getvalue()


def test_command__send_handover_cancel(north: Outlet, south: Outlet) -> None:
    sent, handed, cancelled = set_aside(north), ready_at_dead(north), set_aside(south)

    assert "sent to south" in command("send", str(sent.pk), "--to", "south", "--by", "ann")
    assert "handed over" in command("handover", str(handed.pk))
    assert "Sorry, we closed" in command(
        "cancel", str(cancelled.pk), "--reason", "Sorry, we closed"
    )

    assert state(sent)[:2] == ("queued", south.pk)
    assert state(handed)[0] == "completed" and state(cancelled)[0] == "cancelled"
    assert OrderEvent.objects.filter(order=sent).latest("id").detail["by"] == "ann"
    call_command("outlet", "retire", "north", stdout=StringIO())  # nothing left at north


def test_command__refusals_are_clear_and_change_nothing(north: Outlet, south: Outlet) -> None:
    order = set_aside(north)
    outlet_mark_down(outlet=south)
    before = (state(order), OrderEvent.objects.count())
    for args, message in [
        (["handover", "999999"], "no order 999999"),
        (["send", str(order.pk), "--to", "atlantis"], "no outlet atlantis"),
        (["send", str(order.pk), "--to", "south"], "south is not taking orders"),
        (["cancel", str(order.pk), "--reason", ""], "say why"),
        (["handover", "-3"], "order number"),
    ]:
        with pytest.raises(CommandError, match=message):
            command(*args)
    assert (state(order), OrderEvent.objects.count()) == before


def test_admin__actions_hand_over_and_cancel_with_the_reason_beside_them(
    north: Outlet, south: Outlet
) -> None:
    first, second, third = set_aside(north), set_aside(north), set_aside(north)
    admin = User.objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(admin)
    url = "/admin/queueing/order/"
    for action, ids, extra in [
        ("hand_over", [first.pk], {}),
        ("cancel_with_reason", [second.pk], {"reason": "Closed for a burst pipe"}),
        ("send_to_outlet", [third.pk, first.pk], {"outlet": "south"}),
    ]:
        answer = client.post(
            url, {"action": action, "_selected_action": [str(i) for i in ids], **extra}, follow=True
        )
        assert answer.status_code == 200
    assert state(first)[0] == "completed"
    assert (Order.objects.get(pk=second.pk).cancel_reason, state(second)[0]) == (
        "Closed for a burst pipe",
        "cancelled",
    )
    assert state(third)[:2] == ("queued", south.pk)
    # The completed one was refused with its reason, not changed.
    assert f"Order {first.pk}: order {first.pk} is completed already" in answer.content.decode()


def test_admin__order_actions_need_the_manager_permission(north: Outlet) -> None:
    order = set_aside(north)
    staff = User.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="view_order"),
        Permission.objects.get(codename="change_order"),
    )
    client = Client()
    client.force_login(staff)
    client.post(
        "/admin/queueing/order/", {"action": "hand_over", "_selected_action": [str(order.pk)]}
    )
    assert state(order)[0] == "attention"
