"""The screens over Django's test client: the order form, the order page, the kitchen, operations, the admin."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queueing.models import NotifierStatus, Order, OrderEvent, OrderState, Outlet
from queueing.selectors import outlets_last_hour
from queueing.services import (
    order_claim_next,
    order_complete,
    order_enqueue,
    order_mark_ready,
    outlet_authenticate,
    outlet_mark_down,
)
from queueing.services.outlets import outlet_heartbeat, outlet_take_down
from shop.forms import OrderForm
from shop.kitchen import TICKET_GONE
from shop.models import Membership, MenuItem
from shop.ops import spark_path, whole_percents
from shop.ordering import invalid
from shop.pages import KITCHEN_MAX_TICKETS

pytestmark = pytest.mark.django_db

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def cook(north: Outlet) -> Client:
    user = User.objects.create_user("cook-north", password="pw-north-1")
    Membership.objects.create(user=user, outlet=north)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def manager(db: None) -> Client:
    user = User.objects.create_user("manager", password="pw-manager-1")
    user.user_permissions.add(Permission.objects.get(codename="manager"))
    client = Client()
    client.force_login(user)
    return client


def enqueue(
    outlet: Outlet | None,
    *,
    kind: str = "takeaway",
    zone: str = "",
    note: str = "",
    name: str = "Ada",
    qty: int = 1,
) -> Order:
    ticket = order_enqueue(
        kind=kind,
        lines=[
            {
                "item": "margherita",
                "name": "Margherita",
                "qty": qty,
                "note": note,
                "prep_seconds": 420,
            }
        ],
        customer={"name": name, "address": "1 Analytical St"},
        prep_seconds=420,
        quick=False,
        zone=zone,
        outlet=outlet if kind == "takeaway" else None,
    )
    return Order.objects.select_related("outlet").get(pk=ticket.id)


def form_data(**overrides: str) -> dict[str, str]:
    data = {
        "kind": "takeaway",
        "outlet": "north",
        "name": "Ada",
        "phone": "",
        "address": "",
        "zone": "",
    }
    data.update(overrides)
    return data


def post_json(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


# --- The order form ---------------------------------------------------------------------


def test_order_form__lists_only_available_items_and_active_outlets(
    menu: None, north: Outlet, south: Outlet
) -> None:
    outlet_mark_down(outlet=south)
    html = Client().get("/order/").content.decode()
    assert "Margherita" in html and "Cola (can)" in html
    assert "Calzone" not in html  # not available today
    assert 'value="north"' in html
    assert 'value="south"' not in html  # down: takes no orders


def test_order_form__places_a_takeaway_order_and_lands_on_its_page(
    menu: None, north: Outlet
) -> None:
    response = Client().post(
        "/order/", form_data(qty_margherita="2", note_margherita="no basil", qty_cola="1")
    )
    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/o/{order.token}/"
    assert order.kind == "takeaway" and order.outlet == north
    assert [(ln["item"], ln["qty"], ln["note"]) for ln in order.lines] == [
        ("cola", 1, ""),
        ("margherita", 2, "no basil"),
    ]
    assert order.customer["name"] == "Ada"


def test_order_form__places_a_delivery_order(menu: None, north: Outlet) -> None:
    response = Client().post(
        "/order/",
        form_data(
            kind="delivery", outlet="", zone="N1", address="1 Analytical St", qty_pepperoni="1"
        ),
    )
    assert response.status_code == 302
    order = Order.objects.get()
    assert (order.kind, order.zone, order.outlet_id) == ("delivery", "N1", north.pk)


def test_order_form__the_same_form_submitted_twice_places_one_order(
    menu: None, north: Outlet
) -> None:
    data = form_data(qty_margherita="1", form_id="f0rm-id-123456")
    first = Client().post("/order/", data)
    second = Client().post("/order/", data)
    assert Order.objects.count() == 1
    assert first["Location"] == second["Location"]


def test_order_form__a_changed_resubmission_of_a_used_form_asks_again(
    menu: None, north: Outlet
) -> None:
    Client().post("/order/", form_data(qty_margherita="1", form_id="f0rm-id-123456"))
    response = Client().post("/order/", form_data(qty_margherita="3", form_id="f0rm-id-123456"))
    assert response.status_code == 409
    assert "This form already placed an order" in response.content.decode()
    assert 'value="f0rm-id-123456"' not in response.content.decode()  # a new id for the next try
    assert Order.objects.count() == 1


def errors_of(response: Any) -> dict[str, list[str]]:
    return {k: list(v) for k, v in response.context["form"].errors.items()}


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({}, "__all__", "Choose at least one item"),
        ({"qty_margherita": "1", "outlet": ""}, "outlet", "Choose where you will pick it up."),
        ({"qty_margherita": "1", "outlet": "atlantis"}, "outlet", "Select a valid choice"),
        ({"qty_margherita": "1", "name": " "}, "name", "Enter your name."),
        ({"qty_margherita": "99"}, "qty_margherita", "from 0 (none) to 50"),
        ({"qty_margherita": "-1"}, "qty_margherita", "from 0 (none) to 50"),
        ({"qty_margherita": "two"}, "qty_margherita", "from 0 (none) to 50"),
        ({"qty_margherita": "1", "note_margherita": "x" * 201}, "note_margherita", "at most 200"),
        ({"qty_margherita": "1", "phone": "1" * 41}, "phone", "at most 40"),
        (
            {"qty_margherita": "1", "kind": "delivery", "zone": "", "address": "1 St"},
            "zone",
            "Enter your delivery zone.",
        ),
        (
            {"qty_margherita": "1", "kind": "delivery", "zone": "N1"},
            "address",
            "Enter your address.",
        ),
        ({"qty_margherita": "1", "kind": "teleport"}, "kind", "Select a valid choice"),
    ],
)
def test_order_form__refusals_are_shown_next_to_their_field(
    menu: None, north: Outlet, overrides: dict[str, str], field: str, words: str
) -> None:
    response = Client().post("/order/", form_data(**overrides))
    assert response.status_code in (400, 422)
    errors = errors_of(response)
    assert any(words in e for e in errors.get(field, [])), errors
    assert words in response.content.decode()
    assert not Order.objects.exists()


def test_order_form__shows_every_wrong_field_at_once(menu: None, north: Outlet) -> None:
    response = Client().post(
        "/order/",
        form_data(kind="delivery", outlet="", zone="", address="", name="", qty_cola="51"),
    )
    assert response.status_code == 400
    errors = errors_of(response)
    assert set(errors) == {"zone", "address", "name", "qty_cola"}, errors
    html = response.content.decode()
    for message in ("Enter your delivery zone.", "Enter your address.", "Enter your name."):
        assert message in html
    assert "Cola (can): Enter a number from 0 (none) to 50." in html
    assert "Please check the highlighted fields below." in html


def test_order_form__no_item_and_a_missing_name_are_both_said(menu: None, north: Outlet) -> None:
    errors = errors_of(Client().post("/order/", form_data(name="")))
    assert set(errors) == {"__all__", "name"}, errors


def test_order_form__a_quantity_error_sits_on_its_own_row_not_in_the_column(
    menu: None, north: Outlet
) -> None:
    html = Client().post("/order/", form_data(qty_margherita="99")).content.decode()
    qty_cell = re.search(r'<td class="qty">(.*?)</td>', html, re.S)
    assert qty_cell is not None and "field-error" not in qty_cell.group(1)
    error_row = re.search(
        r'<tr class="menu-error has-error"><td colspan="4">(.*?)</td></tr>', html, re.S
    )
    assert error_row is not None
    assert "Margherita: Enter a number from 0 (none) to 50." in error_row.group(1)
    assert 'aria-invalid="true"' in html  # the script focuses the first wrong field


def test_order_form__quantities_start_at_0_which_means_none(menu: None, north: Outlet) -> None:
    html = Client().get("/order/").content.decode()
    assert re.search(r'name="qty_margherita" value="0" min="0" max="50"', html)
    assert "leave the others at 0" in html


def test_order_form__offers_only_the_configured_zones_never_other_customers(
    menu: None, north: Outlet, settings: Any
) -> None:
    settings.HEARTH_DELIVERY_ZONES = ["N10", "N2"]
    enqueue(None, kind="delivery", zone="E1")
    enqueue(None, kind="delivery", zone="N2")
    enqueue(north)  # takeaway: no zone
    html = Client().get("/order/").content.decode()
    assert 'list="known-zones"' in html
    datalist = re.search(r'<datalist id="known-zones">(.*?)</datalist>', html, re.S)
    assert datalist is not None
    assert re.findall(r'<option value="([^"]+)">', datalist.group(1)) == ["N2", "N10"]


@pytest.mark.parametrize(
    ("field", "message", "shown_at", "words"),
    [
        ("customer.address", "is required", "address", "The address is required."),
        (
            "customer.phone",
            "must be at most 40 characters",
            "phone",
            "The phone number must be at most 40 characters.",
        ),
        (
            "outlet",
            "outlet north is not taking orders right now",
            "outlet",
            "Outlet north is not taking orders right now.",
        ),
        (
            "lines[0].item",
            "Margherita is not available today",
            "qty_margherita",
            "Margherita is not available today.",
        ),
        ("rush", "must be true or false", "__all__", "rush: Must be true or false."),
    ],
)
def test_order_form__the_parsers_refusals_read_as_sentences(
    menu: None, north: Outlet, field: str, message: str, shown_at: str, words: str
) -> None:
    form = OrderForm(
        form_data(qty_margherita="1"), menu=MenuItem.objects.filter(available=True), outlets=[north]
    )
    assert form.is_valid(), form.errors
    form.add_order_error(invalid(field, message))
    assert form.errors == {shown_at: [words]}


def test_order_form__an_outlet_that_stopped_taking_orders_is_refused_at_its_field(
    menu: None, north: Outlet
) -> None:
    page = Client().get("/order/")  # rendered while north was active
    assert 'value="north"' in page.content.decode()
    Outlet.objects.filter(pk=north.pk).update(state="draining")
    response = Client().post("/order/", form_data(qty_margherita="1"))
    assert response.status_code in (400, 422)
    assert "outlet" in errors_of(response)
    assert not Order.objects.exists()


def test_order_form__errors_keep_what_the_customer_typed_escaped(menu: None, north: Outlet) -> None:
    response = Client().post(
        "/order/", form_data(name=EVIL, qty_margherita="99", note_margherita=EVIL)
    )
    html = response.content.decode()
    assert EVIL not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


# --- The order page -----------------------------------------------------------------------


def step_now(html: str) -> str:
    match = re.search(
        r'class="step step--now"[^>]*><span class="dot"></span><span class="label">([^<]+)<', html
    )
    return match.group(1) if match else ""


def test_order_page__shows_number_outlet_stepper_and_estimate(menu: None, north: Outlet) -> None:
    order = enqueue(north)
    response = Client().get(f"/o/{order.token}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f"Order <span>{order.pk}</span>" in html
    assert "Hearth North" in html
    assert step_now(html) == "Received"
    assert "Ready at about" in html and 'id="order-estimate"' in html
    assert f'data-socket-path="/ws/orders/{order.token}/"' in html


def step_labels(html: str) -> list[str]:
    return re.findall(r'<span class="label">([^<]+)</span>', html)


@pytest.mark.parametrize(
    ("kind", "ready_step"), [("takeaway", "Ready for pickup"), ("delivery", "Out for delivery")]
)
def test_order_page__steps_through_the_kitchen_to_done(
    menu: None, north: Outlet, kind: str, ready_step: str
) -> None:
    delivery = kind == "delivery"
    order = enqueue(None if delivery else north, kind=kind, zone="N1" if delivery else "")
    url = f"/o/{order.token}/part/"
    assert step_labels(Client().get(url).content.decode()) == [
        "Received", "In the kitchen", ready_step, "Done",
    ]  # fmt: skip
    [ticket] = order_claim_next(outlet=north, station="s1")
    assert step_now(Client().get(f"/o/{order.token}/").content.decode()) == "In the kitchen"
    order_mark_ready(token=order.token, fence=ticket.fence)
    html = Client().get(url).content.decode()
    assert step_now(html) == ready_step
    assert html.count("step--done") == 2  # one step per state: nothing ticks twice
    order_complete(token=order.token, fence=ticket.fence)
    html = Client().get(url).content.decode()
    assert 'class="step step--now"' not in html
    assert html.count("step--done") == 4
    assert "Done" in html


def test_order_page__status_outlet_and_estimate_are_cards_of_one_row(
    menu: None, north: Outlet
) -> None:
    html = Client().get(f"/o/{enqueue(north).token}/part/").content.decode()
    facts = re.search(r'<dl class="facts">(.*?)</dl>', html, re.S)
    assert facts is not None
    assert re.findall(r"<dt>([^<]+)</dt>", facts.group(1)) == [
        "Status",
        "Made by",
        "Ready at about",
    ]
    assert "fact--wide" not in html


def test_order_page__without_javascript_it_refreshes_itself(menu: None, north: Outlet) -> None:
    html = Client().get(f"/o/{enqueue(north).token}/").content.decode()
    assert re.search(r'<noscript><meta http-equiv="refresh" content="\d+"></noscript>', html)


def test_order_page__customer_text_is_escaped(menu: None, north: Outlet) -> None:
    order = enqueue(north, note=EVIL, name=EVIL)
    html = Client().get(f"/o/{order.token}/").content.decode()
    assert EVIL not in html
    assert "&lt;script&gt;" in html


def test_order_page__says_where_it_moved(menu: None, north: Outlet, south: Outlet) -> None:
    zone = next(
        z
        for z in (f"Z{i}" for i in range(100))
        if enqueue(None, kind="delivery", zone=z).outlet == north
    )
    order = Order.objects.get(zone=zone)
    outlet_mark_down(outlet=north)
    html = Client().get(f"/o/{order.token}/part/").content.decode()
    assert "Your order moved to Hearth South" in html
    assert "Hearth North could not make it" in html
    assert "Ready at about" in html  # the new estimate


def test_order_page__says_it_was_cancelled_and_why(
    menu: None, north: Outlet, south: Outlet
) -> None:
    order = enqueue(north)
    # The notifier takes a silent outlet down: its takeaway orders are cancelled.
    outlet_take_down(
        outlet_id=north.pk,
        reason="silent",
        silent_before=timezone.now() + timedelta(hours=1),
        timeout=0,
    )
    html = Client().get(f"/o/{order.token}/").content.decode()
    assert "Your order was cancelled" in html
    assert "Hearth North closed unexpectedly, so it cannot make your order." in html
    assert "Nothing will be made and there is nothing to collect." in html
    assert '<a class="btn btn--primary" href="/order/">Please place a new order</a>' in html
    assert "Made by" not in html and 'class="stepper' not in html  # nothing is on its way
    assert "Cancelled: outlet unavailable" in html  # the timeline keeps the reason


def test_order_page__a_planned_mark_down_is_not_called_unexpected(
    menu: None, north: Outlet, south: Outlet
) -> None:
    order = enqueue(north)
    outlet_mark_down(outlet=north)  # a manager's planned outage
    html = Client().get(f"/o/{order.token}/").content.decode()
    assert "Your order was cancelled" in html
    assert "Hearth North has closed for now, so it cannot make your order." in html
    assert "unexpectedly" not in html
    assert "Cancelled: outlet closed by a manager" in html


def test_order_page__unknown_token_is_404(db: None) -> None:
    assert Client().get("/o/nope/").status_code == 404
    assert Client().get("/o/nope/part/").status_code == 404


# --- The kitchen screen -------------------------------------------------------------------


def ticket_tokens(html: str) -> list[str]:
    return re.findall(r'class="ticket [^"]*" data-token="([^"]+)"', html)


def test_kitchen__tickets_in_claim_order_with_items_notes_and_all_day(
    cook: Client, menu: None, north: Outlet
) -> None:
    first = enqueue(north, qty=2, note="well done")
    second = enqueue(north, qty=1)
    order_claim_next(outlet=north, station="s1")  # the first is now being made
    html = cook.get("/kitchen/north/").content.decode()
    assert ticket_tokens(html) == [first.token, second.token]
    assert "well done" in html
    assert "COOKING · s1" in html and "WAITING" in html
    assert re.search(r'<span class="allday-item"><b>3</b> Margherita</span>', html)
    assert 'data-socket-path="/ws/kitchen/north/"' in html
    assert 'data-amber="300" data-red="600"' in html


def test_kitchen__shows_the_first_tickets_and_counts_the_rest(
    cook: Client, menu: None, north: Outlet
) -> None:
    orders = [enqueue(north, qty=1) for _ in range(KITCHEN_MAX_TICKETS + 3)]
    html = cook.get("/kitchen/north/tickets/").content.decode()
    assert ticket_tokens(html) == [o.token for o in orders[:KITCHEN_MAX_TICKETS]]
    assert "+ 3 more tickets waiting behind these" in html
    assert f"<b>{KITCHEN_MAX_TICKETS + 3}</b> Margherita" in html  # all day counts them all


def test_kitchen__notes_and_names_are_escaped(cook: Client, menu: None, north: Outlet) -> None:
    enqueue(north, note=EVIL, name=EVIL)
    html = cook.get("/kitchen/north/tickets/").content.decode()
    assert EVIL not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_kitchen__a_rerouted_ticket_says_where_it_came_from(
    menu: None, north: Outlet, south: Outlet
) -> None:
    zone = next(
        z
        for z in (f"Z{i}" for i in range(100))
        if enqueue(None, kind="delivery", zone=z).outlet == north
    )
    outlet_mark_down(outlet=north)
    user = User.objects.create_user("cook-south", password="x-pw-12345")
    Membership.objects.create(user=user, outlet=south)
    client = Client()
    client.force_login(user)
    html = client.get("/kitchen/south/").content.decode()
    assert Order.objects.filter(zone=zone, outlet=south).count() == 1
    assert "moved here from Hearth North" in html


def test_kitchen__old_tickets_turn_amber_then_red(cook: Client, menu: None, north: Outlet) -> None:
    order = enqueue(north)
    Outlet.objects.filter(pk=north.pk).update(amber_after=60, red_after=120)
    Order.objects.filter(pk=order.pk).update(created_at="2000-01-01T00:00:00Z")
    html = cook.get("/kitchen/north/tickets/").content.decode()
    assert "age--red" in html


def test_kitchen_action__start_next_ready_bump_recall(
    cook: Client, menu: None, north: Outlet
) -> None:
    order = enqueue(north)
    started = post_json(cook, "/kitchen/north/next", {"tab": "t1"}).json()
    assert started["ok"] and started["ticket"]["token"] == order.token
    fence = started["ticket"]["fence"]
    assert (
        post_json(cook, "/kitchen/north/ready", {"token": order.token, "fence": fence}).json()[
            "ticket"
        ]["state"]
        == "ready"
    )
    assert (
        post_json(cook, "/kitchen/north/complete", {"token": order.token, "fence": fence}).json()[
            "ticket"
        ]["state"]
        == "completed"
    )
    html = cook.get("/kitchen/north/tickets/").content.decode()
    assert f'data-last-bumped-token="{order.token}"' in html
    assert f"Recall #{order.pk}" in html
    recalled = post_json(cook, "/kitchen/north/recall", {"token": order.token, "fence": fence})
    assert recalled.status_code == 200
    order.refresh_from_db()
    assert order.state == OrderState.READY
    assert list(OrderEvent.objects.filter(order=order).values_list("type", flat=True)) == [
        "placed", "claimed", "ready", "completed", "recalled",
    ]  # fmt: skip


def test_kitchen__recall_offers_only_what_this_station_bumped(
    cook: Client, menu: None, north: Outlet
) -> None:
    first, second = enqueue(north), enqueue(north)
    for tab, order in (("t1", first), ("t2", second)):  # each station makes and bumps one
        started = post_json(cook, "/kitchen/north/next", {"tab": tab}).json()["ticket"]
        assert started["token"] == order.token
        claim = {"token": order.token, "fence": started["fence"], "tab": tab}
        assert post_json(cook, "/kitchen/north/complete", claim).json()["ok"]
    t1 = cook.get("/kitchen/north/tickets/?tab=t1").content.decode()
    assert f"Recall #{first.pk}" in t1 and f"Recall #{second.pk}" not in t1
    t2 = cook.get("/kitchen/north/tickets/?tab=t2").content.decode()
    assert f"Recall #{second.pk}" in t2
    t3 = cook.get("/kitchen/north/tickets/?tab=t3").content.decode()
    assert "Recall #" not in t3  # a station that bumped nothing recalls nothing
    event = OrderEvent.objects.get(order=first, type="completed")
    assert event.detail == {"by": "cook-north·t1"}


def test_kitchen_action__next_with_nothing_waiting_says_so(cook: Client, north: Outlet) -> None:
    answer = post_json(cook, "/kitchen/north/next", {})
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "message": "Nothing is waiting.", "ticket": None}


def test_kitchen_action__a_ticket_another_station_holds_says_who(
    cook: Client, menu: None, north: Outlet
) -> None:
    order = enqueue(north)
    order_claim_next(outlet=north, station="bob·x1")
    answer = post_json(cook, "/kitchen/north/start", {"token": order.token})
    assert answer.status_code == 409
    assert answer.json()["message"] == f"Order {order.pk} is taken by bob·x1."


def test_kitchen_action__starting_your_own_ticket_again_says_it_is_yours(
    cook: Client, menu: None, north: Outlet
) -> None:
    order = enqueue(north)
    first = post_json(cook, "/kitchen/north/start", {"token": order.token, "tab": "t1"})
    assert first.json()["message"] == f"Order {order.pk} started."
    again = post_json(cook, "/kitchen/north/start", {"token": order.token, "tab": "t1"})
    assert again.status_code == 200
    assert again.json()["message"] == (
        f"Order {order.pk} is already yours: it was started at this station."
    )
    assert again.json()["ticket"]["fence"] == first.json()["ticket"]["fence"]
    other_tab = post_json(cook, "/kitchen/north/start", {"token": order.token, "tab": "t2"})
    assert other_tab.status_code == 409
    assert other_tab.json()["message"] == (
        f"Order {order.pk} is already yours: you started it at another screen (cook-north·t1)."
    )
    html = cook.get("/kitchen/north/tickets/").content.decode()
    assert 'data-claimed-by="cook-north·t1"' in html  # the screen says so without asking


def test_kitchen__a_ticket_head_keeps_the_timer_apart_from_the_tags_that_wrap(
    cook: Client, menu: None, north: Outlet
) -> None:
    enqueue(north)
    html = cook.get("/kitchen/north/tickets/").content.decode()
    head = re.search(r'<div class="ticket-head">(.*?)</div>', html, re.S)
    assert head is not None
    assert re.search(
        r'^\s*<span class="ticket-id">.*</span>\s*<span class="ticket-age" data-age>[^<]+</span>\s*$',
        head.group(1),
        re.S,
    )


def test_kitchen_action__a_ticket_moved_to_another_outlet_is_404_saying_nothing_of_it(
    cook: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    zone = next(
        z
        for z in (f"Z{i}" for i in range(100))
        if enqueue(None, kind="delivery", zone=z).outlet == north
    )
    order = Order.objects.get(zone=zone)
    [ticket] = order_claim_next(outlet=north, station="s1")
    outlet_mark_down(outlet=north)  # moved away: the fence grows
    Outlet.objects.filter(pk=north.pk).update(state="active")
    answer = post_json(
        cook, "/kitchen/north/complete", {"token": order.token, "fence": ticket.fence}
    )
    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "message": TICKET_GONE}
    order.refresh_from_db()
    assert (order.state, order.outlet_id) == ("queued", south.pk)


@pytest.mark.parametrize(
    ("url", "body", "status"),
    [
        ("/kitchen/north/start", "not json", 400),
        ("/kitchen/north/start", "[1]", 400),
        ("/kitchen/north/start", "{}", 400),
        ("/kitchen/north/ready", '{"token": "abc"}', 400),
        ("/kitchen/north/ready", '{"token": "abc", "fence": -1}', 400),
        ("/kitchen/north/ready", '{"token": "abc", "fence": true}', 400),
        ("/kitchen/north/ready", '{"token": "abc", "fence": 1}', 404),
        ("/kitchen/north/recall", '{"token": "abc", "fence": 99999999999999999999}', 400),
    ],
)
def test_kitchen_action__bad_input_is_a_4xx_with_a_message(
    cook: Client, north: Outlet, url: str, body: str, status: int
) -> None:
    answer = cook.post(url, body, content_type="application/json")
    assert answer.status_code == status, answer.content
    assert answer.json()["message"]


# --- Operations ------------------------------------------------------------------------------


def test_ops__shows_health_ring_attention_and_the_notifier_alert(
    manager: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    enqueue(north)
    enqueue(north)
    order_claim_next(outlet=north, station="s1")
    stuck = enqueue(south)
    Order.objects.filter(pk=stuck.pk).update(state="attention", attempts=3)
    NotifierStatus.objects.update_or_create(
        pk=1, defaults={"alert": "2 of 2 outlets fell silent at once"}
    )
    html = manager.get("/ops/").content.decode()
    row = re.search(r'<tr class="outlet-row[^"]*" data-outlet="north">(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num[^"]*"[^>]*>([^<]*)</td>', row.group(1))
    assert cells[1:4] == ["1", "1", "0"]  # queued, in progress, ready
    assert "The ring" in html and "If it died" in html
    assert "south takes 100%" in html
    assert f"Order {stuck.pk}" in html
    assert "2 of 2 outlets fell silent at once" in html


def ring_percents(html: str) -> list[int]:
    return [int(p) for p in re.findall(r'<span class="ring-share">(\d+)%</span>', html)]


def test_ops__ring_shares_and_heirs_are_whole_percents_that_add_up_to_100(
    manager: Client, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    for slug, weight in (("centre", 2), ("north", 1), ("soho", 2), ("south", 1)):
        make_outlet(slug, weight=weight)
    html = manager.get("/ops/overview/").content.decode()
    assert len(ring_percents(html)) == 4
    assert sum(ring_percents(html)) == 100
    for line in re.findall(r"If it died:(.*?)</p>", html, re.S):
        assert sum(int(p) for p in re.findall(r"takes (\d+)%", line)) == 100, line


def test_ops__a_big_chain_names_three_heirs_and_the_rest_together(
    manager: Client, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    for i in range(12):
        make_outlet(f"o{i:02d}")
    html = manager.get("/ops/overview/").content.decode()
    for line in re.findall(r"If it died:(.*?)</p>", html, re.S):
        assert line.count('class="heir"') <= 4
        assert sum(int(p) for p in re.findall(r"takes (\d+)%", line)) == 100, line
    assert re.search(r"the rest \(\d+ outlets\) takes \d+%", html)


def outlet_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="outlet-row[^"]*" data-outlet="([^"]+)">', html)


@pytest.fixture
def chain(make_outlet: Callable[..., tuple[Outlet, str]], settings: Any) -> list[Outlet]:
    """Five heartbeating outlets, a table page of two; o3 is down, so it needs a look."""
    settings.HEARTH_OPS_PAGE_SIZE = 2
    outlets = [make_outlet(f"o{i}", name=f"Outlet {i}")[0] for i in range(1, 6)]
    for outlet in outlets:
        outlet_heartbeat(outlet=outlet, source="agent")
    outlet_mark_down(outlet=outlets[2])
    return outlets


def test_ops__a_big_chain_is_paged_those_that_need_a_look_first(
    manager: Client, chain: list[Outlet]
) -> None:
    html = manager.get("/ops/").content.decode()
    assert outlet_rows(html) == ["o3", "o1"]  # down first, then by slug
    assert "Outlets 1–2 of 5" in html
    assert 'href="/ops/?page=2" rel="next"' in html
    assert "4 active" in html and "1 down" in html and "<b>1</b> needs a look" in html
    # The ring lists the page's live outlets only, each with its share of the whole ring.
    assert len(ring_percents(html)) == 1
    assert 0 < ring_percents(html)[0] < 100
    page2 = manager.get("/ops/overview/?page=2").content.decode()
    assert 'href="/ops/" rel="prev"' in page2 and 'href="/ops/?page=3" rel="next"' in page2
    page3 = manager.get("/ops/overview/?page=3").content.decode()
    assert outlet_rows(page3) == ["o5"]
    assert 'href="/ops/?page=2" rel="prev"' in page3 and 'rel="next"' not in page3
    # A page that is not a number is the first; one past the end, the last.
    assert outlet_rows(manager.get("/ops/overview/?page=x").content.decode()) == ["o3", "o1"]
    assert outlet_rows(manager.get("/ops/overview/?page=99").content.decode()) == ["o5"]


def test_ops__search_and_state_filter_the_table_and_the_live_part_keeps_them(
    manager: Client, chain: list[Outlet]
) -> None:
    html = manager.get("/ops/?q=outlet+4").content.decode()
    assert outlet_rows(html) == ["o4"]
    assert 'data-part-url="/ops/overview/?q=outlet+4"' in html  # the polls keep the search
    assert 'value="outlet 4"' in html
    assert outlet_rows(manager.get("/ops/overview/?q=O5").content.decode()) == ["o5"]
    down = manager.get("/ops/overview/?state=down").content.decode()
    assert outlet_rows(down) == ["o3"]
    # The ring card speaks of the page, not of the chain, when the page has no live outlet.
    assert "None of the outlets on this page is active or draining" in down
    assert "No outlet is taking orders" not in down
    assert outlet_rows(manager.get("/ops/overview/?state=look").content.decode()) == ["o3"]
    paged = manager.get("/ops/overview/?state=active&page=2").content.decode()
    assert outlet_rows(paged) == ["o4", "o5"]
    assert 'href="/ops/?state=active" rel="prev"' in paged
    # Unknown states show everything; a search for nothing says so; nothing typed is unescaped.
    assert len(outlet_rows(manager.get("/ops/overview/?state=bogus").content.decode())) == 2
    nothing = manager.get("/ops/?q=%3Cscript%3Ex" + "y" * 5000)
    assert nothing.status_code == 200
    body = nothing.content.decode()
    assert "No outlet matches" in body and "<script>x" not in body
    assert 'value="&lt;script&gt;x' + "y" * 41 + '"' in body  # cut to 50 characters


@pytest.mark.parametrize(
    ("parts", "percents"),
    [
        ([1, 1, 1], [34, 33, 33]),
        ([0.3456, 0.1649, 0.3301, 0.1594], [35, 16, 33, 16]),
        ([0.2, 0.0], [100, 0]),
        ([0.0, 0.0], [0, 0]),
        ([], []),
    ],
)
def test_whole_percents__add_up_to_100_by_largest_remainder(
    parts: list[float], percents: list[int]
) -> None:
    assert whole_percents(parts) == percents


def test_ops__retired_outlets_are_folded_away_below_the_table(
    manager: Client, north: Outlet, south: Outlet
) -> None:
    manager.post("/ops/outlets/south/drain/")
    manager.post("/ops/outlets/south/retire/")
    html = manager.get("/ops/overview/").content.decode()
    table = re.search(r'<table class="health">(.*?)</table>', html, re.S)
    assert table is not None
    assert 'data-outlet="north"' in table.group(1)
    assert 'data-outlet="south"' not in table.group(1)
    retired = re.search(
        r'<details class="retired" id="retired-outlets">(.*?)</details>', html, re.S
    )
    assert retired is not None
    assert "Retired outlets (1)" in retired.group(1)
    assert "Hearth South" in retired.group(1)


def test_ops__a_rows_actions_are_short_buttons_with_the_full_label_as_title(
    manager: Client, north: Outlet
) -> None:
    html = manager.get("/ops/overview/").content.decode()
    buttons = re.findall(r'title="([^"]+)…">([^<]+)</a>', html)
    assert buttons == [
        ("Drain Hearth North", "Drain"),
        ("Drain and move Hearth North", "Drain + move"),
        ("Mark down Hearth North", "Mark down"),
    ]


def test_ops__overview_is_a_fixed_number_of_queries_whatever_the_outlets(
    manager: Client, make_outlet: Callable[..., tuple[Outlet, str]], menu: None
) -> None:
    make_outlet("a1")
    make_outlet("a2")
    manager.get("/ops/overview/")  # warm the session and the ring cache alike
    with CaptureQueriesContext(connection) as few:
        manager.get("/ops/overview/")
    for i in range(6):
        outlet = make_outlet(f"b{i}")[0]
        enqueue(outlet)
        enqueue(None, kind="delivery", zone=f"Z{i}")
    with CaptureQueriesContext(connection) as many:
        assert manager.get("/ops/overview/").status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


def test_ops__the_last_hour_per_outlet_in_5_minute_buckets(
    manager: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    zone = next(
        z
        for z in (f"Z{i}" for i in range(100))
        if enqueue(None, kind="delivery", zone=z).outlet == north
    )
    enqueue(north)
    enqueue(north)
    old = enqueue(north)
    # Placed 40 minutes ago, claimed now: a wait of about 2,400 s in the newest bucket.
    then = timezone.now() - timedelta(minutes=40)
    Order.objects.filter(pk=old.pk).update(created_at=then, sort_key=then)  # claimed first
    OrderEvent.objects.filter(order=old, type="placed").update(at=then)
    order_claim_next(outlet=north, station="s1")
    OrderEvent.objects.filter(type="placed").exclude(order=old).update(at=timezone.now())
    manager.post("/ops/outlets/north/down/")  # its delivery order moves to south
    hours = outlets_last_hour()
    hour = hours[north.pk]
    assert hour.placed[-1] == 3 and sum(hour.placed) == 4  # the moved one was placed here too
    assert hour.placed[-9] + hour.placed[-8] == 1  # 40 minutes ago: 8 or 9 buckets back
    assert hour.wait[-1] is not None and 2300 < hour.wait[-1] < 2500
    assert hour.reroutes[-1] == 1 and sum(hours[south.pk].reroutes) == 0  # counted where it left
    assert zone
    html = manager.get("/ops/overview/").content.decode()
    row = re.search(r'<tr class="outlet-row[^"]*" data-outlet="north">(.*?)</tr>', html, re.S)
    assert row is not None
    assert row.group(1).count("<svg") == 3
    assert 'aria-label="placed, last hour per 5 minutes: ' in row.group(1)
    assert "moved away <b>1</b>" in row.group(1)
    assert "style=" not in html and "<script" not in html  # the CSP allows neither


def test_spark_path__scales_to_the_box_and_breaks_at_gaps() -> None:
    assert spark_path([0, 2, 1]) == "M0.0 19.0L48.0 1.0L96.0 10.0"
    assert spark_path([None, 3, None, 3]) == "M32.0 1.0M96.0 1.0"
    assert spark_path([0, 0]) == "M0.0 19.0L96.0 19.0"  # nothing: flat on the floor


def test_ops_action__asks_for_confirmation_first(manager: Client, north: Outlet) -> None:
    page = manager.get("/ops/outlets/north/down/")
    assert page.status_code == 200
    assert "Mark down Hearth North?" in page.content.decode()
    north.refresh_from_db()
    assert north.state == "active"  # a GET changes nothing


@pytest.mark.parametrize(
    ("action", "state", "detail"),
    [("drain", "draining", "drain"), ("drain-move", "draining", "drain"), ("down", "down", "down")],
)
def test_ops_action__acts_and_records_an_event(
    manager: Client, north: Outlet, south: Outlet, action: str, state: str, detail: str
) -> None:
    response = manager.post(f"/ops/outlets/north/{action}/", follow=True)
    assert response.status_code == 200
    north.refresh_from_db()
    assert north.state == state
    event = OrderEvent.objects.filter(type="outlet", outlet=north).latest("id")
    assert (event.state, event.detail["action"]) == (state, detail)
    assert "Hearth North is" in response.content.decode()


def test_ops_action__drain_and_move_moves_waiting_delivery_orders(
    manager: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    zone = next(
        z
        for z in (f"Z{i}" for i in range(100))
        if enqueue(None, kind="delivery", zone=z).outlet == north
    )
    answer = manager.post("/ops/outlets/north/drain-move/", follow=True).content.decode()
    assert "1 waiting delivery order moved to other outlets." in answer  # one: no plural
    order = Order.objects.get(zone=zone)
    assert order.outlet == south
    html = manager.get("/ops/").content.decode()
    assert "Hearth North is draining, its waiting delivery orders moved" in html
    assert f"Order {order.pk} moved from Hearth North to Hearth South (north is draining)" in html


def test_ops_action__retire_with_open_orders_is_refused_with_a_message(
    manager: Client, menu: None, north: Outlet
) -> None:
    enqueue(north)
    manager.post("/ops/outlets/north/drain/")
    response = manager.post("/ops/outlets/north/retire/", follow=True)
    assert response.status_code == 200
    assert "Retire Hearth North: it still has open orders. Let them finish" in (
        response.content.decode()
    )
    north.refresh_from_db()
    assert north.state == "draining"


def test_ops_action__retire_is_offered_only_when_it_is_allowed(
    manager: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    enqueue(north)
    manager.post("/ops/outlets/north/drain/")
    manager.post("/ops/outlets/south/drain/")
    html = manager.get("/ops/overview/").content.decode()
    assert "/ops/outlets/north/retire/" not in html  # draining, but an order is open
    assert "/ops/outlets/south/retire/" in html  # draining and empty
    for slug in ("north",):  # an open order: the confirmation says why, and has no Yes
        page = manager.get(f"/ops/outlets/{slug}/retire/")
        assert page.status_code == 409
        text = page.content.decode()
        assert "Not possible now" in text and "1 open order." in text
        assert "Yes, retire" not in text
    manager.post("/ops/outlets/south/activate/")
    page = manager.get("/ops/outlets/south/retire/")  # active: not from there either
    assert page.status_code == 409 and "Yes, retire" not in page.content.decode()
    assert "/ops/outlets/south/retire/" not in manager.get("/ops/overview/").content.decode()
    page = manager.get("/ops/outlets/south/drain/")
    assert page.status_code == 200 and "Yes, drain Hearth South" in page.content.decode()


def test_ops_action__mark_down_counts_in_words_with_plurals(
    manager: Client, menu: None, north: Outlet, south: Outlet
) -> None:
    enqueue(north)
    answer = manager.post("/ops/outlets/north/down/", follow=True).content.decode()
    assert "Hearth North is down: 0 delivery orders moved, 1 takeaway order cancelled" in answer


def test_ops_action__reactivate_and_retire(manager: Client, north: Outlet) -> None:
    manager.post("/ops/outlets/north/down/")
    manager.post("/ops/outlets/north/activate/")
    north.refresh_from_db()
    assert north.state == "active"
    manager.post("/ops/outlets/north/drain/")
    manager.post("/ops/outlets/north/retire/")
    north.refresh_from_db()
    assert north.state == "retired"
    actions = list(
        OrderEvent.objects.filter(type="outlet", outlet=north)
        .order_by("id")
        .values_list("detail__action", flat=True)
    )
    # "added", then the fixture's manager vouching for the new outlet ("activate").
    assert actions == ["added", "activate", "down", "activate", "drain", "retire"]


def test_ops_action__unknown_action_or_outlet_is_404(manager: Client, north: Outlet) -> None:
    assert manager.get("/ops/outlets/north/explode/").status_code == 404
    assert manager.post("/ops/outlets/atlantis/drain/").status_code == 404


def test_ops_add_outlet__shows_its_token_once_after_a_redirect(manager: Client) -> None:
    posted = manager.post(
        "/ops/outlets/add/", {"slug": "soho", "name": "Hearth Soho", "weight": "2"}
    )
    assert posted.status_code == 302  # POST/redirect/GET: a reload re-submits nothing
    assert posted["Location"] == "/ops/outlets/add/?added=soho"
    response = manager.get(posted["Location"])
    assert response.status_code == 200
    token = re.search(
        r'id="agent-token" class="token" type="text" readonly value="([^"]+)"',
        response.content.decode(),
    )
    assert token is not None
    assert response["Cache-Control"] == "no-store"
    outlet = Outlet.objects.get(slug="soho")
    assert (outlet.name, outlet.weight) == ("Hearth Soho", 2)
    assert outlet_authenticate(slug="soho", token=token.group(1)) == outlet
    assert OrderEvent.objects.filter(type="outlet", outlet=outlet, detail__action="added").exists()

    reloaded = manager.get(posted["Location"]).content.decode()
    assert token.group(1) not in reloaded
    assert "was shown once, when the outlet was added" in reloaded
    assert token.group(1) not in manager.get("/ops/").content.decode()
    assert "hearth_new_outlet_token" not in manager.session
    assert Outlet.objects.count() == 1


def test_ops_add_outlet__an_unknown_added_outlet_is_404(manager: Client) -> None:
    assert manager.get("/ops/outlets/add/?added=atlantis").status_code == 404


def test_ops_add_outlet__a_taken_slug_is_refused_at_its_field(
    manager: Client, north: Outlet
) -> None:
    response = manager.post("/ops/outlets/add/", {"slug": "north", "weight": "1"})
    assert response.status_code == 400
    assert "There is already an outlet north." in response.content.decode()


# --- The Django admin ----------------------------------------------------------------------------


@pytest.fixture
def admin_client_(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-12"))
    return client


def test_admin__outlet_pages_never_show_the_token_hash(
    admin_client_: Client, north: Outlet
) -> None:
    for url in ("/admin/queueing/outlet/", f"/admin/queueing/outlet/{north.pk}/change/"):
        html = admin_client_.get(url).content.decode()
        assert north.token_hash not in html
        assert "token_hash" not in html


def test_admin__rotating_a_token_shows_the_new_one_once(
    admin_client_: Client, north: Outlet
) -> None:
    old_hash = north.token_hash
    response = admin_client_.post(
        "/admin/queueing/outlet/", {"action": "rotate_token", "_selected_action": [north.pk]}
    )
    match = re.search(r'<code class="agent-token">([^<]+)</code>', response.content.decode())
    assert match is not None
    north.refresh_from_db()
    assert north.token_hash != old_hash
    assert outlet_authenticate(slug="north", token=match.group(1)) == north


def test_admin__adding_an_outlet_goes_through_the_service(admin_client_: Client) -> None:
    response = admin_client_.post(
        "/admin/queueing/outlet/add/",
        {
            "slug": "soho", "name": "Soho", "weight": "1", "amber_after": "100", "red_after": "200",
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    assert response.status_code == 200, response.content
    outlet = Outlet.objects.get(slug="soho")
    assert (outlet.amber_after, outlet.red_after) == (100, 200)
    token = re.search(r'<code class="agent-token">([^<]+)</code>', response.content.decode())
    assert token is not None and outlet_authenticate(slug="soho", token=token.group(1)) == outlet
    assert OrderEvent.objects.filter(type="outlet", outlet=outlet).exists()


def test_admin__editing_an_outlet_never_writes_back_its_state(
    admin_client_: Client, north: Outlet
) -> None:
    page = admin_client_.get(f"/admin/queueing/outlet/{north.pk}/change/")
    assert page.status_code == 200
    Outlet.objects.filter(pk=north.pk).update(state="down")  # the notifier, meanwhile
    admin_client_.post(
        f"/admin/queueing/outlet/{north.pk}/change/",
        {
            "name": "North renamed", "weight": "3", "amber_after": "300", "red_after": "600",
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    north.refresh_from_db()
    assert (north.name, north.weight, north.state) == ("North renamed", 3, "down")


def test_admin__orders_are_read_mostly_with_events_inline(
    admin_client_: Client, menu: None, north: Outlet
) -> None:
    order = enqueue(north)
    assert admin_client_.get("/admin/queueing/order/add/").status_code == 403
    html = admin_client_.get(f"/admin/queueing/order/{order.pk}/change/").content.decode()
    assert "placed" in html  # the event inline
    assert 'name="fence"' not in html and 'name="outlet"' not in html  # queue columns are read-only
    assert "1× Margherita" in html


def test_admin__staff_of_an_outlet_are_edited_on_the_outlet(
    admin_client_: Client, north: Outlet
) -> None:
    cook = User.objects.create_user("cook", password="pw-cook-123")
    admin_client_.post(
        f"/admin/queueing/outlet/{north.pk}/change/",
        {
            "name": "Hearth North", "weight": "1", "amber_after": "300", "red_after": "600",
            "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
            "memberships-0-user": str(cook.pk), "memberships-0-outlet": str(north.pk),
        },
    )  # fmt: skip
    assert Membership.objects.filter(user=cook, outlet=north).exists()


# --- The API's docs page -----------------------------------------------------------------


def test_api_docs__markdown_code_spans_are_code_and_the_page_has_the_site_header(
    db: None,
) -> None:
    html = Client().get("/api/docs/").content.decode()
    assert '<header class="topbar">' in html
    assert "<code>Idempotency-Key</code>" in html
    assert "`" not in re.sub(r"<pre[^>]*>.*?</pre>", "", html, flags=re.S)  # JSON samples aside


def test_api_docs__code_spans_are_escaped_before_they_become_code(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shop.api.openapi import OPENAPI

    op = OPENAPI["paths"]["/api/orders"]["post"]
    monkeypatch.setitem(op, "description", "Send `<b>x</b>` or <i>y</i>; `a` & `b`.")
    html = Client().get("/api/docs/").content.decode()
    assert (
        "Send <code>&lt;b&gt;x&lt;/b&gt;</code> or &lt;i&gt;y&lt;/i&gt;; "
        "<code>a</code> &amp; <code>b</code>."
    ) in html


@pytest.mark.parametrize("action", ["start", "ready", "complete", "recall"])
@pytest.mark.parametrize("token", ["a\u0000b", "\ud800", "no spaces allowed", "x" * 41])
def test_kitchen_action__a_malformed_token_is_refused_not_a_500(
    cook: Client, north: Outlet, action: str, token: str
) -> None:
    answer = post_json(cook, f"/kitchen/north/{action}", {"token": token, "fence": 1})
    assert answer.status_code == 400
    assert answer.json()["error"] in ("invalid", "invalid_text")  # the API's one body parser


def test_kitchen_action__deeply_nested_json_is_refused_not_a_500(
    cook: Client, north: Outlet
) -> None:
    body = "[" * 20_000 + "]" * 20_000  # within the 64 KiB limit
    answer = cook.post("/kitchen/north/start", body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"


def test_kitchen__a_managers_screen_says_it_only_watches(
    cook: Client, manager: Client, north: Outlet
) -> None:
    assert "does not keep Hearth North up" in manager.get("/kitchen/north/").content.decode()
    assert "does not keep" not in cook.get("/kitchen/north/").content.decode()
