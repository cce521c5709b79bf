"""Staff sockets lose access while they are open: removed from the outlet, deactivated, signed out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from queueing.models import Heartbeat, Outlet
from queueing.services import order_claim_next
from shop.models import Membership
from tests.processes import Process, web_server
from tests.shop.test_live import manager, place, recv, staff, start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RECHECK = 1.0  # the web process re-checks every second here
CLOSED_WITHIN = 10.0  # a few re-checks, on a busy machine


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    with django_db_blocker.unblock():
        with web_server(tmp_path_factory.mktemp("access"), HEARTH_SOCKET_RECHECK=str(RECHECK)) as (
            proc,
            base,
        ):
            yield proc, base.replace("http://", "ws://") + "/"


def signed_in(base: str, path: str, user: User) -> tuple[ClientConnection, Client]:
    client = Client()
    client.force_login(user)
    ws = connect(
        base + path,
        origin=Origin(base.replace("ws://", "http://").rstrip("/")),
        additional_headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"},
        open_timeout=15,
    )
    return ws, client


def closed_with(ws: ClientConnection, *, within: float = CLOSED_WITHIN) -> tuple[int | None, list]:
    """Wait for the server to close; (close code, messages received meanwhile)."""
    deadline = time.monotonic() + within
    messages = []
    while True:
        try:
            messages.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), messages
        except TimeoutError:
            raise AssertionError(f"socket still open after {within}s: {messages}") from None


LEAVERS: dict[str, Callable[[User, Client, Outlet], None]] = {
    "membership deleted": lambda user, client, outlet: Membership.objects.filter(
        user=user
    ).delete(),
    "deactivated": lambda user, client, outlet: User.objects.filter(pk=user.pk).update(
        is_active=False
    ),
    "signed out": lambda user, client, outlet: client.logout(),
}
EXPECTED_CODE = {"membership deleted": 4403, "deactivated": 4401, "signed out": 4401}


@pytest.mark.parametrize("how", list(LEAVERS))
def test_kitchen_socket__staff_who_leave_lose_it_within_seconds(
    live, make_outlet, how: str
) -> None:
    _, base = live
    north, _ = make_outlet("north")
    cook = staff("cook", north)
    ws, client = signed_in(base, "ws/kitchen/north/", cook)
    with ws:
        start(ws)
        LEAVERS[how](cook, client, north)
        code, messages = closed_with(ws)
        assert code == EXPECTED_CODE[how]
        assert messages[-1] == {"type": "error", "message": "access to this screen has ended"}


def test_kitchen_socket__a_heartbeat_after_leaving_does_not_count(live, make_outlet) -> None:
    _, base = live
    north, _ = make_outlet("north")
    cook = staff("cook", north)
    ws, _ = signed_in(base, "ws/kitchen/north/", cook)
    with ws:
        start(ws)
        ws.send(json.dumps({"type": "heartbeat", "seq": 1}))
        assert recv(ws)["type"] == "heartbeat"
        Membership.objects.filter(user=cook).delete()
        ws.send(json.dumps({"type": "heartbeat", "seq": 2}))  # before any periodic re-check
        code, messages = closed_with(ws)
    assert code == 4403
    assert all(m["type"] != "heartbeat" for m in messages)
    assert list(Heartbeat.objects.filter(outlet=north).values_list("seq", flat=True)) == [1]


def test_kitchen_socket__staff_who_stay_keep_it(live, make_outlet) -> None:
    _, base = live
    north, _ = make_outlet("north")
    ws, _ = signed_in(base, "ws/kitchen/north/", staff("cook", north))
    with ws:
        start(ws)
        time.sleep(3 * RECHECK)  # several re-checks pass
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}


def test_ops_socket__a_manager_whose_permission_is_removed_loses_it(live, make_outlet) -> None:
    _, base = live
    boss = manager("boss")
    ws, _ = signed_in(base, "ws/ops/", boss)
    with ws:
        start(ws)
        boss.user_permissions.clear()
        code, _ = closed_with(ws)
    assert code == 4403


def test_order_socket__a_claim_reaches_the_customer_without_the_station(live, make_outlet) -> None:
    _, base = live
    north, _ = make_outlet("north")
    order = place(north)
    with connect(
        f"{base}ws/orders/{order.token}/",
        origin=Origin(base.replace("ws://", "http://").rstrip("/")),
        open_timeout=15,
    ) as ws:
        start(ws)
        order_claim_next(outlet=north, station="cook-north·ab12")
        message = recv(ws)
    assert message["type"] == "event" and message["event"]["type"] == "claimed"
    assert message["event"]["detail"] == {}
    assert "cook-north" not in json.dumps(message)


@pytest.mark.parametrize("after", ["²", "1²", "9" * 4300, "-1", "1e3", "9223372036854775808"])
def test_socket__a_bad_after_closes_with_4400_not_a_traceback(live, make_outlet, after) -> None:
    proc, base = live
    north, _ = make_outlet("north")
    order = place(north)
    with connect(
        f"{base}ws/orders/{order.token}/?after={after}",
        origin=Origin(base.replace("ws://", "http://").rstrip("/")),
        open_timeout=15,
    ) as ws:
        code, messages = closed_with(ws)
    assert code == 4400
    assert messages[0]["type"] == "error"
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize("path", ["ws/nowhere/", "ws/kitchen/not%20a%20slug/", "ws/orders/"])
def test_socket__an_unknown_path_closes_with_4404_not_a_500(live, path: str) -> None:
    proc, base = live
    with connect(
        base + path, origin=Origin(base.replace("ws://", "http://").rstrip("/")), open_timeout=15
    ) as ws:
        code, _ = closed_with(ws)
    assert code == 4404
    assert "Traceback" not in proc.output()
