"""Outlet state changes from several processes at once: a manager and the notifier, two managers."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from queueing.models import Order, OrderState, Outlet, OutletState
from queueing.services import outlet_mark_down
from tests.orders import place

MakeOutlet = Callable[..., tuple[Outlet, str]]


@pytest.mark.django_db(transaction=True)
def test_mark_down__two_outlets_at_once__both_go_down_without_deadlock(
    make_outlet: MakeOutlet,
) -> None:
    # Each outlet's orders can only move to the other outlets, including the one
    # going down beside it: without serialising, each take-down holds its own
    # outlet row and waits for the other's (moving an order onto an outlet takes a
    # key-share lock on it), and PostgreSQL aborts one as a deadlock.
    for round_ in range(5):
        outlets = [make_outlet(f"r{round_}o{i}")[0] for i in range(4)]
        for n in range(120):
            place(zone=f"z{n}")
        victims = outlets[:2]
        barrier = threading.Barrier(len(victims))
        errors: list[BaseException] = []

        def take_down(
            outlet: Outlet,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait(5)
                outlet_mark_down(outlet=outlet, reason="planned outage")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=take_down, args=(o,)) for o in victims]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert set(
            Outlet.objects.filter(pk__in=[o.pk for o in victims]).values_list("state", flat=True)
        ) == {OutletState.DOWN}
        stranded = Order.objects.filter(
            outlet__in=victims, state__in=[OrderState.QUEUED, OrderState.PREPARING]
        ).count()
        assert stranded == 0
        for o in outlets[2:]:
            outlet_mark_down(outlet=o, reason="end of round")
