"""Properties of the outlet ring: stable everywhere, minimal movement, weighted, bounded.

Exact properties are checked on random data. Statistical ones (shares follow weights)
run on fixed outlets and zones: the ring is deterministic, so they cannot flake.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queueing.ring import HashRing, NoOutletAvailable, stable_hash

REPO_ROOT = Path(__file__).resolve().parents[2]

SLUGS = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)
WEIGHTS = st.integers(1, 5) | st.floats(1, 5)
ZONES = st.text(max_size=10)
# A few hot zones, as on a Friday night, plus arbitrary ones.
ORDERS = st.lists(st.sampled_from(["zone-1", "zone-2", "zone-3"]) | ZONES, min_size=1, max_size=300)


def outlets(min_size: int = 1) -> st.SearchStrategy[dict[str, float]]:
    return st.dictionaries(SLUGS, WEIGHTS, min_size=min_size, max_size=8)


FIXED_ZONES = [f"zone-{i}" for i in range(4000)]

_CHILD = """
import json, sys
from queueing.ring import HashRing
weights, keys = json.load(sys.stdin)
ring = HashRing(weights)
json.dump({key: list(ring.walk(key)) for key in keys}, sys.stdout)
"""


def _walks_in_child(
    weights: dict[str, float], keys: list[str], *, hashseed: str
) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps([weights, keys]),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": hashseed},
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    walks: dict[str, list[str]] = json.loads(done.stdout)
    return walks


def test_ring__same_keys_go_to_same_outlets_in_other_processes() -> None:
    weights = {"soho": 1, "camden": 2.5, "brixton": 1, "hackney": 4, "peckham": 0.5}
    keys = [f"zone-{i}" for i in range(300)] + ["", "E1 6AN", "Ærøskøbing", "東京-1"]
    ring = HashRing(weights)
    here = {key: list(ring.walk(key)) for key in keys}

    assert _walks_in_child(weights, keys, hashseed="1") == here
    assert _walks_in_child(weights, keys, hashseed="4242") == here


def test_stable_hash__is_pinned() -> None:
    # Changing the hash reroutes every zone on deploy; this value must never change.
    assert stable_hash("soho") == 3484985777194290531
    assert 0 <= stable_hash("") < 2**64


@given(weights=outlets(), keys=st.lists(ZONES, max_size=50))
def test_ring__does_not_depend_on_the_order_outlets_are_listed(
    weights: dict[str, float], keys: list[str]
) -> None:
    ring = HashRing(weights)
    reversed_ring = HashRing(dict(reversed(weights.items())))

    assert ring.nodes == reversed_ring.nodes
    for key in keys:
        assert list(ring.walk(key)) == list(reversed_ring.walk(key))


@given(weights=outlets(min_size=2), keys=st.lists(ZONES, max_size=200), data=st.data())
def test_ring__removing_outlet_moves_only_its_keys(
    weights: dict[str, float], keys: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(weights)))
    before = HashRing(weights)
    after = HashRing({slug: w for slug, w in weights.items() if slug != gone})

    for key in keys:
        if before.owner(key) != gone:
            assert after.owner(key) == before.owner(key)
        else:
            assert after.owner(key) != gone


@given(weights=outlets(min_size=2), keys=st.lists(ZONES, max_size=100), data=st.data())
def test_ring__removing_outlet_keeps_the_walk_order_of_the_rest(
    weights: dict[str, float], keys: list[str], data: st.DataObject
) -> None:
    # So a dead outlet's zones go to the next outlet on the ring, and only there.
    gone = data.draw(st.sampled_from(sorted(weights)))
    before = HashRing(weights)
    after = HashRing({slug: w for slug, w in weights.items() if slug != gone})

    for key in keys:
        assert list(after.walk(key)) == [slug for slug in before.walk(key) if slug != gone]


@given(weights=outlets(), weight=WEIGHTS, keys=st.lists(ZONES, max_size=200), data=st.data())
def test_ring__adding_outlet_takes_keys_only_from_others(
    weights: dict[str, float], weight: float, keys: list[str], data: st.DataObject
) -> None:
    new = data.draw(SLUGS.filter(lambda slug: slug not in weights))
    before = HashRing(weights)
    after = HashRing({**weights, new: weight})

    for key in keys:
        if after.owner(key) != before.owner(key):
            assert after.owner(key) == new


@pytest.mark.parametrize(
    ("weights", "weight"),
    [
        # Ignoring weights would give the newcomer 1/5 here, not 1/2, and 1/4, not 1/16, below.
        ({"soho": 1, "camden": 1, "brixton": 1, "hackney": 1}, 4),
        ({"soho": 5, "camden": 5, "brixton": 5}, 1),
        ({"soho": 2, "camden": 3, "brixton": 1, "hackney": 4, "peckham": 2}, 3),
        ({"soho": 1, "camden": 1}, 1),
    ],
)
def test_ring__adding_outlet_takes_share_in_proportion_to_its_weight(
    weights: dict[str, float], weight: float
) -> None:
    before = HashRing(weights)
    after = HashRing({**weights, "islington": weight})

    moved = [key for key in FIXED_ZONES if after.owner(key) != before.owner(key)]

    assert {after.owner(key) for key in moved} == {"islington"}
    expected = weight / (sum(weights.values()) + weight)
    assert 0.5 * expected <= len(moved) / len(FIXED_ZONES) <= 1.5 * expected


@given(weights=outlets(), vnodes_per_unit=st.integers(1, 128))
def test_ring__shares_sum_to_one(weights: dict[str, float], vnodes_per_unit: int) -> None:
    shares = HashRing(weights, vnodes_per_unit=vnodes_per_unit).shares()

    assert set(shares) == set(weights)
    assert all(share > 0 for share in shares.values())
    assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize(
    "weights",
    [
        {"soho": 1, "camden": 1, "brixton": 1, "hackney": 1, "islington": 4},
        {"soho": 5, "camden": 5, "brixton": 5, "islington": 1},
        {"soho": 2, "camden": 3, "brixton": 1, "hackney": 4, "peckham": 2, "islington": 3},
        {"soho": 1.5, "camden": 0.5},
    ],
)
def test_ring__shares_follow_weights_and_where_keys_go(weights: dict[str, float]) -> None:
    ring = HashRing(weights)
    shares = ring.shares()
    owned = Counter(ring.owner(key) for key in FIXED_ZONES)

    for slug, weight in weights.items():
        assert 0.5 <= shares[slug] / (weight / sum(weights.values())) <= 1.5
        assert abs(owned[slug] / len(FIXED_ZONES) - shares[slug]) < 0.05


@given(weights=outlets(), key=ZONES)
def test_ring__walk_yields_every_outlet_once_owner_first(
    weights: dict[str, float], key: str
) -> None:
    ring = HashRing(weights)
    walked = list(ring.walk(key))

    assert sorted(walked) == list(ring.nodes) == sorted(weights)
    assert walked[0] == ring.owner(key)


@given(weights=outlets(), orders=ORDERS, epsilon=st.floats(0.05, 1))
def test_assign__no_outlet_exceeds_its_cap(
    weights: dict[str, float], orders: list[str], epsilon: float
) -> None:
    ring = HashRing(weights)
    loads: dict[str, int] = {}

    for key in orders:
        ring.assign(key, loads, total=len(orders), epsilon=epsilon)

    assert sum(loads.values()) == len(orders)
    for slug, load in loads.items():
        assert load <= ring.cap(slug, len(orders), epsilon=epsilon)


@given(weights=outlets(), key=ZONES, data=st.data())
def test_assign__takes_first_outlet_in_ring_order_not_excluded_and_under_cap(
    weights: dict[str, float], key: str, data: st.DataObject
) -> None:
    ring = HashRing(weights)
    total = data.draw(st.integers(1, 40), label="total")
    epsilon = data.draw(st.floats(0, 1), label="epsilon")
    loads = data.draw(st.dictionaries(st.sampled_from(ring.nodes), st.integers(0, 50)))
    exclude = data.draw(st.frozensets(st.sampled_from(ring.nodes)), label="exclude")
    before = dict(loads)
    expected = next(
        (
            slug
            for slug in ring.walk(key)
            if slug not in exclude and loads.get(slug, 0) < ring.cap(slug, total, epsilon=epsilon)
        ),
        None,
    )

    if expected is None:
        with pytest.raises(NoOutletAvailable):
            ring.assign(key, loads, total=total, epsilon=epsilon, exclude=exclude)
        assert loads == before
    else:
        assert ring.assign(key, loads, total=total, epsilon=epsilon, exclude=exclude) == expected
        assert loads == {**before, expected: before.get(expected, 0) + 1}


@pytest.mark.parametrize(
    ("weights", "total", "epsilon", "caps"),
    [
        ({"soho": 1}, 50, 0.1, {"soho": 55}),
        ({"soho": 2, "camden": 3}, 25, 0.1, {"soho": 11, "camden": 17}),
        ({"soho": 1, "camden": 3}, 8, 0.25, {"soho": 3, "camden": 8}),
        ({"soho": 1, "camden": 3}, 0, 0.25, {"soho": 1, "camden": 1}),
        ({"soho": 1, "camden": 1, "brixton": 1}, 3, 0, {"soho": 1, "camden": 1, "brixton": 1}),
    ],
)
def test_cap__is_ceiling_of_weighted_share_at_least_one(
    weights: dict[str, float], total: int, epsilon: float, caps: dict[str, int]
) -> None:
    ring = HashRing(weights)

    assert {slug: ring.cap(slug, total, epsilon=epsilon) for slug in weights} == caps


def test_ring__empty_raises_no_outlet_available() -> None:
    ring = HashRing({})

    assert ring.nodes == ()
    assert ring.shares() == {}
    with pytest.raises(NoOutletAvailable):
        ring.owner("zone-1")
    with pytest.raises(NoOutletAvailable):
        ring.walk("zone-1")
    with pytest.raises(NoOutletAvailable):
        ring.assign("zone-1", {}, total=1)


def test_ring__tiny_weight_still_gets_a_vnode() -> None:
    ring = HashRing({"soho": 0.001, "camden": 1})

    assert ring.shares()["soho"] > 0
    assert sorted(ring.walk("zone-1")) == ["camden", "soho"]


@pytest.mark.parametrize("weight", [0, -1, math.nan, math.inf])
def test_ring__rejects_weight_that_is_not_positive_and_finite(weight: float) -> None:
    with pytest.raises(ValueError, match="soho"):
        HashRing({"soho": weight})


def test_ring__rejects_vnodes_per_unit_below_one() -> None:
    with pytest.raises(ValueError, match="vnodes_per_unit"):
        HashRing({"soho": 1}, vnodes_per_unit=0)


@given(weights=outlets(), vnodes_per_unit=st.integers(1, 64))
def test_ring__heirs_are_the_shares_gained_on_the_ring_without_that_outlet(
    weights: dict[str, float], vnodes_per_unit: int
) -> None:
    ring = HashRing(weights, vnodes_per_unit=vnodes_per_unit)
    before = ring.shares()
    heirs = ring.heirs()
    assert set(heirs) == set(weights)
    for gone in weights:
        rest = {slug: w for slug, w in weights.items() if slug != gone}
        after = HashRing(rest, vnodes_per_unit=vnodes_per_unit).shares() if rest else {}
        gained = {slug: after[slug] - before[slug] for slug in after if after[slug] > before[slug]}
        assert heirs[gone].keys() == {s for s, g in gained.items() if g > 1e-12}
        for slug, gain in heirs[gone].items():
            assert math.isclose(gain, gained[slug], rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(sum(heirs[gone].values()), before[gone] if rest else 0, abs_tol=1e-9)


@given(weights=outlets(min_size=2), keys=st.lists(ZONES, max_size=100), data=st.data())
def test_ring__heir_of_a_key_is_its_owner_on_the_ring_without_that_outlet(
    weights: dict[str, float], keys: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(weights)))
    ring = HashRing(weights)
    without = HashRing({slug: w for slug, w in weights.items() if slug != gone})
    for key in keys:
        assert ring.heir(key, leaving=gone) == without.owner(key)
    assert HashRing({gone: 1}).heir("any", leaving=gone) is None
