"""The queue's statements stay on index scans with a big history in the table.

1,000 outlets and 1,000,000 completed orders (what a chain accumulates), plus a
few open orders per outlet, are inserted once for the module with one
``INSERT ... SELECT ... FROM generate_series`` and ANALYZEd. Each statement is
then EXPLAINed (never run) and its plan must not read ``queueing_order`` with a
sequential scan. The engine's statements are prepared on each connection after a
few runs (``queueing.db``), and PostgreSQL may then settle on a generic plan, made
without the parameters' values: the hot ones are EXPLAINed that way too. When one does, the fix is an index (models.Meta + migration),
not this test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from queueing import selectors, sql
from queueing.models import Order, OrderEvent, Outlet

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

OUTLETS = 1000
FINISHED = 1_000_000

BULK = """
INSERT INTO queueing_outlet
    (slug, name, weight, state, last_heartbeat_at, token_hash, amber_after, red_after, created_at)
SELECT 'outlet-' || g, 'Outlet ' || g, 1 + g %% 3, 'active', now() - (g %% 20) * interval '1 second',
       '', 300, 600, now() - interval '1 day'
FROM generate_series(1, %(outlets)s) g;

-- The history: completed orders spread over every outlet, oldest first. Tokens in
-- insertion order keep the token indexes' inserts on their rightmost page (faster).
INSERT INTO queueing_order
    (token, kind, zone, rush, quick, lines, customer, prep_seconds, state, cancel_reason,
     outlet_id, sort_key, fence, claimed_by, attempts, created_at, claimed_at, ready_at,
     finished_at)
SELECT 'done-' || lpad(g::text, 7, '0'), 'delivery', 'zone-' || g %% 300, false, false,
       '[{"item": "margherita", "qty": 1}]', '{}', 600, 'completed', '',
       o.first_id + g %% %(outlets)s, t, 2, 'station-1', 0, t, t, t, t
FROM generate_series(1, %(finished)s) g,
     (SELECT min(id) AS first_id FROM queueing_outlet) o,
     LATERAL (SELECT now() - interval '1 year' + g * interval '30 seconds' AS t) ts;

-- What is open now: per outlet three queued, one being prepared, one ready.
INSERT INTO queueing_order
    (token, kind, zone, rush, quick, lines, customer, prep_seconds, state, cancel_reason,
     outlet_id, sort_key, fence, claimed_by, lease_expires_at, attempts, created_at)
SELECT 'open-' || o.id || '-' || n, 'delivery', 'zone-' || n, false, false, '[]', '{}', 600,
       (ARRAY['queued', 'queued', 'queued', 'preparing', 'ready'])[n], '',
       o.id, now() - n * interval '1 minute', 2, '', CASE WHEN n = 4 THEN now() END, 0, now()
FROM queueing_outlet o, generate_series(1, 5) n;

-- A few orders waiting for any outlet, and a few needing attention.
INSERT INTO queueing_order
    (token, kind, zone, rush, quick, lines, customer, prep_seconds, state, cancel_reason,
     outlet_id, sort_key, fence, claimed_by, attempts, created_at)
SELECT 'other-' || g, 'delivery', 'zone-1', false, false, '[]', '{}', 600,
       CASE WHEN g %% 2 = 0 THEN 'queued' ELSE 'attention' END, '', NULL, now(), 2, '', 3, now()
FROM generate_series(1, 20) g;

