"""python manage.py outlet: add, list, drain, retire, down, token."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from queueing.models import Order, Outlet
from queueing.services import outlet_heartbeat
from queueing.services.outlets import outlet_by_token
from shop.ordering import order_place, order_request_parse

pytestmark = pytest.mark.django_db

MakeOutlet = Callable[..., tuple[Outlet, str]]


def outlet(*args: str) -> list[str]:
    out = StringIO()
    call_command("outlet", *args, stdout=out)
    return out.getvalue().splitlines()


def place(**payload: Any) -> Order:
    base = {"lines": [{"item": "margherita"}], "customer": {"name": "Ada", "address": "x"}}
    order, _ = order_place(request=order_request_parse(base | payload))
    return order


def test_outlet_by_token__loads_every_field_as_the_orm_does(db: None) -> None:
    # A named statement, not the ORM: a field added to the model must be added there too.
    token = outlet("add", "north", "--name", "North Street", "--weight", "3")[-1]
    found = outlet_by_token(token=token)
    assert found is not None
    assert found.get_deferred_fields() == set()
    orm = Outlet.objects.get(slug="north")
    fields = [f.attname for f in Outlet._meta.concrete_fields]
    assert [getattr(found, f) for f in fields] == [getattr(orm, f) for f in fields]
    assert outlet_by_token(token=token + "x") is None


def test_add__prints_the_agent_token_as_the_last_line(db: None) -> None:
    lines = outlet("add", "north", "--name", "North Street", "--weight", "3")

    token = lines[-1]
    found = outlet_by_token(token=token)
    assert found is not None
    assert (found.slug, found.name, found.weight, found.state) == (
        "north",
        "North Street",
        3,
        "down",
    )
    assert token not in found.token_hash  # stored hashed only
    # A new outlet takes no orders until its agent proved it alive, and the command says so.
    assert (
        "it is down, waiting for proof: it takes orders once its agent has heartbeated"
        in (lines[-3])
    )


def test_activate__a_manager_vouches_for_a_new_or_marked_down_outlet(db: None) -> None:
    outlet("add", "north")
    assert outlet("activate", "north") == ["outlet north is active: it takes new orders"]
    outlet("down", "north")
    outlet("activate", "north")
    assert Outlet.objects.get(slug="north").state == "active"
    with pytest.raises(CommandError, match="no outlet atlantis"):
        outlet("activate", "atlantis")


def test_add__name_defaults_to_the_slug(db: None) -> None:
    outlet("add", "east")

    assert Outlet.objects.get(slug="east").name == "east"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "north"], "already exists"),
        (["add", "not a slug"], "is not a slug"),
        (["add", "west", "--weight", "0"], "--weight"),
        (["add", "west", "--weight", "lots"], "--weight"),
        (["drain", "nowhere"], "no outlet nowhere"),
        (["retire", "nowhere"], "no outlet nowhere"),
        (["down", "nowhere"], "no outlet nowhere"),
        (["token", "nowhere"], "no outlet nowhere"),
    ],
)
def test_bad_arguments__command_error_and_nothing_changed(
    make_outlet: MakeOutlet, args: list[str], message: str
) -> None:
    make_outlet("north")

    with pytest.raises(CommandError, match=message):
        outlet(*args)

    assert list(Outlet.objects.values_list("slug", "state")) == [("north", "active")]


def test_list__one_query_with_state_heartbeat_age_and_open_orders(
    menu: None, make_outlet: MakeOutlet, django_assert_num_queries: Any
) -> None:
    north, _ = make_outlet("north", name="North Street", weight=2)
    for slug in ("east", "west", "south"):
        make_outlet(slug)
    outlet_heartbeat(outlet=north, source="test")
    for _ in range(3):
        place(kind="takeaway", outlet="north")
    place(kind="takeaway", outlet="east")
    call_command("outlet", "drain", "west", stdout=StringIO())

    with django_assert_num_queries(1):
        lines = outlet("list")

    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert lines[0].split() == ["slug", "name", "weight", "state", "heartbeat", "open"]
    # The heartbeat's time is the test transaction's start: its age is how long the test ran.
    age = rows["north"][5]
    assert age.endswith("s") and int(age[:-1]) < 30, age
    assert rows["north"][:5] + rows["north"][6:] == ["north", "North", "Street", "2", "active"] + [
        "ago",
        "3",
    ]
    assert rows["east"][-1] == "1"
    assert rows["west"][3:] == ["draining", "never", "0"]
    assert list(rows) == ["east", "north", "south", "west"]


def test_list__no_outlets__says_how_to_add_one(db: None) -> None:
    assert "outlet add" in outlet("list")[0]


def test_drain__outlet_takes_no_new_orders(make_outlet: MakeOutlet) -> None:
    make_outlet("north")

    lines = outlet("drain", "north")

    assert "draining" in lines[0]
    assert Outlet.objects.get(slug="north").state == "draining"


def test_drain_move__moves_queued_delivery_orders_to_other_outlets(
    menu: None, make_outlet: MakeOutlet
) -> None:
    make_outlet("north")
    orders = [place(kind="delivery", zone=f"Z{i}") for i in range(4)]
    make_outlet("east")  # comes later, so every order went to north

    lines = outlet("drain", "north", "--move")

    assert "4 queued delivery orders moved" in lines[-1]
    assert {o.outlet.slug for o in Order.objects.filter(pk__in=[o.pk for o in orders])} == {"east"}


def test_retire__refused_while_orders_are_open_then_done(
    menu: None, make_outlet: MakeOutlet
) -> None:
    north, token = make_outlet("north")
    order = place(kind="takeaway", outlet="north")

    with pytest.raises(CommandError, match="open orders"):
        outlet("retire", "north")
    assert Outlet.objects.get(slug="north").state == "active"

    Order.objects.filter(pk=order.pk).update(state="completed")  # as if cooked
    outlet("retire", "north")

    assert Outlet.objects.get(slug="north").state == "retired"
    assert outlet_by_token(token=token) is None
    with pytest.raises(CommandError, match="retired"):
        outlet("token", "north")


def test_down__marks_the_outlet_down_and_moves_its_orders(
    menu: None, make_outlet: MakeOutlet
) -> None:
    make_outlet("north")
    delivery = place(kind="delivery", zone="N1")
    takeaway = place(kind="takeaway", outlet="north")
    make_outlet("east")

    lines = outlet("down", "north")

    assert lines[-1] == "outlet north is down: 1 orders moved, 1 takeaway cancelled"
    delivery.refresh_from_db()
    takeaway.refresh_from_db()
    assert (delivery.outlet.slug, delivery.state) == ("east", "queued")
    assert takeaway.state == "cancelled"
    with pytest.raises(CommandError, match="already down"):
        outlet("down", "north")


def test_token__rotates_and_prints_the_new_token_last(make_outlet: MakeOutlet) -> None:
    _, old = make_outlet("north")

    new = outlet("token", "north")[-1]

    assert new != old
    assert outlet_by_token(token=old) is None
    found = outlet_by_token(token=new)
    assert found is not None and found.slug == "north"
