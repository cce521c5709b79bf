"""The live path with real sockets: a Daphne process, its LISTEN connection, changes made elsewhere."""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from queueing import sql
from queueing.events import Cursor, events_cursor
from queueing.models import Heartbeat, Order, OrderEvent, OrderKind, OrderState, Outlet
from queueing.services import order_claim_next, order_enqueue, outlet_heartbeat
from queueing.services.failover import database_now, notifier_tick
from queueing.tickets import Ticket
from shop.models import Membership, MenuItem
from tests import processes
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
        hello = recv(kitchen)
        seen, cursor = hello["last_event_id"], hello["cursor"]
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
    with open_socket(base, f"ws/kitchen/north/?after={cursor}", user=cook) as kitchen:
        last, replayed = start(kitchen)
        assert ids(replayed) == missed
        assert last >= missed[-1]
        # Asking again for what it already has sends nothing twice.
        kitchen.send(json.dumps({"type": "resume", "after": cursor}))
        assert recv(kitchen)["type"] == "live"
    # A bare event id is still understood (a legacy cursor: id order).
    with open_socket(base, f"ws/kitchen/north/?after={seen}", user=cook) as kitchen:
        assert ids(start(kitchen)[1]) == missed
    with open_socket(base, f"ws/ops/?after={cursor}", user=manager("boss")) as ops:
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

    start_at, _ = events_cursor()
    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    orders = [place(north), place(south), place(north)]
    for after in (start_at, Cursor.parse("0")):
        cursor, last, events, truncated = replay(after=after, limit=2)
        assert last == orders[-1].event_id
        assert ids(events) == [orders[1].event_id, orders[2].event_id] and truncated
        _, _, events, truncated = replay(after=after, outlet_id=north.pk, limit=5)
        assert [e["order"] for e in events] == [
            None,  # north added
            None,  # and vouched for by a manager (the fixture)
            orders[0].token,
            orders[2].token,
        ] and not truncated
    # From the cursor it handed out, nothing more; without ?after=, no replay.
    assert replay(after=cursor)[2] == []
    assert replay(after=None, order_id=orders[0].id)[1:] == (last, [], False)


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


# --- a kitchen screen holds its station's tickets while its socket is open ---------------

SHORT_LEASE = 1.5


