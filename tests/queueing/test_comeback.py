"""Coming back takes proof: several heartbeats without a break, never one; a manager's word holds.

Driven by a clock the test moves (as test_failover): heartbeats and ticks take ``now``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from queueing.models import OrderEvent, Outlet, OutletState
from queueing.services import outlet_create, outlet_drain, outlet_heartbeat, outlet_mark_down
from queueing.services.failover import database_now, notifier_tick
from queueing.services.outlets import outlet_activate, outlet_take_down
from tests.orders import place
from tests.processes import manage, process_env

TIMEOUT = 15.0
INTERVAL = 5.0
GUARD = 15.0
MakeOutlet = Callable[..., tuple[Outlet, str]]


@pytest.fixture
def t0(db: None) -> datetime:
    return database_now()


@pytest.fixture
def timings(settings: Any) -> Any:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.HEARTH_HEARTBEAT_INTERVAL = INTERVAL
    settings.HEARTH_FLAP_GUARD = GUARD
    settings.HEARTH_FLAP_GUARD_BEATS = 3
    return settings


def at(t: datetime, seconds: float) -> datetime:
    return t + timedelta(seconds=seconds)


def beat(outlet: Outlet, when: datetime, *, timeout: float = TIMEOUT) -> None:
    outlet_heartbeat(outlet=outlet, source="agent", now=when, timeout=timeout)


def beats(outlet: Outlet, start: datetime, until: float, *, every: float = INTERVAL) -> None:
    """Heartbeat every ``every`` seconds from ``start`` up to ``start + until``."""
    n = 0
    while n * every <= until:
        beat(outlet, at(start, n * every))
        n += 1


def state_of(outlet: Outlet) -> str:
    return Outlet.objects.get(pk=outlet.pk).state


def silent_down(outlet: Outlet, t0: datetime) -> None:
    """Let ``outlet`` fall silent and be taken down as the notifier does."""
    result = outlet_take_down(
        outlet_id=outlet.pk, reason="silent", silent_before=at(t0, TIMEOUT + 5), timeout=TIMEOUT
    )
    assert result is not None


def test_default_flap_guard__several_heartbeat_intervals() -> None:
    """Defaults: the guard is 3 heartbeat intervals and asks for 3 heartbeats."""
    env = {k: v for k, v in process_env().items() if not k.startswith("HEARTH_FLAP_GUARD")} | {
        "HEARTH_HEARTBEAT_INTERVAL": "5"
    }
    code = (
        "from django.conf import settings as s; "
        "print(s.HEARTH_FLAP_GUARD, s.HEARTH_FLAP_GUARD_BEATS)"
    )
    out = subprocess.run(
        manage("shell", "-c", code), env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].split() == ["15.0", "3"]


@pytest.mark.parametrize(
    ("guard", "beats"), [("4", "3"), ("5", "3"), ("15", "1")], ids=["short", "equal", "one-beat"]
)
def test_flap_guard__not_longer_than_an_interval_is_refused_at_startup(
    guard: str, beats: str
) -> None:
    env = process_env() | {
        "HEARTH_HEARTBEAT_INTERVAL": "5",
        "HEARTH_FLAP_GUARD": guard,
        "HEARTH_FLAP_GUARD_BEATS": beats,
    }
    out = subprocess.run(manage("check"), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and "must exceed HEARTH_HEARTBEAT_INTERVAL" in (
        out.stderr
    )


def test_one_heartbeat__never_brings_a_down_outlet_back(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    silent_down(north, t0)
    # One heartbeat, then the tick long after the guard (a timeout so long it still counts).
    beat(north, at(t0, 30), timeout=600)
    report = notifier_tick(now=at(t0, 30 + GUARD + 5), timeout=600)
    assert report.back == []
    assert state_of(north) == OutletState.DOWN


def test_two_heartbeats_over_the_guard__still_not_enough(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    silent_down(north, t0)
    beat(north, at(t0, 30))
    beat(north, at(t0, 30 + GUARD + 1))
    assert notifier_tick(now=at(t0, 30 + GUARD + 1), timeout=TIMEOUT).back == []


def test_unbroken_heartbeats_for_the_guard__bring_it_back(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    silent_down(north, t0)
    beats(north, at(t0, 30), GUARD - 1)
    assert notifier_tick(now=at(t0, 30 + GUARD - 1), timeout=TIMEOUT).back == []
    beat(north, at(t0, 30 + GUARD + 1))
    assert notifier_tick(now=at(t0, 30 + GUARD + 1), timeout=TIMEOUT).back == ["north"]
    assert state_of(north) == OutletState.ACTIVE


def test_manager_mark_down__holds_while_the_agent_heartbeats_and_after_it_restarts(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    outlet_mark_down(outlet=north)
    beats(north, t0, 60)  # the agent keeps heartbeating
    assert notifier_tick(now=at(t0, 60), timeout=TIMEOUT).back == []
    # The agent restarts: silent past the timeout, then heartbeats again for a minute.
    beats(north, at(t0, 100), 60)
    assert notifier_tick(now=at(t0, 160), timeout=TIMEOUT).back == []
    assert state_of(north) == OutletState.DOWN

    outlet_activate(outlet=north)  # a manager's word undoes a manager's word
    assert state_of(north) == OutletState.ACTIVE


def test_manager_mark_down__of_a_silent_outlet_holds_too(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    silent_down(north, t0)
    assert outlet_mark_down(outlet=north) == ([], [])
    beats(north, at(t0, 30), 60)
    assert notifier_tick(now=at(t0, 90), timeout=TIMEOUT).back == []
    assert state_of(north) == OutletState.DOWN


def test_draining_outlet__that_goes_down_comes_back_draining(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    north, _ = make_outlet("north")
    south, _ = make_outlet("south")
    outlet_drain(outlet=north)
    beat(south, at(t0, 18))
    silent_down(north, t0)
    beats(north, at(t0, 30), GUARD + 1)
    beats(south, at(t0, 30), GUARD + 1)
    assert notifier_tick(now=at(t0, 30 + GUARD + 1), timeout=TIMEOUT).back == ["north"]
    assert state_of(north) == OutletState.DRAINING
    back = OrderEvent.objects.filter(type="outlet", outlet=north).latest("id")
    assert (back.state, back.detail["action"]) == ("draining", "back")
    assert place(zone="z1").outlet_id == south.pk  # still takes no new orders


def test_new_outlet__takes_no_orders_until_its_heartbeats_prove_it(
    db: None, timings: Any, t0: datetime
) -> None:
    north, _ = outlet_create(slug="north")
    assert north.state == OutletState.DOWN
    assert place(zone="z1").outlet_id is None  # waits: no outlet has proved itself
    with pytest.raises(Exception, match="not taking orders|unavailable"):
        place("takeaway", outlet=north)

    beats(north, t0, GUARD - 1)
    assert notifier_tick(now=at(t0, GUARD - 1), timeout=TIMEOUT).back == []
    beat(north, at(t0, GUARD + 1))
    report = notifier_tick(now=at(t0, GUARD + 1), timeout=TIMEOUT)
    assert report.back == ["north"] and report.assigned == 1
    assert state_of(north) == OutletState.ACTIVE
    assert place(zone="z2").outlet_id == north.pk


def test_new_outlet__is_not_taken_down_again_nor_a_mass_silence(
    make_outlet: MakeOutlet, timings: Any, t0: datetime
) -> None:
    """A new outlet waiting for its agent is down already: its silence alarms nobody."""
    south, _ = make_outlet("south")
    outlet_create(slug="north")
    beat(south, at(t0, 20))
    report = notifier_tick(now=at(t0, 20), timeout=TIMEOUT)
    assert report.down == [] and report.alert == ""