ANALYZE queueing_outlet;
ANALYZE queueing_order;
"""


@pytest.fixture(scope="module")
def big_queue(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    """The million-order table, committed for the module and emptied after it."""
    with django_db_blocker.unblock():
        with connection.cursor() as cur:
            cur.execute(BULK, {"outlets": OUTLETS, "finished": FINISHED})
        outlet = Outlet.objects.order_by("id")[500]
        tokens = list(
            Order.objects.filter(outlet=outlet, token__startswith="open-").values_list(
                "token", flat=True
            )
        )
        try:
            yield {
                "outlet": outlet,
                "outlet_ids": list(Outlet.objects.values_list("id", flat=True)),
                "tokens": tokens[:3],
            }
        finally:
            with connection.cursor() as cur:
                cur.execute(
                    "TRUNCATE queueing_orderevent, queueing_order, queueing_heartbeat, "
                    "queueing_outlet RESTART IDENTITY CASCADE"
                )


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(
    statement: str, params: dict[str, Any], *, generic: bool = False
) -> list[dict[str, Any]]:
    """The plan for these values; ``generic``: the plan of the prepared statement with no values.

    The generic plan is the one a prepared statement may switch to after five custom plans
    (plan_cache_mode auto); force_generic_plan shows it now. Here the server infers the
    parameters' types; psycopg declares them (int2/int4 for small ints), which changes
    no index choice (cross-type integer comparisons use the same indexes).
    """
    with connection.cursor() as cur:
        if not generic:
            cur.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
            raw = cur.fetchone()[0]
        else:
            names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
            numbered = re.sub(
                r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement
            )
            # PREPARE outlives the test's transaction: deallocated whatever happens, and
            # the EXPLAIN in a savepoint so that its failure is reported, not hidden.
            cur.execute(f"PREPARE generic_plan AS {numbered.replace('%%', '%')}")
            try:
                with transaction.atomic():
                    cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    values = ", ".join(["%s"] * len(names))
                    cur.execute(
                        f"EXPLAIN (FORMAT JSON) EXECUTE generic_plan ({values})",
                        [params[n] for n in names],
                    )
                    raw = cur.fetchone()[0]
            finally:
                cur.execute("DEALLOCATE generic_plan")
                cur.execute("RESET plan_cache_mode")
    document = json.loads(raw) if isinstance(raw, str) else raw
    return list(plan_nodes(document[0]["Plan"]))


def explain_queryset(qs: QuerySet[Any]) -> list[dict[str, Any]]:
    return list(plan_nodes(json.loads(qs.explain(format="json"))[0]["Plan"]))


def order_scans(nodes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(node type, index) of every node that reads queueing_order."""
    return [
        (n["Node Type"], n.get("Index Name", ""))
        for n in nodes
        if n.get("Relation Name") == "queueing_order"
    ]


def assert_indexed(nodes: list[dict[str, Any]], *, uses: str | None = None) -> None:
    scans = order_scans(nodes)
    assert scans, "the plan does not read queueing_order at all"
    assert all(kind != "Seq Scan" for kind, _ in scans), json.dumps(nodes[0], indent=1)[:4000]
    if uses:
        # A bitmap scan names its index on the Bitmap Index Scan below the heap scan.
        indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
        assert uses in indexes, f"expected {uses}, got {scans} using {indexes}"


# The indexes that hold an outlet's queued orders in claim order (sort_key, id).
IN_CLAIM_ORDER = {"order_claim_queue", "order_open_by_outlet"}


def event(kind: str) -> dict[str, Any]:
    return {"event_type": kind, "detail": "{}"}


# --- a deep queue at one outlet, before any ANALYZE (a new shop's Friday night) -------------


