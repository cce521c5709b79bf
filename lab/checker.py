"""The checker: pure functions from a recorded chaos history to the invariants it breaks.

A history is plain data (it is saved as JSON next to the run's logs):

- ``answers``: every answer to a customer's POST /api/orders — ``{at, status, token, error}``
  (``status`` None when no answer came: a timeout or a reset);
- ``events``: every row of ``queueing_orderevent``, oldest id first, in the sockets' shape
  (``{id, type, order, kind, state, outlet, from_outlet, fence, detail}``, slugs and tokens);
- ``orders`` and ``outlets``: the tables at the end (``token, kind, state, outlet, fence,
  cancel_reason`` / ``slug, state``);
- ``made``: the agents' made-logs (``{order, fence, outlet, at}``);
- ``cook``: the cook's log (``{at, action, token, fence, status, error, epoch}``);
- ``faults``: what the nemesis did (``{at, until, kind, target}``) and ``cook_depends``, the
  fault targets that may take a ticket from the cook without any defect;
- ``screens``: each open screen's final view (``lab.screens.Screen.view``).

``check(history)`` returns ``{invariant: [violation, ...]}`` for every invariant, empty
lists when it holds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

INVARIANTS = {
    "lost": "every order answered 202 exists",
    "unfinished": "every order answered 202 ends completed, or cancelled with a reason",
    "made_twice": "no order is completed twice (made-logs, the cook, completed events)",
    "stale_fence": "every accepted ready/complete matches the order's fence at that time",
    "live_moved": "no order moves off an outlet that was not declared down (or whose lease ran)",
    "event_log": "each order's events are allowed transitions and replay to its row",
    "screens": "every open screen ends equal to the table",
    "held_claim": "a ticket stays with a cook whose screen stayed connected and unfaulted",
    "takeover": "a standby notifier takes over from a frozen or stalled leader in time",
}

# event type -> (states the order may be in before it, the state it leaves the order in)
TRANSITIONS: dict[str, tuple[set[str | None], set[str]]] = {
    "placed": ({None}, {"queued"}),
    "waiting": ({None, "queued", "preparing", "ready"}, {"queued"}),
    # A ready order that lost its holder is handed over by the next claim: it stays ready.
    "claimed": ({"queued", "ready"}, {"preparing", "ready"}),
    "ready": ({"preparing"}, {"ready"}),
    # A manager hands over (completes) or sends on an order set aside for attention.
    "completed": ({"preparing", "ready", "attention"}, {"completed"}),
    "recalled": ({"completed"}, {"ready"}),
    "rerouted": ({"queued", "preparing", "ready", "attention"}, {"queued"}),
    "lease_expired": ({"preparing", "ready"}, {"queued", "ready"}),
    "released": ({"preparing", "ready"}, {"queued", "ready"}),
    "cancelled": ({"queued", "preparing", "ready", "attention"}, {"cancelled"}),
    "attention": ({"preparing", "queued"}, {"attention"}),
}
# Events that hand the order to a new claim or a new outlet: the fence must grow.
FENCE_BUMPS = {
    "claimed",
    "rerouted",
    "lease_expired",
    "released",
    "waiting",
    "cancelled",
    "attention",
}
FENCED_WRITES = {"ready", "completed"}
DOWN = {"down", "draining", "retired"}


def check(history: dict[str, Any]) -> dict[str, list[str]]:
    """Every invariant of ``INVARIANTS`` with the violations found in ``history``."""
    found: dict[str, list[str]] = {name: [] for name in INVARIANTS}
    orders = {o["token"]: o for o in history.get("orders", [])}
    accepted = [a["token"] for a in history.get("answers", []) if a.get("status") == 202]
    _finished(found, accepted, orders)
    timeline = _replay(found, history.get("events", []), orders)
    _made_once(found, history, timeline)
    _fenced(found, history, timeline)
    _screens(found, history, orders)
    _held(found, history, timeline)
    _takeover(found, history)
    return found


def failed(verdict: dict[str, list[str]]) -> list[str]:
    return [name for name, problems in verdict.items() if problems]


def report(verdict: dict[str, list[str]], *, limit: int = 8) -> str:
    """The verdict as text: one line per invariant, then the first violations of each."""
    lines = []
    for name, problems in verdict.items():
        mark = "ok  " if not problems else "FAIL"
        lines.append(
            f"{mark} {name}: {INVARIANTS[name]}" + (f" ({len(problems)})" if problems else "")
        )
        for problem in problems[:limit]:
            lines.append(f"       - {problem}")
        if len(problems) > limit:
            lines.append(f"       - ... and {len(problems) - limit} more")
    return "\n".join(lines)


# --- the invariants ---------------------------------------------------------------------


def _finished(found: dict[str, list[str]], accepted: list[str], orders: dict[str, Any]) -> None:
    for token in accepted:
        order = orders.get(token)
        if order is None:
            found["lost"].append(f"order {token} was answered 202 and does not exist")
        elif order["state"] == "cancelled" and not order.get("cancel_reason"):
            found["unfinished"].append(f"order {_name(order)} was cancelled without a reason")
        elif order["state"] not in ("completed", "cancelled"):
            found["unfinished"].append(
                f"order {_name(order)} ({order['kind']}) ended {order['state']} at "
                f"{order['outlet'] or 'no outlet'}"
            )


def _replay(
    found: dict[str, list[str]], events: list[dict[str, Any]], orders: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Check transitions, fences and moves event by event; returns each order's events."""
    outlet_state: dict[str, str] = {}
    last: dict[str, dict[str, Any]] = {}
    timeline: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["id"]):
        token = event.get("order")
        if not token:
            if event["type"] == "outlet" and event.get("outlet"):
                outlet_state[event["outlet"]] = event["state"]
            continue
        before = last.get(token)
        kind = event["type"]
        rule = TRANSITIONS.get(kind)
        prev_state = before["state"] if before else None
        where = f"order {event.get('number') or token}: event {event['id']} {kind}"
        if rule is not None and (prev_state not in rule[0] or event["state"] not in rule[1]):
            found["event_log"].append(f"{where} went {prev_state} -> {event['state']}")
        if before is not None:
            if event["fence"] < before["fence"] or (
                kind in FENCE_BUMPS and event["fence"] <= before["fence"]
            ):
                found["event_log"].append(f"{where} fence {before['fence']} -> {event['fence']}")
            if kind in FENCED_WRITES and event["fence"] != before["fence"]:
                found["stale_fence"].append(
                    f"{where} written under fence {event['fence']} while the order's was "
                    f"{before['fence']}"
                )
            source = before["outlet"]
            if event["outlet"] != source and source is not None:
                if event.get("kind") == "takeaway":
                    found["live_moved"].append(f"{where}: a takeaway order changed outlet")
                elif kind != "lease_expired" and outlet_state.get(source) not in DOWN:
                    found["live_moved"].append(
                        f"{where} moved it off {source} while {source} was "
                        f"{outlet_state.get(source, 'never declared down')}"
                    )
        last[token] = event
        timeline[token].append(event)
    for token, order in orders.items():
        final = last.get(token)
        row = (order["state"], order["outlet"], order["fence"])
        seen = (final["state"], final["outlet"], final["fence"]) if final else None
        if seen != row:
            found["event_log"].append(
                f"order {_name(order)}: events replay to {seen}, the row is {row}"
            )
    return timeline


