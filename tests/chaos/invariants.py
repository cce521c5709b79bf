"""The four invariants of the architecture, checked over the whole database after a chaos run.

1. Nothing accepted is lost: every order that got a 2xx exists (and, at the end
   of a run, has finished: completed, cancelled with a reason, or made and ready
   at an outlet that died before it was picked up).
2. Nothing is made twice: at most one "made" record per order in the agents'
   made-logs, and a completed order's record carries the fence and outlet the
   order completed with; one "completed" event per completed order.
3. Only the dead outlet's orders move: every reroute away from an outlet happened
   while that outlet was down or draining, or because the claim's lease ran out;
   takeaway orders never change outlet.
4. Screens converge: each order's events replay to exactly its row (state,
   outlet, fence), through allowed transitions only, so a screen that resumes
   from any event id ends on the database's state.

``check_invariants`` raises AssertionError naming every violation, and returns
the counts it printed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection

from lab.checker import FENCE_BUMPS, TRANSITIONS

# The transitions and fence rules are the nemesis checker's (one table for both).
FINISHED = {"completed", "cancelled"}


@dataclass
class Counts:
    orders: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    made: int = 0
    accepted: int = 0
    moved_orders: int = 0
    stranded_ready: int = 0
    unrecorded: int = 0

    def line(self) -> str:
        return (
            f"{self.orders} orders ({dict(self.by_kind)}), accepted {self.accepted}, "
            f"states {dict(sorted(self.by_state.items()))}, made {self.made}, "
            f"moved {self.moved_orders}, ready at a dead outlet {self.stranded_ready}, "
            f"completed by a SIGKILLed agent before it logged {self.unrecorded}, "
            f"events {dict(sorted(self.events.items()))}"
        )


def read_made_logs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every line of the agents' made-logs."""
    records = []
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return records


