"""The queue as a state machine: hypothesis interleaves every kind of step against PostgreSQL.

Steps: place, claim, ready, complete, renew, heartbeat (time passing), silence,
rejoin, notifier tick, a zombie write with an old fence, drain, retire, mark
down. After every step the four invariants are checked over the database
(tests/chaos/invariants.py), plus what the model knows: every write acting on a
claim succeeds exactly when its fence is the order's current one and changes
nothing otherwise, only outlets that stopped heartbeating are declared down, and
only orders of outlets that are down or draining (or whose lease ran out) move.

Time is a clock the test moves. Heartbeats and ticks are given it; a claim's
lease is asked for relative to the real database clock so that it ends where the
test's clock says it should. A failing run shrinks to the shortest sequence of
steps that breaks a rule: that sequence is the bug report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from queueing.errors import (
    InvalidState,
    NotFound,
    OutletNotEmpty,
    OutletUnavailable,
    QueueError,
    StaleFence,
)
from queueing.models import Order, Outlet, OutletState
from queueing.services import (
    lease_renew,
    order_claim_next,
    order_complete,
    order_enqueue,
    order_mark_ready,
    outlet_create,
    outlet_drain,
    outlet_heartbeat,
    outlet_mark_down,
    outlet_retire,
)
from queueing.services.failover import database_now, notifier_tick
from queueing.services.outlets import outlet_activate
from tests.chaos.invariants import check_invariants

TIMEOUT = 10.0
LEASE = 30.0
FLAP_GUARD = 2.0
FLAP_GUARD_BEATS = 2
SLUGS = ("o1", "o2", "o3", "o4")
ZONES = ("harbour", "hill", "market", "mill", "park", "quay")
TABLES = (
    "queueing_orderevent, queueing_heartbeat, queueing_order, queueing_outlet, "
    "queueing_notifierstatus"
)

Row = tuple[int | None, str, int, datetime | None]  # outlet, state, fence, lease_expires_at


def orders_now() -> dict[int, Row]:
    return {
        pk: (outlet, state, fence, lease)
        for pk, outlet, state, fence, lease in Order.objects.values_list(
            "id", "outlet_id", "state", "fence", "lease_expires_at"
        )
    }


def outlet_states() -> dict[int, str]:
    return dict(Outlet.objects.values_list("id", "state"))


class QueueMachine(RuleBasedStateMachine):
    @initialize()
    def fresh_database(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        self.now = database_now()
        self.outlets = [
            outlet_create(slug=slug, weight=2 if slug == "o3" else 1)[0] for slug in SLUGS
        ]
        for outlet in self.outlets:  # a manager vouches for each: they take orders at once
            outlet_activate(outlet=outlet)
        self.silent: set[int] = set()
        self.last_beat: dict[int, datetime] = {}
        self.accepted: list[str] = []
        self.claims: list[tuple[int, str, int, int]] = []  # order id, token, fence, outlet id
        self.back_since: dict[int, datetime] = {}  # down outlets heartbeating again, since when
        self.back_beats: dict[int, int] = {}  # and how many heartbeats that run holds
        self.held: set[int] = set()  # marked down by a manager: no heartbeat brings them back
        self.resume: dict[int, str] = {}  # what a down outlet comes back as
        self._beat_all()

    # --- time and heartbeats -----------------------------------------------

    def _beat(self, outlet: Outlet) -> None:
        try:
            row = outlet_heartbeat(outlet=outlet, source="machine", now=self.now, timeout=TIMEOUT)
        except InvalidState:  # retired
            return
        last = self.last_beat.get(outlet.pk)
        if row["state"] != OutletState.DOWN:
            self.back_since.pop(outlet.pk, None)
        elif (
            outlet.pk not in self.back_since
            or last is None
            or (self.now - last).total_seconds() > TIMEOUT
        ):
            self.back_since[outlet.pk] = self.now  # a return after a silence: the guard starts
            self.back_beats[outlet.pk] = 1
        else:
            self.back_beats[outlet.pk] += 1
        self.last_beat[outlet.pk] = self.now

    def _beat_all(self) -> None:
        for outlet in self.outlets:
            if outlet.pk not in self.silent:
                self._beat(outlet)

    def _lease(self) -> float:
        # The claim's lease counts from the real now(); ask for one that ends at our now + LEASE.
        return LEASE + (self.now - database_now()).total_seconds()

    @rule(
        seconds=st.sampled_from([1, 4, 6, 11, 31]),
        may_declare_down=st.sampled_from([True, True, True, False]),
    )
    def time_passes(self, seconds: int, may_declare_down: bool) -> None:
        """Time passes: every outlet that is not silenced heartbeats, and the notifier ticks."""
        self.now += timedelta(seconds=seconds)
        self._beat_all()
        self.notifier_ticks(may_declare_down)

    @rule(i=st.integers(0, len(SLUGS) - 1))
    def silence(self, i: int) -> None:
        self.silent.add(self.outlets[i].pk)

    @rule(i=st.integers(0, len(SLUGS) - 1))
    def rejoin(self, i: int) -> None:
        self.silent.discard(self.outlets[i].pk)
        self._beat(self.outlets[i])

    # --- customers and kitchens -----------------------------------------------

    @rule(zone=st.sampled_from(ZONES))
    def place_delivery(self, zone: str) -> None:
        ticket = order_enqueue(
            kind="delivery",
            lines=[{"item": "cola", "name": "Cola", "qty": 1, "note": "", "prep_seconds": 10}],
            customer={"name": "Ada", "address": "1 Loop Lane"},
            prep_seconds=10,
            quick=True,
            zone=zone,
        )
        active = {pk for pk, s in outlet_states().items() if s == OutletState.ACTIVE}
        assert ticket.outlet_id in active or (ticket.outlet_id is None and not active)
        self.accepted.append(ticket.token)

    @rule(i=st.integers(0, len(SLUGS) - 1))
    def place_takeaway(self, i: int) -> None:
        outlet = Outlet.objects.get(pk=self.outlets[i].pk)
        try:
            ticket = order_enqueue(
                kind="takeaway",
                lines=[{"item": "cola", "name": "Cola", "qty": 1, "note": "", "prep_seconds": 10}],
                customer={"name": "Bo"},
                prep_seconds=10,
                quick=True,
                outlet=outlet,
            )
        except OutletUnavailable:
            assert outlet.state != OutletState.ACTIVE
            return
        assert outlet.state == OutletState.ACTIVE and ticket.outlet_id == outlet.pk
        self.accepted.append(ticket.token)

    @rule(i=st.integers(0, len(SLUGS) - 1), limit=st.integers(1, 3))
    def claim(self, i: int, limit: int) -> None:
        outlet = self.outlets[i]
        # A ready order whose holder's lease ran out waits at the pass without a holder
        # (``ready`` leases from the real now, which is behind this model's clock): the
        # next claim hands it over, still ready, under a new fence.
        at_the_pass = set(
            Order.objects.filter(outlet=outlet, state="ready", claimed_by="").values_list(
                "id", flat=True
            )
        )
        for ticket in order_claim_next(
            outlet=outlet, station=f"{outlet.slug}-1", limit=limit, lease=self._lease()
        ):
            assert ticket.outlet_id == outlet.pk
            assert ticket.state == "preparing" or (
                ticket.state == "ready" and ticket.id in at_the_pass
            ), ticket
            assert (ticket.id, ticket.fence) not in {(c[0], c[2]) for c in self.claims}
            self.claims.append((ticket.id, ticket.token, ticket.fence, outlet.pk))

    def _fenced(self, pick: int, action: str) -> None:
        order_id, token, fence, outlet_id = self.claims[pick % len(self.claims)]
        before = Order.objects.get(pk=order_id)
        outlet = Outlet.objects.get(pk=outlet_id)
        valid_states = {"ready": ["preparing"], "renew": ["preparing", "ready"]}.get(
            action, ["preparing", "ready"]
        )
        valid = before.fence == fence and before.state in valid_states
        call: Any = {"ready": order_mark_ready, "complete": order_complete, "renew": lease_renew}[
            action
        ]
        kwargs: dict[str, Any] = {"token": token, "fence": fence, "outlet": outlet}
        if action == "renew":
            kwargs["lease"] = self._lease()
        try:
            call(**kwargs)
        except QueueError as exc:
            assert not valid, f"{action} of a valid claim was refused: {exc}"
            if before.fence != fence:
                # Stale at its own outlet; another outlet's order is "not found" to this
                # one, which learns nothing about it (not even that its fence moved on).
                expected = StaleFence if before.outlet_id == outlet_id else NotFound
                assert isinstance(exc, expected), exc
            after = Order.objects.get(pk=order_id)
            assert (after.state, after.fence, after.outlet_id, after.lease_expires_at) == (
                before.state,
                before.fence,
                before.outlet_id,
                before.lease_expires_at,
            ), "a refused write changed the order"
            return
        assert valid, (
            f"{action} with fence {fence} succeeded on {before.state} fence {before.fence}"
        )

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 10**6))
    def ready(self, pick: int) -> None:
        self._fenced(pick, "ready")

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 10**6))
    def complete(self, pick: int) -> None:
        self._fenced(pick, "complete")

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 10**6))
    def renew(self, pick: int) -> None:
        self._fenced(pick, "renew")

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 10**6), action=st.sampled_from(["ready", "complete", "renew"]))
    def zombie_write(self, pick: int, action: str) -> None:
        """A station that lost its claim (moved, expired) tries to act on it anyway."""
        current = dict(Order.objects.values_list("id", "fence"))
        stale = [n for n, c in enumerate(self.claims) if current[c[0]] != c[2]]
        if stale:
            self._fenced(stale[pick % len(stale)], action)

    # --- managers and the notifier ------------------------------------------------

    @rule(i=st.integers(0, len(SLUGS) - 1), move=st.booleans())
    def drain(self, i: int, move: bool) -> None:
        outlet = self.outlets[i]
        state = Outlet.objects.get(pk=outlet.pk).state
        before = orders_now()
        try:
            moved = outlet_drain(outlet=outlet, move_queued=move)
        except InvalidState:
            assert state not in (OutletState.ACTIVE, OutletState.DRAINING)
            return
        after = orders_now()
        changed = {pk for pk in before if before[pk][0] != after[pk][0]}
        assert changed == {t.id for t in moved}
        for pk in changed:
            assert before[pk][0] == outlet.pk and before[pk][1] == "queued", (pk, before[pk])

    @rule(i=st.integers(0, len(SLUGS) - 1))
    def retire(self, i: int) -> None:
        outlet = self.outlets[i]
        open_orders = Order.objects.filter(
            outlet=outlet, state__in=["queued", "preparing", "ready"]
        ).count()
        state = Outlet.objects.get(pk=outlet.pk).state
        try:
            outlet_retire(outlet=outlet)
        except OutletNotEmpty:
            assert open_orders and state != OutletState.RETIRED
            return
        except InvalidState:
            assert state == OutletState.RETIRED
            return
        assert open_orders == 0

    @rule(i=st.integers(0, len(SLUGS) - 1))
    def mark_down(self, i: int) -> None:
        outlet = self.outlets[i]
        state = Outlet.objects.get(pk=outlet.pk).state
        before = orders_now()
        try:
            outlet_mark_down(outlet=outlet)
        except InvalidState:
            assert state in (OutletState.DOWN, OutletState.RETIRED)
            return
        self.held.add(outlet.pk)  # a manager's mark-down holds, whatever heartbeats
        if state != OutletState.DOWN:
            self.resume[outlet.pk] = state
            self.back_since.pop(outlet.pk, None)
        self._only_these_moved(before, {outlet.pk}, lease_check=False)

    @rule(may_declare_down=st.sampled_from([True, True, True, False]))
    def notifier_ticks(self, may_declare_down: bool) -> None:
        states_before = outlet_states()
        before = orders_now()
        report = notifier_tick(now=self.now, may_declare_down=may_declare_down, timeout=TIMEOUT)
        states = outlet_states()
        cutoff = self.now - timedelta(seconds=TIMEOUT)
        by_slug = {o.slug: o.pk for o in self.outlets}
        for slug in report.down:
            pk = by_slug[slug]
            assert may_declare_down, f"{slug} declared down during the grace"
            assert pk in self.silent and self.last_beat[pk] < cutoff, f"{slug} was heartbeating"
        # A tick that raises the alert holds every silent outlet, and so does the one that
        # clears it (the rest of a mass silence is not a minority that died); either way
        # the notifier then waits a timeout before it declares anyone down.
        if report.alert or report.alert_cleared:
            assert not report.down, "an alert (or its clearing) holds every silent outlet"
        if may_declare_down and not report.alert and not report.alert_cleared:
            for pk, last in self.last_beat.items():
                if states_before[pk] in ("active", "draining") and last < cutoff:
                    assert states[pk] == OutletState.DOWN, f"outlet {pk} silent but not down"
        for slug in report.down:
            self.back_since.pop(by_slug[slug], None)
            self.resume[by_slug[slug]] = states_before[by_slug[slug]]
        # The flap guard: back only after heartbeating without a break for the guard, at
        # least FLAP_GUARD_BEATS times, never when a manager marked it down; then back at
        # the first tick, as what it was (a drained outlet comes back draining).
        guard = timedelta(seconds=FLAP_GUARD)
        for pk, since in list(self.back_since.items()):
            due = (
                states_before[pk] == OutletState.DOWN
                and pk not in self.held
                and since < self.now - guard
                and self.back_beats[pk] >= FLAP_GUARD_BEATS
                and self.last_beat[pk] >= cutoff
            )
            back = states_before[pk] == OutletState.DOWN and states[pk] != OutletState.DOWN
            assert back == due, (pk, since, self.now, states[pk])
            if due:
                assert states[pk] == self.resume.get(pk, OutletState.ACTIVE), (pk, states[pk])
                del self.back_since[pk]
        for slug in report.back:
            assert states_before[by_slug[slug]] == OutletState.DOWN
        gone = {pk for pk, s in states.items() if s in ("down", "retired")}
        self._only_these_moved(before, gone, lease_check=may_declare_down)

    def _only_these_moved(
        self, before: dict[int, Row], gone: set[int], *, lease_check: bool
    ) -> None:
        """Invariant 3 for this step: orders changed outlet only off outlets in ``gone``,
        off no outlet (waiting), or because their lease had run out."""
        after = orders_now()
        for pk, (outlet, state, _fence, lease) in before.items():
            if after[pk][0] == outlet:
                continue
            ok = (
                outlet is None
                or outlet in gone
                or (lease_check and state == "preparing" and lease is not None and lease < self.now)
            )
            assert ok, f"order {pk} moved off live outlet {outlet} ({state}, lease {lease})"

    # --- after every step -----------------------------------------------------

    @invariant()
    def the_four_invariants_hold(self) -> None:
        if hasattr(self, "now"):
            check_invariants(accepted=self.accepted, finished=False, verbose=False)


@pytest.mark.django_db(transaction=True)
def test_queue_state_machine(settings_override: None) -> None:
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture
def settings_override(settings: Any) -> None:
    settings.HEARTH_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.HEARTH_LEASE_SECONDS = LEASE
    settings.HEARTH_FLAP_GUARD = FLAP_GUARD
    settings.HEARTH_FLAP_GUARD_BEATS = FLAP_GUARD_BEATS
    settings.HEARTH_MAX_ATTEMPTS = 3
