"""The live path with real sockets: a Daphne process, its LISTEN connection, changes made elsewhere."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from queueing.models import Heartbeat, OrderEvent, Outlet
from queueing.services import order_claim_next, order_enqueue, outlet_heartbeat
from queueing.tickets import Ticket
from shop.models import Membership
from tests.processes import Process, manage, process_env, wait_for, web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RECV_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    """One Daphne for the module; the listener waits ~1 s before reconnecting, so a gap is visible."""
    with django_db_blocker.unblock():
        with web_server(
            tmp_path_factory.mktemp("live"), HEARTH_LISTENER_RETRY_MIN="1", HEARTH_LOG_LEVEL="INFO"
        ) as (proc, base):
            yield proc, base.replace("http://", "ws://") + "/"


def open_socket(base: str, path: str, *, user: User | None = None) -> ClientConnection:
    headers = {}
    if user is not None:
        client = Client()
        client.force_login(user)
        headers["Cookie"] = f"sessionid={client.cookies['sessionid'].value}"
    origin = Origin(base.replace("ws://", "http://").rstrip("/"))
    return connect(
        base + path, origin=origin, additional_headers=headers, open_timeout=RECV_TIMEOUT
    )


def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=RECV_TIMEOUT))


def recv_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Messages up to and including the first one ``done`` accepts."""
    messages = []
    while True:
        message = recv(ws)
        messages.append(message)
        if done(message):
            return messages


def start(ws: ClientConnection) -> tuple[int, list[dict[str, Any]]]:
    """Read hello, the replay and live; returns (last_event_id, replayed events)."""
    hello = recv(ws)
    assert hello["type"] == "hello", hello
    messages = recv_until(ws, lambda m: m["type"] == "live")
    assert all(m["type"] == "event" for m in messages[:-1]), messages
    return hello["last_event_id"], [m["event"] for m in messages[:-1]]


def close_code(ws: ClientConnection) -> int | None:
    """The code the server closed the socket with (it must send nothing before closing)."""
    try:
        message = ws.recv(timeout=RECV_TIMEOUT)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    raise AssertionError(f"socket stayed open and sent {message!r}")


def events_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["event"] for m in messages if m["type"] == "event"]


def in_another_process(code: str) -> None:
    """Run ``code`` in ``manage.py shell``: a change the web process did not make."""
    result = subprocess.run(
        manage("shell", "-c", code), env=process_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def place(outlet: Outlet) -> Ticket:
    line = {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 60}
    return order_enqueue(
        kind="takeaway",
        lines=[line],
        customer={"name": "Ann"},
        prep_seconds=60,
        quick=False,
        outlet=outlet,
    )


def staff(username: str, *outlets: Outlet) -> User:
    user = User.objects.create_user(username)
    for outlet in outlets:
        Membership.objects.create(user=user, outlet=outlet)
    return user


def manager(username: str) -> User:
    user = User.objects.create_user(username)
    user.user_permissions.add(
        Permission.objects.get(codename="manager", content_type__app_label="shop")
    )
    return user


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in events]


def test_change_in_another_process__reaches_kitchen_and_order_sockets(live, make_outlet) -> None:
    _, base = live
    north, _ = make_outlet("north")
    order = place(north)
    with (
        open_socket(base, "ws/kitchen/north/", user=staff("cook", north)) as kitchen,
        open_socket(base, f"ws/orders/{order.token}/") as customer,
    ):
        assert start(kitchen)[1] == [] and start(customer)[1] == []  # no ?after=: no replay
        in_another_process(
            "from queueing.models import Outlet\n"
            "from queueing.services import order_claim_next, order_mark_ready, order_complete\n"
            "t = order_claim_next(outlet=Outlet.objects.get(slug='north'), station='oven')[0]\n"
            "order_mark_ready(token=t.token, fence=t.fence)\n"
            "order_complete(token=t.token, fence=t.fence)\n"
        )
        expected = list(
            OrderEvent.objects.filter(order_id=order.id, id__gt=order.event_id).order_by("id")
        )
        assert [e.type for e in expected] == ["claimed", "ready", "completed"]
        for ws in (kitchen, customer):
            got = events_of(recv_until(ws, lambda m: m.get("event", {}).get("type") == "completed"))
            assert ids(got) == [e.id for e in expected]
            assert [(e["order"], e["number"], e["state"], e["outlet"]) for e in got] == [
                (order.token, order.id, "preparing", "north"),
                (order.token, order.id, "ready", "north"),
                (order.token, order.id, "completed", "north"),
            ]
            assert set(got[0]) == {
                "id",
                "type",
                "order",
                "number",
                "kind",
                "state",
                "outlet",
                "from_outlet",
                "fence",
                "at",
                "detail",
            }


