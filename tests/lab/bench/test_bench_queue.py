"""The queue bench's Hearth part in its quick size: it measures, and it proves the fence on the way."""

from __future__ import annotations

import pytest

from lab.bench.queue import QUICK_ORDERS, hearth_bench
from queueing.models import Order, OrderEvent

# The quick mode's code path at a quarter of its size: one-at-a-time orders each wait
# for two serialized NOTIFY commits, so 2,000 of them can take 15-25 s on a busy 2-core box.
ORDERS = QUICK_ORDERS // 4


@pytest.mark.django_db(transaction=True)
def test_bench_queue__hearth_quick_reports_rates_and_refuses_the_stale_fence() -> None:
    one, batched = hearth_bench(orders=ORDERS)

    assert (one.mode, one.orders, one.workers, one.batch) == ("one at a time", ORDERS, 4, 1)
    assert [(b.mode, b.orders, b.workers, b.batch) for b in batched] == [
        ("batched", ORDERS, 1, 100),
        ("batched", ORDERS, 4, 100),
    ]
    assert one.rate > 0 and all(b.rate > 0 for b in batched)
    for b in batched:
        assert len(b.refusals) == 1
        assert "is stale" in b.refusals[0] and "must not complete it" in b.refusals[0]
    # The refused order was then completed by its real holder, once: every order of the
    # last run is completed with one claim, and no event was written for the refusal.
    assert Order.objects.exclude(state="completed").count() == 0
    assert set(Order.objects.values_list("fence", flat=True)) == {2}
    assert OrderEvent.objects.filter(type="completed").count() == ORDERS
