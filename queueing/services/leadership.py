"""The notifier's term fence: each transaction a tick writes in checks the leader's term first.

A notifier leads while its term holds the lease in the NotifierStatus row
(``queueing.notifier``). A leader can be frozen (SIGSTOP, a paused VM, a
partition) and wake after a standby took over, still believing it leads; so
every transaction of a tick starts with ``leader_fence``, which reads the row
``FOR SHARE`` under the term and the lease. A woken ex-leader's fence matches
nothing and its tick stops before it changes anything; a takeover waits for a
fenced transaction in flight, so no write of an old term lands after a new term began.
"""

from __future__ import annotations

from queueing import sql
from queueing.db import fetch_one


class LostLeadership(Exception):
    """This notifier's term no longer holds the lease; it must write nothing more."""

    def __init__(self, term: int) -> None:
        super().__init__(f"lost leadership (term {term}): the lease is another term's or lapsed")
        self.term = term


def leader_fence(*, term: int | None) -> None:
    """Fence the current transaction by the leader's term. Caller is in a transaction.

    Raises LostLeadership when the term no longer holds a live lease. ``term`` None
    (a test driving ``notifier_tick`` by hand) fences nothing.
    """
    if term is None:
        return
    if fetch_one(sql.LEADER_FENCE, {"term": term}) is None:
        raise LostLeadership(term)