def _made_once(
    found: dict[str, list[str]],
    history: dict[str, Any],
    timeline: dict[str, list[dict[str, Any]]],
) -> None:
    makers: dict[str, list[str]] = defaultdict(list)
    for line in history.get("made", []):
        makers[line["order"]].append(f"agent {line['outlet']} fence {line['fence']}")
    for record in history.get("cook", []):
        if record.get("action") == "complete" and record.get("status") == 200:
            makers[record["token"]].append(f"cook fence {record['fence']}")
    for token, who in makers.items():
        if len(who) > 1:
            found["made_twice"].append(f"order {token} was made {len(who)} times: {who}")
    for token, events in timeline.items():
        completions = 0
        for event in events:
            if event["type"] == "completed":
                completions += 1
            elif event["type"] == "recalled":
                completions -= 1
        if completions > 1:
            found["made_twice"].append(f"order {token} has {completions} completions in its log")


def _fenced(
    found: dict[str, list[str]],
    history: dict[str, Any],
    timeline: dict[str, list[dict[str, Any]]],
) -> None:
    """Each acknowledged write names an event of its kind under the fence it was sent with."""
    writes = [
        ("completed", line["order"], line["fence"], "agent") for line in history.get("made", [])
    ]
    for record in history.get("cook", []):
        if record.get("action") in ("ready", "complete") and record.get("status") == 200:
            kind = "ready" if record["action"] == "ready" else "completed"
            writes.append((kind, record["token"], record["fence"], "cook"))
    for kind, token, fence, who in writes:
        logged = {(e["type"], e["fence"]) for e in timeline.get(token, [])}
        if (kind, fence) not in logged:
            found["stale_fence"].append(
                f"the {who}'s {kind} of order {token} under fence {fence} was acknowledged, but "
                f"the log has {sorted(f for t, f in logged if t == kind) or 'no such event'}"
            )


