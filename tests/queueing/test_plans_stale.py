"""An outlet's queue stays a bounded read when the statistics say it is short.

Statistics taken on a quiet afternoon (one order queued, yesterday's 5,000 gone), then
a Friday night (2,000 more): the planner believes an outlet's queue holds one order, and
with that belief a Sort over the smaller (deduplicated) index of the open orders can look
cheaper than the queue's own ordered index, which kept yesterday's pages. ``bench web``
saw that plan; this database did not reproduce it with the index as it was, so the
schema test below is the one that fails on that index, and the plan test guards the
outcome. The orders are committed for the module and the tables truncated after it, so
the ANALYZE (whose row counts outlive a rolled-back transaction) leaves no trace for
the other modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from queueing import selectors, sql
from queueing.models import Outlet
from tests.queueing.test_plans import event, explain, sorted_queue_scans

pytestmark = [pytest.mark.django_db]

INSERT = """
    INSERT INTO queueing_order
        (token, kind, zone, rush, quick, lines, customer, prep_seconds, state,
         cancel_reason, outlet_id, sort_key, fence, claimed_by, attempts, created_at)
    SELECT 'grown-' || %(first)s + g, 'takeaway', '', false, false, '[]', '{}', 60,
           'queued', '', %(outlet_id)s, now() + g * interval '1 second', 2, '', 0, now()
    FROM generate_series(1, %(n)s) g
"""


@pytest.fixture(scope="module")
def grown_queue(django_db_setup: None, django_db_blocker: Any) -> Iterator[Outlet]:
    with django_db_blocker.unblock():
        outlet = Outlet.objects.create(
            slug="busy", name="Busy", weight=1, state="active", token_hash="unused"
        )
        with connection.cursor() as cur:
            # Yesterday's orders, made and gone: the queue's index keeps their pages.
            cur.execute(INSERT, {"first": 0, "n": 5000, "outlet_id": outlet.pk})
            cur.execute("DELETE FROM queueing_order")
            cur.execute(INSERT, {"first": 5000, "n": 1, "outlet_id": outlet.pk})
            cur.execute("VACUUM (ANALYZE) queueing_order")
            cur.execute(INSERT, {"first": 5001, "n": 2000, "outlet_id": outlet.pk})
        try:
            yield outlet
        finally:
            with connection.cursor() as cur:
                cur.execute(
                    "TRUNCATE queueing_orderevent, queueing_order, queueing_heartbeat, "
                    "queueing_outlet RESTART IDENTITY CASCADE"
                )


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_plan__claims_and_estimates_stay_bounded_on_stale_statistics(
    grown_queue: Outlet, generic: bool
) -> None:
    claim = explain(
        sql.CLAIM_NEXT,
        {
            "outlet_id": grown_queue.pk,
            "limit": 1,
            "station": "s1",
            "lease": 120,
            **event("claimed"),
        },
        generic=generic,
    )
    estimate = explain(
        sql.ORDER_WORK_AHEAD,
        {
            "outlet_id": grown_queue.pk,
            "sort_key": timezone.now() + timedelta(hours=2),
            "id": 0,
            "now": timezone.now(),
            "depth": selectors.ESTIMATE_DEPTH,
        },
        generic=generic,
    )
    assert sorted_queue_scans(claim) == []
    assert sorted_queue_scans(estimate) == []


def test_schema__every_index_of_an_outlets_queue_holds_it_in_claim_order() -> None:
    """Whichever index the planner reads an outlet's queue through, it reads it in order.

    An index led by the outlet whose predicate admits queued orders can serve a claim or
    an estimate; after the outlet (and the state, when it is a key column, fixed by the
    query) its next columns must be the claim order, or that read sorts the whole queue.
    """
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT i.relname,
                   array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                         ORDER BY k.n),
                   coalesce(pg_get_expr(x.indpred, x.indrelid), '')
            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'queueing_order'::regclass
            """
        )
        indexes = cur.fetchall()
    serving = {
        name: [c for c in columns[1:] if c != "state"]
        for name, columns, predicate in indexes
        if columns[0] == "outlet_id" and (not predicate or "'queued'" in predicate)
    }
    assert serving, indexes
    assert {name: keys[:2] for name, keys in serving.items()} == {
        name: ["sort_key", "id"] for name in serving
    }
