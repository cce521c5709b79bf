"""A deployment as README's "across several machines" runs it: two web processes, two notifiers.

Each process is started with the README's own command on one PostgreSQL. A change
made through one web process reaches a socket of the other, an outlet that falls
silent is taken down by whichever notifier leads, and when the leader is killed
the other notifier carries on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from websockets.sync.client import ClientConnection

from queueing.models import NotifierStatus, Outlet, OutletState
from queueing.services.routing import ring_of
from shop.models import Membership
from tests.processes import Process, manage, process_env, wait_for, web_server
from tests.shop.test_live import events_of, open_socket, recv_until, start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST = {
    "HEARTH_HEARTBEAT_INTERVAL": "0.5",
    "HEARTH_HEARTBEAT_TIMEOUT": "4",
    "HEARTH_NOTIFIER_TICK": "0.5",
}


@contextmanager
def heartbeating(base: str, slug: str, token: str) -> Iterator[threading.Event]:
    """An outlet's agent heartbeating through one web process until the event is set."""
    stop = threading.Event()

    def beat() -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            seq = 0
            while not stop.is_set():
                seq += 1
                try:
                    http.post(
                        f"/api/outlets/{slug}/heartbeat",
                        json={"source": "agent", "seq": seq},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    pass
                stop.wait(0.5)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(5)


def place(base: str, order: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{base}/api/orders", json=order, timeout=20)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def delivery_zone_of(slug: str, outlets: list[Outlet]) -> str:
    """A delivery zone whose first choice on the outlets' ring is ``slug``."""
    ring = ring_of(outlets)
    return next(f"Z{n}" for n in range(1000) if ring.owner(f"Z{n}") == slug)


def test_two_webs_two_notifiers__changes_cross_processes_and_the_standby_takes_over(
    tmp_path: Path, make_outlet: Any
) -> None:
    call_command("loaddata", "sample_menu", verbosity=0)
    north, north_token = make_outlet("north")
    south, south_token = make_outlet("south")
    cook = User.objects.create_user("cook-south")
    Membership.objects.create(user=cook, outlet=south)
    session = Client()
    session.force_login(cook)

    with ExitStack() as stack:
        _, web_a = stack.enter_context(web_server(tmp_path, **FAST))
        _, web_b = stack.enter_context(web_server(tmp_path, **FAST))
        notifiers = [
            Process(manage("notifier"), env=process_env(**FAST), log_path=tmp_path / f"n{n}.log")
            for n in (1, 2)
        ]
        for n in notifiers:
            stack.callback(n.stop)
        north_beats = stack.enter_context(heartbeating(web_a, "north", north_token))
        stack.enter_context(heartbeating(web_b, "south", south_token))
        wait_for(
            lambda: Outlet.objects.filter(state=OutletState.ACTIVE).count() == 2,
            timeout=60,
            message="both outlets active",
        )
        ws_b = web_b.replace("http://", "ws://") + "/"

        # An order placed through web A reaches south's kitchen socket on web B.
        with open_socket(ws_b, "ws/kitchen/south/", user=cook) as kitchen:
            start(kitchen)
            placed = place(
                web_a,
                {
                    "kind": "takeaway",
                    "outlet": "south",
                    "lines": [{"item": "margherita", "qty": 1}],
                    "customer": {"name": "Ada"},
                },
            )
            heard = events_of(
                recv_until(kitchen, lambda m: m.get("event", {}).get("order") == placed["token"])
            )
            assert heard[-1]["type"] == "placed"

        # North falls silent: whichever notifier leads moves its delivery order to south,
        # and the customer following it on web B is told.
        zone = delivery_zone_of("north", [north, south])
        moving = place(
            web_a,
            {
                "kind": "delivery",
                "zone": zone,
                "lines": [{"item": "margherita", "qty": 1}],
                "customer": {"name": "Bo", "address": "1 Loop Lane"},
            },
        )
        customer: ClientConnection
        with open_socket(ws_b, f"ws/orders/{moving['token']}/") as customer:
            start(customer)
            north_beats.set()
            moved = events_of(
                recv_until(customer, lambda m: m.get("event", {}).get("type") == "rerouted")
            )[-1]
            assert (moved["from_outlet"], moved["outlet"]) == ("north", "south")

        # Kill the leader: the other notifier leads and keeps ticking.
        status = NotifierStatus.objects.get(pk=1)
        leader = next(n for n in notifiers if status.leader.endswith(f":{n.pid}"))
        standby = next(n for n in notifiers if n is not leader)
        leader.signal(signal.SIGKILL)
        wait_for(
            lambda: NotifierStatus.objects.get(pk=1).leader.endswith(f":{standby.pid}"),
            timeout=60,
            message="the standby notifier leads",
        )
        ticked = NotifierStatus.objects.get(pk=1).last_tick_at
        wait_for(
            lambda: NotifierStatus.objects.get(pk=1).last_tick_at > ticked,
            timeout=30,
            message="the new leader ticks",
        )
