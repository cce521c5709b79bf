"""The ops screen's ring: heirs and where zones would go, read off one ring, match rebuilding it."""

from __future__ import annotations

import pytest

from queueing.models import Outlet, OutletState
from queueing.services import outlet_drain
from queueing.services.routing import ring_of
from shop.ops import ring_rows, whole_percents
from tests.orders import place


@pytest.mark.django_db
def test_ring_rows__match_a_ring_rebuilt_without_each_outlet(make_outlet) -> None:
    for slug, weight in (("north", 1), ("centre", 3), ("south", 2), ("east", 1)):
        make_outlet(slug, weight=weight)
    for n in range(40):
        place(zone=f"Z{n}")
    outlet_drain(outlet=Outlet.objects.get(slug="east"))
    outlets = list(Outlet.objects.order_by("slug"))
    active = [o for o in outlets if o.state == OutletState.ACTIVE]
    before = ring_of(active).shares()

    rows = ring_rows(outlets)

    assert {r.outlet.slug for r in rows} == {"north", "centre", "south", "east"}
    for row in rows:
        survivors = [o for o in active if o.pk != row.outlet.pk]
        rebuilt = ring_of(survivors)
        after = rebuilt.shares()
        gains = {
            s: after[s] - before.get(s, 0.0) for s in after if after[s] - before.get(s, 0.0) > 1e-9
        }
        expected = sorted(gains, key=lambda s: -gains[s])
        assert row.heirs == list(
            zip(expected, whole_percents([gains[s] for s in expected]), strict=True)
        )
        for zone, _, where in row.zones:
            assert where == rebuilt.owner(zone), (row.outlet.slug, zone)
    assert sum(r.percent for r in rows) == 100
    assert next(r for r in rows if r.outlet.slug == "east").heirs == []
