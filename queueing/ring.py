"""Consistent-hash ring of the live outlets, with bounded loads.

Each outlet gets virtual nodes on a ring of 2**64 positions, as many as its capacity
weight asks for; vnode i of outlet s sits at stable_hash(f"{s}#{i}"). A key (a
delivery zone) belongs to the first vnode at or after its own hash, wrapping at the
top. An outlet's positions depend only on its own slug, so adding or removing an
outlet moves only the keys whose first vnode it has, and a zone keeps its outlet while
that outlet lives. Positions come from blake2b, never hash(), so every process and
machine builds the same ring. Hashing alone would let one busy zone swamp its outlet,
so `assign` adds bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing
with Bounded Loads"): an outlet holds at most ceil((1 + epsilon) * its weighted share)
of the open orders, and an order whose outlet is full walks on to the next outlet on
the ring. The caps add up to at least the total, so an order always finds room
unless outlets are excluded or the caller's counts are off.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Collection, Iterator, Mapping, MutableMapping
from fractions import Fraction

__all__ = ["HashRing", "NoOutletAvailable", "stable_hash"]

_RING_SIZE = 1 << 64


class NoOutletAvailable(Exception):
    """No outlet can take the order: the ring is empty, or every outlet is excluded or full."""


def stable_hash(value: str) -> int:
    """Return a 64-bit hash of value that is the same in every process and on every machine."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _exact(number: float) -> Fraction:
    # Exact arithmetic on the shortest repr, so epsilon 0.1 is 1/10 and 50 orders on one
    # outlet cap at 55; in floats (1 + 0.1) * 50 is 55.00000000000001, a cap of 56.
    return Fraction(repr(float(number)))


class HashRing:
    """Outlets on a consistent-hash ring, with virtual nodes in proportion to capacity weight."""

    def __init__(self, weights: Mapping[str, float], *, vnodes_per_unit: int = 64) -> None:
        """Weights map outlet slug to capacity weight (> 0); an empty mapping is an empty ring."""
        if vnodes_per_unit < 1:
            raise ValueError(f"vnodes_per_unit must be at least 1, got {vnodes_per_unit!r}")
        for slug, weight in weights.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of outlet {slug!r} must be positive, got {weight!r}")
        self._weights = {slug: _exact(weight) for slug, weight in weights.items()}
        self._total_weight = sum(self._weights.values(), Fraction(0))
        self._nodes = tuple(sorted(weights))
        # Equal positions are ordered by slug, so the order in which the caller lists the
        # outlets never changes the ring.
        points = sorted(
            (stable_hash(f"{slug}#{i}"), slug)
            for slug, weight in weights.items()
            for i in range(max(1, round(weight * vnodes_per_unit)))
        )
        self._positions = [position for position, _ in points]
        self._owners = [slug for _, slug in points]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Slugs of the outlets on the ring, sorted."""
        return self._nodes

    def owner(self, key: str) -> str:
        """Return the outlet key hashes to, whatever the loads."""
        return self._owners[self._start(key)]

    def walk(self, key: str) -> Iterator[str]:
        """Yield every outlet once, in ring order from key's position: the owner first."""
        return self._walk_from(self._start(key))

    def shares(self) -> dict[str, float]:
        """Return the fraction of the 2**64 key space each outlet owns; they sum to 1."""
        arcs = dict.fromkeys(self._nodes, 0)
        # A vnode owns the arc after the previous vnode, up to and including its position.
        previous = self._positions[-1] - _RING_SIZE if self._positions else 0
        for position, slug in zip(self._positions, self._owners, strict=True):
            arcs[slug] += position - previous
            previous = position
        return {slug: arc / _RING_SIZE for slug, arc in arcs.items()}

    def heirs(self) -> dict[str, dict[str, float]]:
        """For each outlet, the key-space fraction each other outlet would gain if it left.

        Without an outlet, each of its arcs belongs to the next vnode of another outlet
        (the others' positions do not move), so one pass finds every outlet's heirs
        instead of one ring built per outlet.
        """
        gains: dict[str, dict[str, float]] = {slug: {} for slug in self._nodes}
        count = len(self._owners)
        if len(self._nodes) < 2:
            return gains
        # next_other[i]: the owner of the first vnode after i owned by another outlet.
        next_other: list[str] = [""] * count
        for k in range(2 * count - 2, -1, -1):  # twice round, so the wrap is seen
            i, after = k % count, (k + 1) % count
            next_other[i] = (
                self._owners[after] if self._owners[after] != self._owners[i] else next_other[after]
            )
        previous = self._positions[-1] - _RING_SIZE
        for i, (position, slug) in enumerate(zip(self._positions, self._owners, strict=True)):
            heir = gains[slug]
            heir[next_other[i]] = heir.get(next_other[i], 0.0) + (position - previous) / _RING_SIZE
            previous = position
        return gains

    def heir(self, key: str, *, leaving: str) -> str | None:
        """Where ``key`` would go if outlet ``leaving`` left the ring; None if no other is on it."""
        return next((slug for slug in self.walk(key) if slug != leaving), None)

    def cap(self, node: str, total: int, *, epsilon: float) -> int:
        """Return how many of total orders node may hold: ceil((1 + epsilon) * its share), >= 1."""
        if total < 0 or epsilon < 0:
            raise ValueError(f"total and epsilon must not be negative, got {total!r}, {epsilon!r}")
        share = self._weights[node] / self._total_weight
        return max(1, math.ceil((1 + _exact(epsilon)) * total * share))

    def assign(
        self,
        key: str,
        loads: MutableMapping[str, int],
        *,
        total: int,
        epsilon: float = 0.25,
        exclude: Collection[str] = (),
    ) -> str:
        """Return the first outlet on key's walk not excluded and under its cap; count it."""
        for slug in self.walk(key):
            if slug in exclude:
                continue
            load = loads.get(slug, 0)
            if load < self.cap(slug, total, epsilon=epsilon):
                loads[slug] = load + 1
                return slug
        raise NoOutletAvailable(
            f"no outlet can take key {key!r}: {len(exclude)} excluded, "
            f"the rest at their cap for {total} orders"
        )

    def _start(self, key: str) -> int:
        if not self._positions:
            raise NoOutletAvailable(f"no outlet on the ring for key {key!r}")
        index = bisect_left(self._positions, stable_hash(key))
        return index if index < len(self._positions) else 0

    def _walk_from(self, start: int) -> Iterator[str]:
        seen: set[str] = set()
        count = len(self._owners)
        for offset in range(count):
            slug = self._owners[(start + offset) % count]
            if slug not in seen:
                seen.add(slug)
                yield slug
                if len(seen) == len(self._nodes):
                    return