def _screens(found: dict[str, list[str]], history: dict[str, Any], orders: dict[str, Any]) -> None:
    outlets = {o["slug"]: o["state"] for o in history.get("outlets", [])}
    for view in history.get("screens", []):
        name = view["screen"]
        if not view.get("live"):
            found["screens"].append(f"screen {name} was not connected at the end")
        parts = view["path"].strip("/").split("/")  # ws, kitchen|orders, slug|token
        shown = {t: tuple(v) for t, v in view["orders"].items()}
        if parts[1] == "kitchen":
            slug = parts[2]
            tokens = {t for t, o in orders.items() if o["outlet"] == slug}
            tokens |= {t for t, v in shown.items() if v[1] == slug}
            if slug in view["outlets"] and view["outlets"][slug] != outlets.get(slug):
                found["screens"].append(
                    f"screen {name} shows outlet {slug} {view['outlets'][slug]}, the table "
                    f"{outlets.get(slug)}"
                )
        else:
            tokens = {parts[2]}
        for token in sorted(tokens):
            order = orders.get(token)
            row = (order["state"], order["outlet"], order["fence"]) if order else None
            if shown.get(token) != row:
                found["screens"].append(
                    f"screen {name} shows order {token} as {shown.get(token)}, the table {row}"
                )


def _held(
    found: dict[str, list[str]],
    history: dict[str, Any],
    timeline: dict[str, list[dict[str, Any]]],
) -> None:
    """A ticket taken from a cook whose screen stayed open, with no fault near the cook.

    A ticket that moved because its outlet was declared down is not counted here
    (``live_moved`` judges that): this is about a claim taken from its living holder.
    """
    depends = set(history.get("cook_depends", []))
    windows = [f for f in history.get("faults", []) if f["target"] in depends]
    started: dict[str, dict[str, Any]] = {}
    for record in history.get("cook", []):
        action, token = record.get("action"), record.get("token")
        if action == "next" and record.get("status") == 200 and token:
            started[token] = record
        elif action == "ready" and token in started and record.get("status") == 409:
            start = started.pop(token)
            if start.get("epoch") != record.get("epoch"):
                continue  # the socket dropped while it cooked: the screen was gone a while
            if any(f["at"] <= record["at"] and f["until"] >= start["at"] for f in windows):
                continue  # a fault near the cook: the ticket may move without any defect
            taken = next(
                (e for e in timeline.get(token, []) if e["fence"] > (start.get("fence") or 0)),
                None,
            )
            if taken is not None and taken["type"] == "rerouted":
                continue
            held = record["at"] - start["at"]
            how = f"{taken['type']} (event {taken['id']})" if taken else record.get("error")
            found["held_claim"].append(
                f"order {token}: taken from the cook after {held:.1f}s with the screen "
                f"connected throughout: {how}"
            )


def _takeover(found: dict[str, list[str]], history: dict[str, Any]) -> None:
    """A leader frozen (SIGSTOP), stalled or cut off long enough must lose the lead to the standby."""
    within = float(history.get("takeover_within", 5.0))
    samples = history.get("leaders", [])
    faults = history.get("faults", [])
    for fault in faults:
        target = fault["target"]
        if not target.startswith("notifier-") or fault["kind"] not in (
            "pause",
            "stall",
            "partition",
        ):
            continue
        if fault["until"] - fault["at"] < within + 1:
            continue
        before = [x for x in samples if x["at"] <= fault["at"] and x.get("leader") is not None]
        if not before or before[-1]["leader"] != target:
            continue  # it was not leading
        # The standby must itself be able to act: not faulted in that window.
        if any(
            other["target"].startswith("notifier-")
            and other["target"] != target
            and other["kind"] in ("kill", "pause", "stall", "partition")
            and other["at"] <= fault["at"] + within
            and other["until"] >= fault["at"]
            for other in faults
        ):
            continue
        window = [x for x in samples if fault["at"] < x["at"] <= fault["at"] + within]
        if not any(x.get("leader") not in (None, "", target) for x in window):
            leaders = sorted({str(x.get("leader")) for x in window})
            found["takeover"].append(
                f"{target} had a {fault['kind']} for {fault['until'] - fault['at']:.1f}s while "
                f"leading; {within:g}s later the leader was still {leaders}"
            )


def _name(order: dict[str, Any]) -> str:
    return str(order.get("number") or order["token"])


def summary(history: dict[str, Any]) -> str:
    """A line of counts: answers, orders by state, events by type, made, cook actions."""
    answers = Counter(str(a.get("status")) for a in history.get("answers", []))
    states = Counter(o["state"] for o in history.get("orders", []))
    events = Counter(e["type"] for e in history.get("events", []))
    cook = Counter(
        f"{r['action']}:{r.get('status')}" for r in history.get("cook", []) if r.get("action")
    )
    return (
        f"answers {dict(answers)}; orders {dict(states)}; events {dict(events)}; "
        f"made {len(history.get('made', []))}; cook {dict(cook)}; "
        f"faults {len(history.get('faults', []))}"
    )