def test_reconnect_with_old_event_id__receives_exactly_the_missed_events_in_order(
    live, make_outlet
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    make_outlet("south")
    cook = staff("cook", north)
    with open_socket(base, "ws/kitchen/north/", user=cook) as kitchen:
        seen, _ = start(kitchen)
    in_another_process(
        "from queueing.models import Outlet\n"
        "from queueing.services import order_enqueue, order_claim_next\n"
        "line = {'item': 'margherita', 'name': 'M', 'qty': 1, 'note': '', 'prep_seconds': 60}\n"
        "for slug in ['north', 'south', 'north']:\n"
        "    order_enqueue(kind='takeaway', lines=[line], customer={'name': 'B'}, prep_seconds=60,\n"
        "                  quick=False, outlet=Outlet.objects.get(slug=slug))\n"
        "order_claim_next(outlet=Outlet.objects.get(slug='north'), station='oven')\n"
    )
    missed = list(
        OrderEvent.objects.filter(outlet=north, id__gt=seen)
        .order_by("id")
        .values_list("id", flat=True)
    )
    assert (
        len(missed) == 3
    )  # two placed at north, one claimed; south's order is not north's business
    with open_socket(base, f"ws/kitchen/north/?after={seen}", user=cook) as kitchen:
        last, replayed = start(kitchen)
        assert ids(replayed) == missed
        assert last >= missed[-1]
        # Asking again for what it already has sends nothing twice.
        kitchen.send(json.dumps({"type": "resume", "after": seen}))
        assert recv(kitchen) == {"type": "live"}
    with open_socket(base, f"ws/ops/?after={seen}", user=manager("boss")) as ops:
        _, replayed = start(ops)
        assert ids(replayed) == list(
            OrderEvent.objects.filter(id__gt=seen).order_by("id").values_list("id", flat=True)
        )
        assert len(replayed) == 4


def test_order_socket__hears_only_its_own_order_and_refuses_unknown_tokens(
    live, make_outlet
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    mine, other = place(north), place(north)
    with open_socket(base, f"ws/orders/{mine.token}/?after=0") as customer:
        _, replayed = start(customer)
        assert [(e["order"], e["type"]) for e in replayed] == [(mine.token, "placed")]
        # The other order changes first, then mine: had the other's events reached this
        # socket they would have arrived before mine (one listener, commit order).
        in_another_process(
            "from queueing.models import Outlet\n"
            "from queueing.services import order_claim_ticket, order_claim_next\n"
            "north = Outlet.objects.get(slug='north')\n"
            f"order_claim_ticket(outlet=north, token={other.token!r}, station='a')\n"
            "order_claim_next(outlet=north, station='b')\n"
        )
        got = recv_until(customer, lambda m: m.get("event", {}).get("type") == "claimed")
        assert [(e["order"], e["type"]) for e in events_of(got)] == [(mine.token, "claimed")]
        assert other.token not in json.dumps(got)
    with open_socket(base, "ws/orders/not-a-real-token/") as stranger:
        assert close_code(stranger) == 4404


def test_kitchen_socket__refuses_other_outlets_staff_anonymous_and_unknown_outlets(
    live, make_outlet
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    south_cook = staff("south-cook", south)
    with open_socket(base, "ws/kitchen/north/", user=south_cook) as ws:
        assert close_code(ws) == 4403
    with open_socket(base, "ws/kitchen/north/") as ws:
        assert close_code(ws) == 4401
    with open_socket(base, "ws/kitchen/nowhere/", user=south_cook) as ws:
        assert close_code(ws) == 4404
    with open_socket(base, "ws/ops/", user=south_cook) as ws:
        assert close_code(ws) == 4403
    with open_socket(base, "ws/ops/") as ws:
        assert close_code(ws) == 4401
    # A manager opens every kitchen and ops; a cook their own kitchen.
    boss = manager("boss")
    for path, user in [
        ("ws/kitchen/north/", boss),
        ("ws/ops/", boss),
        ("ws/kitchen/south/", south_cook),
    ]:
        with open_socket(base, path, user=user) as ws:
            assert recv(ws)["type"] == "hello"
    # Another site's page cannot open a socket with the visitor's cookie.
    with pytest.raises(InvalidStatus) as refused:
        connect(
            base + "ws/orders/x/", origin=Origin("http://evil.example"), open_timeout=RECV_TIMEOUT
        )
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("who", ["manager", "superuser"])
def test_kitchen_socket__a_managers_screen_watches_but_never_heartbeats(
    live, make_outlet, who: str
) -> None:
    """A head-office tab on a closed outlet's kitchen must not re-open it to customers."""
    _, base = live
    north, _ = make_outlet("north", active=False)  # new: waiting for its first heartbeats
    user = manager("boss") if who == "manager" else User.objects.create_superuser("root")
    with open_socket(base, "ws/kitchen/north/", user=user) as kitchen:
        start(kitchen)
        for seq in range(1, 4):
            kitchen.send(json.dumps({"type": "heartbeat", "seq": seq}))
            assert recv(kitchen) == {"type": "heartbeat", "counted": False}
        kitchen.send(json.dumps({"type": "ping"}))
        assert recv(kitchen) == {"type": "pong"}  # the screen still works
    north.refresh_from_db()
    assert north.last_heartbeat_at is None and north.state == "down"
    assert not Heartbeat.objects.filter(outlet=north).exists()
    # Its own staff's screen counts.
    with open_socket(base, "ws/kitchen/north/", user=staff("cook", north)) as kitchen:
        start(kitchen)
        kitchen.send(json.dumps({"type": "heartbeat", "seq": 1}))
        answer = recv(kitchen)
        assert answer["counted"] is True and answer["state"] == "down"
    assert Heartbeat.objects.filter(outlet=north, source="screen:cook").count() == 1


def test_kitchen_socket__heartbeat_updates_the_outlet_and_bad_messages_get_errors(
    live, make_outlet
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    assert north.last_heartbeat_at is None
    with open_socket(base, "ws/kitchen/north/", user=staff("cook", north)) as kitchen:
        start(kitchen)
        kitchen.send(json.dumps({"type": "heartbeat", "seq": 7}))
        answer = recv(kitchen)
        assert answer["type"] == "heartbeat" and answer["state"] == "active"
        north.refresh_from_db()
        assert north.last_heartbeat_at is not None
        assert north.last_heartbeat_at.isoformat() == answer["at"]
        beat = Heartbeat.objects.get(outlet=north)
        assert (beat.source, beat.seq) == ("screen:cook", 7)
        for bad in [
            "not json",
            "[1, 2]",
            '{"kind": "ping"}',
            '{"type": "dance"}',
            '{"type": "heartbeat", "seq": "x"}',
            '{"type": "resume", "after": -1}',
            '{"type": "resume"}',
        ]:
            kitchen.send(bad)
            answer = recv(kitchen)
            assert answer["type"] == "error" and answer["message"], (bad, answer)
        kitchen.send(b"\x00binary")
        assert recv(kitchen)["type"] == "error"
        kitchen.send(json.dumps({"type": "ping"}))
        assert recv(kitchen) == {"type": "pong"}
    with open_socket(base, "ws/ops/?after=soon", user=manager("boss")) as ops:
        assert recv(ops)["type"] == "error"
        assert close_code(ops) == 4400


def test_event_committed_after_a_higher_id__is_still_sent(live, make_outlet) -> None:
    """Ids are taken in one order and committed in another; the socket follows commit order."""
    _, base = live
    north, _ = make_outlet("north")
    took_id, release = threading.Event(), threading.Event()
    held: list[Ticket] = []

    def hold_open() -> None:
        try:
            with transaction.atomic():
                held.append(place(north))
                took_id.set()
                release.wait(RECV_TIMEOUT)
        finally:
            connection.close()

    with open_socket(base, "ws/kitchen/north/", user=staff("cook", north)) as kitchen:
        start(kitchen)
        holder = threading.Thread(target=hold_open)
        holder.start()
        try:
            assert took_id.wait(RECV_TIMEOUT)
            later = place(north)
            first = recv(kitchen)["event"]
        finally:
            release.set()
            holder.join()
        second = recv(kitchen)["event"]
    assert held[0].event_id is not None and later.event_id is not None
    assert held[0].event_id < later.event_id
    assert (first["id"], second["id"]) == (later.event_id, held[0].event_id)


def test_listener_killed__reconnects_and_delivers_what_committed_while_it_was_away(
    make_outlet, tmp_path
) -> None:
    """Also: the catch-up never re-sends what was in the table before the listener started."""
    north, _ = make_outlet("north")
    order = place(north)  # before this web process listens
    with web_server(tmp_path, HEARTH_LISTENER_RETRY_MIN="1") as (proc, http_base):
        _listener_killed(proc, http_base.replace("http://", "ws://") + "/", north, order)
        assert "listener lost its connection" in proc.output()
        assert "listener reconnected" in proc.output()


def _listener_killed(proc: Process, base: str, north: Outlet, order: Ticket) -> None:

    def listener_pid() -> int | None:
        with connection.cursor() as cursor:
            # This web process's listener: the connection is named after its OS pid.
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                [f"hearth-listener:{proc.pid}"],
            )
            row = cursor.fetchone()
        return row[0] if row else None

    with (
        open_socket(base, "ws/kitchen/north/", user=staff("cook", north)) as kitchen,
        open_socket(base, f"ws/orders/{order.token}/") as customer,
    ):
        start(kitchen)
        start(customer)
        old_pid = wait_for(listener_pid, timeout=RECV_TIMEOUT, message="the listener's connection")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])
        wait_for(
            lambda: listener_pid() != old_pid,
            timeout=RECV_TIMEOUT,
            message="the old listener to go",
        )
        claimed = order_claim_next(outlet=north, station="oven")[0]
        assert listener_pid() is None, "the change must commit while the listener is away"
        for ws in (kitchen, customer):
            event = recv(ws)["event"]
            assert (event["id"], event["type"]) == (claimed.event_id, "claimed")
        new_pid = wait_for(listener_pid, timeout=RECV_TIMEOUT, message="the new listener")
        assert new_pid != old_pid
        # And the stream goes on after the reconnect.
        again = place(north)
        assert recv(kitchen)["event"]["id"] == again.event_id


def test_replay__keeps_the_newest_events_up_to_the_cap_and_says_it_cut(make_outlet) -> None:
    from shop.consumers import replay

    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    orders = [place(north), place(south), place(north)]
    last, events, truncated = replay(after=0, limit=2)
    assert last == orders[-1].event_id
    assert ids(events) == [orders[1].event_id, orders[2].event_id] and truncated
    _, events, truncated = replay(after=0, outlet_id=north.pk, limit=5)
    assert [e["order"] for e in events] == [
        None,  # north added
        None,  # and vouched for by a manager (the fixture)
        orders[0].token,
        orders[2].token,
    ] and not truncated
    assert replay(after=None, order_id=orders[0].id) == (last, [], False)  # no ?after=: no replay


def test_notifier_in_another_process__its_reroute_reaches_both_kitchens_and_the_customer(
    live, make_outlet
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    line = {"item": "margherita", "name": "Margherita", "qty": 1, "note": "", "prep_seconds": 60}
    for zone in range(100):  # a delivery zone the ring gives to north
        order = order_enqueue(
            kind="delivery",
            zone=f"zone-{zone}",
            lines=[line],
            customer={"name": "Bo"},
            prep_seconds=60,
            quick=False,
        )
        if order.outlet_id == north.pk:
            break
    assert order.outlet_id == north.pk
    boss = manager("boss")
    with (
        open_socket(base, "ws/kitchen/north/", user=boss) as north_kitchen,
        open_socket(base, "ws/kitchen/south/", user=boss) as south_kitchen,
        open_socket(base, f"ws/orders/{order.token}/") as customer,
    ):
        for ws in (north_kitchen, south_kitchen, customer):
            start(ws)
        # North fell silent an hour ago; south is alive. One notifier tick, in its own process.
        Outlet.objects.filter(pk=north.pk).update(
            last_heartbeat_at=timezone.now() - timedelta(hours=1)
        )
        outlet_heartbeat(outlet=south, source="test")
        result = subprocess.run(
            manage("notifier", "--once", "--timeout", "60"),
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr

        def rerouted(m: dict[str, Any]) -> bool:
            return (
                m.get("event", {}).get("type") == "rerouted" and m["event"]["order"] == order.token
            )

        heard = {}
        for name, ws in [
            ("customer", customer),
            ("south", south_kitchen),
            ("north", north_kitchen),
        ]:
            heard[name] = events_of(recv_until(ws, rerouted))
            moved = heard[name][-1]
            assert (moved["outlet"], moved["from_outlet"], moved["state"]) == (
                "south",
                "north",
                "queued",
            )
    # North's kitchen also heard its outlet go down (an outlet-level event), before the move.
    assert [(e["type"], e["state"], e["order"]) for e in heard["north"]] == [
        ("outlet", "down", None),
        ("rerouted", "queued", order.token),
    ]