def ping_for(ws: ClientConnection, seconds: float, *, tick: Callable[[], Any]) -> None:
    """Keep the screen there (a ping every 0.3 s, as its timers would) with the notifier ticking."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ws.send(json.dumps({"type": "ping"}))
        recv_until(ws, lambda m: m["type"] == "pong")
        tick()
        time.sleep(0.3)


def test_kitchen_socket__holds_its_stations_ticket_however_long_the_pizza_and_lets_go_when_closed(
    make_outlet: Callable[..., tuple[Outlet, str]],
    menu: None,
    settings: Any,
    tmp_path: Any,
) -> None:
    settings.HEARTH_LEASE_SECONDS = SHORT_LEASE
    north = make_outlet("north")[0]
    cook = staff("cook", north)
    pizza = MenuItem.objects.get(slug="calzone")
    # The real numbers: a pizza takes several leases (9 minutes against 120 s).
    leases = math.ceil(pizza.prep_seconds / 120)
    assert pizza.prep_seconds > 120 and leases >= 3
    line = {"item": pizza.slug, "name": pizza.name, "qty": 1, "note": "", "prep_seconds": 540}
    order = order_enqueue(
        kind="takeaway",
        lines=[line],
        customer={"name": "Ann"},
        prep_seconds=540,
        quick=False,
        outlet=north,
    )
    client = Client()
    client.force_login(cook)
    started = client.post(
        "/kitchen/north/start",
        {"token": order.token, "tab": "k3x9"},
        content_type="application/json",
    )
    assert started.status_code == 200, started.content
    claim = Order.objects.get(pk=order.id)
    assert claim.claimed_by == "cook·k3x9"

    def tick() -> Any:
        return notifier_tick(timeout=3600)

    with web_server(tmp_path, HEARTH_LEASE_SECONDS=str(SHORT_LEASE)) as (_, base):
        ws_base = base.replace("http://", "ws://") + "/"
        with open_socket(ws_base, "ws/kitchen/north/?tab=k3x9", user=cook) as ws:
            start(ws)
            # As many leases as the pizza takes, and one more: the ticket stays.
            ping_for(ws, SHORT_LEASE * (leases + 1), tick=tick)
            held = Order.objects.get(pk=order.id)
            assert (held.state, held.claimed_by, held.fence) == (
                "preparing",
                "cook·k3x9",
                claim.fence,
            )
            assert not OrderEvent.objects.filter(order_id=order.id, type="lease_expired").exists()
        closed_at = database_now()
        # Gone: the lease (renewed at the last ping) runs out within one lease.
        lease_end = Order.objects.get(pk=order.id).lease_expires_at
        assert lease_end <= closed_at + timedelta(seconds=SHORT_LEASE)

        def moved_on() -> bool:
            tick()
            return Order.objects.get(pk=order.id).fence > claim.fence

        wait_for(
            moved_on, timeout=SHORT_LEASE * 20, message="the closed screen's ticket to move on"
        )
    moved = Order.objects.get(pk=order.id)
    assert (moved.state, moved.claimed_by, moved.outlet_id) == ("queued", "", north.pk)
    event = OrderEvent.objects.filter(order_id=order.id).latest("id")
    assert event.type == "lease_expired" and event.at <= lease_end + timedelta(
        seconds=SHORT_LEASE * 20
    )


def test_kitchen_socket__a_tab_that_is_no_tab_id_is_refused(live, make_outlet) -> None:
    _, base = live
    north = make_outlet("north")[0]
    with open_socket(base, "ws/kitchen/north/?tab=../ana", user=staff("cook", north)) as ws:
        assert close_code(ws) == 4400


def test_late_commit_with_a_lower_id__reaches_stream_and_replays_exactly_once(
    live, make_outlet
) -> None:
    """A takes its id first and commits after B: the stream, a resume and a reconnect all get A."""
    _, base = live
    north, _ = make_outlet("north")
    cook = staff("cook", north)
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

    with open_socket(base, "ws/kitchen/north/", user=cook) as kitchen:
        start(kitchen)
        holder = threading.Thread(target=hold_open)
        holder.start()
        try:
            assert took_id.wait(RECV_TIMEOUT)
            later = place(north)  # B: a higher id, committed first
            b = recv(kitchen)
            assert b["event"]["id"] == later.event_id
            after_b = b["cursor"]  # the cursor that came with B: A is not in it yet
            with open_socket(base, f"ws/kitchen/north/?after={after_b}", user=cook) as early:
                assert start(early)[1] == []  # A has not committed: nothing to replay
        finally:
            release.set()
            holder.join()
        (a_ticket,) = held
        assert a_ticket.event_id is not None and later.event_id is not None
        assert a_ticket.event_id < later.event_id
        a = recv(kitchen)
        assert a["event"]["id"] == a_ticket.event_id
        # A resume from before A sends nothing again on this socket; the next event is new.
        kitchen.send(json.dumps({"type": "resume", "after": after_b}))
        assert recv(kitchen)["type"] == "live"
        marker = place(north)
        assert recv(kitchen)["event"]["id"] == marker.event_id
    # A screen that kept B's cursor reconnects and gets A (and the marker), nothing twice.
    with open_socket(base, f"ws/kitchen/north/?after={after_b}", user=cook) as again:
        assert ids(start(again)[1]) == [a_ticket.event_id, marker.event_id]
    with open_socket(base, f"ws/orders/{a_ticket.token}/?after={after_b}") as customer:
        assert [(e["id"], e["type"]) for e in start(customer)[1]] == [(a_ticket.event_id, "placed")]


def test_ten_thousand_moved_with_the_notify_lost__reach_open_and_reconnecting_screens(
    live, make_outlet
) -> None:
    """A writer moves 10,000 orders and never wakes anyone: the periodic read still delivers."""
    from shop.consumers import KITCHEN_REPLAY_LIMIT, replay

    _, base = live
    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    moved = 10_000
    start_at = timezone.now()
    Order.objects.bulk_create(
        Order(
            token=f"bulk-{i}",
            kind=OrderKind.DELIVERY,
            zone=f"Z{i % 50}",
            lines=[{"item": "margherita", "name": "M", "qty": 1, "note": "", "prep_seconds": 0}],
            state=OrderState.QUEUED,
            outlet=north,
            sort_key=start_at + timedelta(microseconds=i),
            fence=1,
        )
        for i in range(moved)
    )
    first = Order.objects.filter(outlet=north).order_by("id").first()
    assert first is not None
    boss = manager("boss")
    with (
        open_socket(base, "ws/kitchen/south/", user=boss) as kitchen,
        psycopg.connect(processes.test_database_url(), autocommit=True) as wakes,
    ):
        wakes.execute(sql.EVENTS_LISTEN)
        cursor = recv(kitchen)["cursor"]
        recv_until(kitchen, lambda m: m["type"] == "live")
        # The writer's process wakes no one: as if it died between its commit and its NOTIFY.
        in_another_process(
            "from queueing import wake\n"
            "wake.waker.wake = lambda: None\n"
            "from queueing.models import Outlet\n"
            "from queueing.services import outlet_mark_down\n"
            "moved, _ = outlet_mark_down(outlet=Outlet.objects.get(slug='north'))\n"
            f"assert len(moved) == {moved}, len(moved)\n"
        )
        assert list(wakes.notifies(timeout=0.5)) == []  # no NOTIFY was sent
        got = [m["event"] for m in recv_until_count(kitchen, moved) if m["type"] == "event"]
    assert len(got) == moved and len({e["id"] for e in got}) == moved
    assert {e["type"] for e in got} == {"rerouted"}
    assert {e["number"] for e in got} == set(
        Order.objects.filter(outlet=south).values_list("id", flat=True)
    )
    # Reconnecting from the cursor it had: all 10,000 are there to replay; a kitchen's
    # replay keeps the newest 5,000 and says it cut; an order's screen gets its move.
    _, _, events, truncated = replay(after=Cursor.parse(cursor), outlet_id=south.pk)
    assert ids(events) == sorted(e["id"] for e in got) and not truncated
    with open_socket(base, f"ws/kitchen/south/?after={cursor}", user=boss) as again:
        hello = recv(again)
        messages = recv_until(again, lambda m: m["type"] == "live")
        assert hello["type"] == "hello" and messages[-1]["truncated"] is True
        assert ids(events_of(messages)) == ids(events)[-KITCHEN_REPLAY_LIMIT:]
    with open_socket(base, f"ws/orders/{first.token}/?after={cursor}") as customer:
        assert [(e["number"], e["type"], e["outlet"]) for e in start(customer)[1]] == [
            (first.id, "rerouted", "south")
        ]


def recv_until_count(ws: ClientConnection, events: int) -> list[dict[str, Any]]:
    """Messages until ``events`` event messages have arrived."""
    messages: list[dict[str, Any]] = []
    seen = 0
    while seen < events:
        message = recv(ws)
        messages.append(message)
        seen += message["type"] == "event"
    return messages


def test_socket__gets_nothing_its_hello_already_saw(live, make_outlet, monkeypatch) -> None:
    """An event committed before the socket's hello, read by the web process after it, is not sent.

    The order's NOTIFY is lost, so the web process reads its "placed" after the socket
    joined (at its periodic read, or with the marker's wake-up, whichever comes first):
    the socket's hello already covered it (the page shows it). The next event is the marker.
    """
    from queueing import wake

    _, base = live
    north, _ = make_outlet("north")
    cook = staff("cook", north)
    with open_socket(base, "ws/kitchen/north/", user=cook) as first:
        start(first)  # the web process's listener is reading (it starts with a first socket)
        monkeypatch.setattr(wake.waker, "wake", lambda: None)
        before = place(north)  # committed; nobody woken
        monkeypatch.undo()
    with open_socket(base, "ws/kitchen/north/", user=cook) as kitchen:
        hello = recv(kitchen)
        assert hello["last_event_id"] >= before.event_id
        recv_until(kitchen, lambda m: m["type"] == "live")
        marker = place(north)
        event = recv(kitchen)
    assert event["type"] == "event" and event["event"]["id"] == marker.event_id
    assert "xid" not in event["event"]  # the writing transaction stays on the server