def _rows(statement: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        names = [c.name for c in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def check_invariants(
    *,
    accepted: Iterable[str] = (),
    made: list[dict[str, Any]] | None = None,
    finished: bool = True,
    killed: Iterable[str] = (),
    label: str = "",
    verbose: bool = True,
) -> Counts:
    """Check the four invariants over the database; raise AssertionError listing every violation."""
    problems: list[str] = []
    accepted = set(accepted)
    outlets = {r["id"]: r for r in _rows("SELECT id, slug, state FROM queueing_outlet")}
    orders = {
        r["token"]: r
        for r in _rows(
            "SELECT id, token, kind, state, outlet_id, fence, cancel_reason FROM queueing_order"
        )
    }
    by_id = {o["id"]: o for o in orders.values()}
    events = _rows(
        "SELECT id, order_id, type, state, outlet_id, from_outlet_id, fence, detail "
        "FROM queueing_orderevent ORDER BY id"
    )
    counts = Counts(orders=len(orders), accepted=len(accepted))
    counts.by_state.update(o["state"] for o in orders.values())
    counts.by_kind.update(o["kind"] for o in orders.values())
    counts.events.update(e["type"] for e in events)

    # 1. Nothing accepted is lost.
    missing = sorted(accepted - set(orders))
    if missing:
        problems.append(f"{len(missing)} accepted orders are missing: {missing[:5]}")
    if finished:
        for token in sorted(accepted & set(orders)):
            order = orders[token]
            if order["state"] in FINISHED:
                if order["state"] == "cancelled" and not order["cancel_reason"]:
                    problems.append(f"order {order['id']} was cancelled without a reason")
                continue
            outlet = outlets.get(order["outlet_id"] or -1)
            if order["state"] == "ready" and outlet and outlet["state"] in ("down", "retired"):
                counts.stranded_ready += 1  # a dark outlet's ready orders move: none may stay
            problems.append(
                f"order {order['id']} ({order['kind']}) did not finish: {order['state']} at "
                f"{outlet['slug'] if outlet else 'no outlet'}"
            )

    # 2. Nothing is made twice.
    if made is not None:
        counts.made = len(made)
        per_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in made:
            per_order[record["order"]].append(record)
        for token, records in per_order.items():
            order = orders.get(token)
            if order is None:
                problems.append(f"made-log names an unknown order {token}")
                continue
            if len(records) > 1:
                problems.append(f"order {order['id']} was made {len(records)} times: {records}")
            record = records[-1]
            slug = outlets[order["outlet_id"]]["slug"] if order["outlet_id"] else None
            if order["state"] != "completed":
                problems.append(
                    f"order {order['id']} is in the made-log but {order['state']} in the database"
                )
            elif (record["fence"], record["outlet"]) != (order["fence"], slug):
                problems.append(
                    f"order {order['id']} was made with fence {record['fence']} at "
                    f"{record['outlet']} but completed with fence {order['fence']} at {slug}"
                )
        # An agent killed with SIGKILL between the server's commit and its own log
        # line leaves a completed order with no record: allowed only at its outlet.
        killed_ids = {pk for pk, o in outlets.items() if o["slug"] in set(killed)}
        for order in orders.values():
            if order["state"] == "completed" and order["token"] not in per_order:
                if order["outlet_id"] in killed_ids:
                    counts.unrecorded += 1
                    continue
                problems.append(f"order {order['id']} completed but no agent recorded making it")
    completed_events = Counter(e["order_id"] for e in events if e["type"] == "completed")
    recalled = {e["order_id"] for e in events if e["type"] == "recalled"}
    for order_id, n in completed_events.items():
        if n > 1 and order_id not in recalled:
            problems.append(f"order {order_id} has {n} completed events")

    # 3. Only the dead outlet's orders move; 4. events replay to the row.
    outlet_state: dict[int, str] = {}
    replay: dict[int, dict[str, Any]] = {}
    moved: set[int] = set()
    for event in events:
        if event["order_id"] is None:
            if event["type"] == "outlet" and event["outlet_id"] is not None:
                outlet_state[event["outlet_id"]] = event["state"]
            continue
        oid = event["order_id"]
        order = by_id.get(oid)
        if order is None:
            problems.append(f"event {event['id']} names a missing order {oid}")
            continue
        before = replay.get(oid)
        kind = event["type"]
        rule = TRANSITIONS.get(kind)
        prev_state = before["state"] if before else None
        if rule is None:
            problems.append(f"event {event['id']}: unknown type {kind!r} (teach the checker)")
        elif prev_state not in rule[0] or event["state"] not in rule[1]:
            problems.append(
                f"order {oid}: event {event['id']} {kind} went {prev_state} -> {event['state']}"
            )
        if before is not None:
            if event["fence"] < before["fence"] or (
                kind in FENCE_BUMPS and event["fence"] <= before["fence"]
            ):
                problems.append(
                    f"order {oid}: event {event['id']} {kind} fence {before['fence']} -> "
                    f"{event['fence']}"
                )
            if event["outlet_id"] != before["outlet_id"]:
                moved.add(oid)
                source = before["outlet_id"]
                if order["kind"] == "takeaway":
                    problems.append(f"takeaway order {oid} changed outlet (event {event['id']})")
                elif event["from_outlet_id"] != source:
                    problems.append(
                        f"order {oid}: event {event['id']} says it came from "
                        f"{event['from_outlet_id']} but it was at {source}"
                    )
                elif source is not None and kind != "lease_expired":
                    state = outlet_state.get(source)
                    if state not in ("down", "draining"):
                        problems.append(
                            f"order {oid} moved off {outlets[source]['slug']} (event "
                            f"{event['id']} {kind}) while that outlet was {state}"
                        )
                elif kind == "lease_expired" and prev_state not in ("preparing", "ready"):
                    problems.append(f"order {oid}: lease expired while it was {prev_state}")
        replay[oid] = {
            "state": event["state"],
            "outlet_id": event["outlet_id"],
            "fence": event["fence"],
        }
    counts.moved_orders = len(moved)
    for order in orders.values():
        last = replay.get(order["id"])
        now = {"state": order["state"], "outlet_id": order["outlet_id"], "fence": order["fence"]}
        if last != now:
            problems.append(f"order {order['id']}: events replay to {last}, the row is {now}")

    if verbose:
        print(f"invariants{' ' + label if label else ''}: {counts.line()}")
    if problems:
        shown = "\n  ".join(problems[:25])
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        raise AssertionError(f"{len(problems)} invariant violations:\n  {shown}{more}")
    return counts