@pytest.fixture
def deep_queue(make_outlet: Any) -> dict[str, Any]:
    """2,000 queued orders at one outlet and a few being prepared, in the test's transaction."""
    outlet = make_outlet("busy")[0]
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO queueing_order
                (token, kind, zone, rush, quick, lines, customer, prep_seconds, state,
                 cancel_reason, outlet_id, sort_key, fence, claimed_by, attempts, created_at)
            SELECT 'deep-' || g, 'takeaway', '', false, false, '[]', '{}', 60,
                   CASE WHEN g <= 10 THEN 'preparing' ELSE 'queued' END, '', %(outlet_id)s,
                   now() - (g %% 7) * interval '1 minute', 2, '', 0, now()
            FROM generate_series(1, 2000) g
            """,
            {"outlet_id": outlet.pk},
        )
    return {"outlet": outlet, "tokens": ["deep-1", "deep-2", "deep-3"]}


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__claim_reads_the_queue_in_claim_order_without_sorting_it(
    deep_queue: dict[str, Any], generic: bool
) -> None:
    params = {
        "outlet_id": deep_queue["outlet"].pk,
        "limit": 1,
        "station": "s1",
        "lease": 120,
        **event("claimed"),
    }
    nodes = explain(sql.CLAIM_NEXT, params, generic=generic)
    assert_indexed(nodes)
    # Sorting the outlet's whole queue for every claim would make each claim cost O(queue).
    # (The ready orders that lost their station come first; there are few, so they may sort.)
    assert sorted_queue_scans(nodes) == []
    locks = [n for n in nodes if n["Node Type"] == "LockRows"]
    queued = [lock for lock in locks if "'queued'" in json.dumps(lock)]
    assert len(queued) == 1, json.dumps(locks, indent=1)[:4000]
    (below,) = queued[0]["Plans"]
    assert below["Node Type"] == "Index Scan", (below["Node Type"], below.get("Sort Key"))
    assert below["Index Name"] in IN_CLAIM_ORDER, below["Index Name"]


def sorted_queue_scans(nodes: list[dict[str, Any]]) -> list[str]:
    """Sorts right over a scan of an outlet's queued orders: the whole queue read for a few.

    A scan of the queue names ``'queued'`` in a condition or reads ``order_claim_queue``
    (whose predicate PostgreSQL may leave out of the conditions).
    """
    found = []
    for node in nodes:
        if node["Node Type"] not in ("Sort", "Incremental Sort"):
            continue
        scan = next(n for n in node["Plans"] if n.get("Parent Relationship") == "Outer")
        text = json.dumps(scan)
        if scan.get("Relation Name") == "queueing_order" and (
            "'queued'" in text or "order_claim_queue" in text
        ):
            found.append(f"{node['Node Type']} over {scan['Node Type']} {text[:300]}")
    return found


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__an_estimate_reads_the_queue_in_order_and_stops_at_its_depth(
    deep_queue: dict[str, Any], generic: bool
) -> None:
    """At the back of a 1,990-order queue, the estimate reads ESTIMATE_DEPTH of it, unsorted."""
    outlet = deep_queue["outlet"]
    params = {
        "outlet_id": outlet.pk,
        "sort_key": timezone.now() + timedelta(hours=1),
        "id": 0,
        "now": timezone.now(),
        "depth": selectors.ESTIMATE_DEPTH,
    }
    nodes = explain(sql.ORDER_WORK_AHEAD, params, generic=generic)
    assert_indexed(nodes)
    (limit,) = [n for n in nodes if n["Node Type"] == "Limit"]
    (below,) = limit["Plans"]
    assert below["Node Type"] == "Index Scan", (below["Node Type"], below.get("Sort Key"))
    assert below["Index Name"] in IN_CLAIM_ORDER, below["Index Name"]
    with connection.cursor() as cur:
        cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql.ORDER_WORK_AHEAD}", params)
        raw = cur.fetchone()[0]
    document = json.loads(raw) if isinstance(raw, str) else raw
    # The scan itself stopped at the depth: 100 index entries read, not the 1,990 queued.
    (ran,) = [n for n in plan_nodes(document[0]["Plan"]) if n["Node Type"] == "Limit"]
    (scan,) = ran["Plans"]
    assert scan["Node Type"] == "Index Scan", scan["Node Type"]
    assert (scan["Actual Rows"], scan.get("Rows Removed by Filter", 0)) == (
        selectors.ESTIMATE_DEPTH,
        0,
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("name", ["MARK_READY", "ORDER_COMPLETE"])
def test_plan__fenced_batch_finds_its_rows_by_token(
    deep_queue: dict[str, Any], name: str, generic: bool
) -> None:
    tokens = deep_queue["tokens"]
    params = {
        "tokens": tokens,
        "fences": [2] * len(tokens),
        "outlet_id": deep_queue["outlet"].pk,
        "lease": 120,
        **event(name.lower()),
    }
    nodes = explain(getattr(sql, name), params, generic=generic)
    assert_indexed(nodes)
    # Not the outlet's open orders (thousands on a busy night): the named ones, by token
    # (either of Django's two token indexes), or at most the orders being prepared right
    # now (the partial lease index, or the open-orders index on the state being acted on),
    # which the planner may pick before the first ANALYZE.
    scans = [n for n in nodes if n.get("Index Name", "").startswith(("queueing_order_", "order_"))]
    assert scans, nodes
    for scan in scans:
        index = scan["Index Name"]
        if index == "order_open_by_outlet":
            assert "state" in scan.get("Index Cond", ""), scan
            continue
        assert index.startswith(
            ("queueing_order_token", "queueing_order_pkey", "order_lease_expiry")
        ), index


# --- the statements of the brief ----------------------------------------------------


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("limit", [1, 20])
def test_plan__claim_next_reads_the_outlets_queue_index(
    big_queue: dict[str, Any], limit: int, generic: bool
) -> None:
    params = {
        "outlet_id": big_queue["outlet"].pk,
        "limit": limit,
        "station": "s1",
        "lease": 120,
        **event("claimed"),
    }
    nodes = explain(sql.CLAIM_NEXT, params, generic=generic)
    assert_indexed(nodes)
    assert sorted_queue_scans(nodes) == []


def test_plan__outlet_loads_read_the_open_orders_index(big_queue: dict[str, Any]) -> None:
    nodes = explain(sql.OPEN_ORDERS_TOTAL, {})
    assert_indexed(nodes, uses="order_open_by_outlet")
    nodes = explain(sql.OUTLET_LOAD, {"outlet_id": big_queue["outlet"].pk})
    assert_indexed(nodes, uses="order_open_by_outlet")


def test_plan__lease_expiry_scan_reads_the_lease_index(big_queue: dict[str, Any]) -> None:
    params = {"now": timezone.now(), "limit": 1000, "held_outlet_ids": [big_queue["outlet"].pk]}
    nodes = explain(sql.LEASES_EXPIRED, params)
    assert_indexed(nodes, uses="order_lease_expiry")


def test_plan__outlet_health_reads_only_open_orders(big_queue: dict[str, Any]) -> None:
    assert_indexed(explain_queryset(selectors.outlets_health()), uses="order_open_by_outlet")


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__heartbeat_touches_one_outlet_by_key(
    big_queue: dict[str, Any], generic: bool
) -> None:
    params = {
        "outlet_id": big_queue["outlet"].pk,
        "source": "agent",
        "seq": 1,
        "now": None,
        "timeout": 15,
    }
    nodes = explain(sql.OUTLET_HEARTBEAT, params, generic=generic)
    outlet_scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "queueing_outlet"]
    assert outlet_scans and "Seq Scan" not in outlet_scans, outlet_scans
    assert not order_scans(nodes)


# --- every other statement that reads orders ------------------------------------------


def claims_params(big_queue: dict[str, Any]) -> dict[str, Any]:
    tokens = big_queue["tokens"]
    return {
        "tokens": tokens,
        "fences": [2] * len(tokens),
        "token": tokens[0],
        "fence": 2,
        "outlet_id": big_queue["outlet"].pk,
        "order_id": 1,
        "station": "s1",
        "lease": 120,
    }


@pytest.mark.parametrize(
    "name",
    [
        "TICKET_LOCK",
        "CLAIM_TICKET",
        "MARK_READY",
        "ORDER_COMPLETE",
        "ORDER_RECALL",
        "LEASE_RENEW",
        "ORDER_BY_TOKEN",
        "ORDER_WITH_OUTLET",
        "ORDERS_TO_MOVE",
        "ORDERS_WAITING",
    ],
)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__fenced_writes_and_moves_use_indexes(
    big_queue: dict[str, Any], name: str, generic: bool
) -> None:
    params = {
        **claims_params(big_queue),
        **event(name.lower()),
        "outlet_ids": [big_queue["outlet"].pk],
        "order_ids": [],
        "limit": 1000,
    }
    assert_indexed(explain(getattr(sql, name), params, generic=generic))


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__a_customers_timeline_reads_its_orders_events_by_index(
    big_queue: dict[str, Any], generic: bool
) -> None:
    with connection.cursor() as cur:  # a busy day's events: 200,000 of 20,000 orders
        cur.execute(
            "INSERT INTO queueing_orderevent (order_id, type, state, fence, detail, at)"
            " SELECT o.id, 'placed', 'queued', 1, '{}', now()"
            " FROM (SELECT id FROM queueing_order ORDER BY id LIMIT 20000) AS o,"
            " generate_series(1, 10)"
            " RETURNING order_id"
        )
        order_id = cur.fetchone()[0]
    nodes = explain(sql.ORDER_EVENTS, {"order_id": order_id, "after": 0}, generic=generic)
    scans = [
        (n["Node Type"], n.get("Index Name", ""))
        for n in nodes
        if n.get("Relation Name") == "queueing_orderevent"
    ]
    assert scans and all(kind != "Seq Scan" for kind, _ in scans), scans
    # A bitmap scan names its index on the Bitmap Index Scan below the heap scan.
    assert "event_by_order" in {n["Index Name"] for n in nodes if "Index Name" in n}, scans


def test_plan__screens_selectors_use_indexes(big_queue: dict[str, Any]) -> None:
    outlet = big_queue["outlet"]
    queued = Order.objects.filter(outlet=outlet, state="queued").order_by("sort_key").last()
    assert queued is not None
    querysets = {
        "outlet_queue": selectors.outlet_queue(outlet=outlet),
        "kitchen_tickets": selectors.kitchen_tickets(outlet=outlet),
        "orders_needing_attention": selectors.orders_needing_attention(),
        "last_bumped": OrderEvent.objects.filter(outlet=outlet, type="completed")
        .select_related("order")
        .order_by("-id")[:1],
    }
    failures = {}
    for name, qs in querysets.items():
        try:
            assert_indexed(explain_queryset(qs))
        except AssertionError as exc:
            failures[name] = str(exc)[:500]
    try:  # the estimate every order answer carries
        assert_indexed(
            explain(
                sql.ORDER_WORK_AHEAD,
                {
                    "outlet_id": outlet.pk,
                    "sort_key": queued.sort_key,
                    "id": queued.pk,
                    "now": timezone.now(),
                    "depth": selectors.ESTIMATE_DEPTH,
                },
            )
        )
    except AssertionError as exc:
        failures["ORDER_WORK_AHEAD"] = str(exc)[:500]
    assert not failures, failures


def test_plan__the_table_really_holds_a_million_finished_orders(big_queue: dict[str, Any]) -> None:
    assert Order.objects.filter(state="completed").count() == FINISHED
    assert Outlet.objects.count() == OUTLETS
    since = timezone.now() - timedelta(days=2)
    assert Order.objects.filter(state="queued", created_at__gte=since).count() >= OUTLETS * 3
