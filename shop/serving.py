"""How each web process's Daphne (Twisted underneath) takes connections and logs requests.

``up`` starts one Daphne per core on one listening socket, and the kernel hands each new
connection to whichever process calls ``accept()`` first. Twisted accepts up to 100
pending connections each time the socket is readable, so a process that woke first
took a whole burst: 32 keep-alive connections opened together were split 29/3 or
26/6 between two processes, and the one with 29 set the pace while the other idled.
Here a process starts at one connection per wake-up and, as Twisted does, takes more
when the last batch was full, up to ``ACCEPT_BATCH_MAX``: a burst is shared, and a busy
process still keeps up with new connections (one per wake-up alone could not: its
loop, busy with 1,000 sockets, let the backlog fill at 50 new sockets a second).

Twisted also formatted an access-log line for every request, which Daphne (below
``-v 2``, as ``up`` runs it) sends nowhere; Daphne's own ``--access-log`` is unchanged.
"""

from __future__ import annotations

from typing import Any

ACCEPT_BATCH_MAX = 16


def _accepts(self: Any) -> int:
    return int(self.__dict__.get("_hearth_accepts", 1))


def _accepts_set(self: Any, value: int) -> None:
    """Twisted grows its batch by 20 after a full one and shrinks it to what it took; the
    first value it sets (its 100, when the port is made) starts the batch at one instead."""
    first = "_hearth_accepts" not in self.__dict__
    self.__dict__["_hearth_accepts"] = 1 if first else max(1, min(int(value), ACCEPT_BATCH_MAX))


def _no_twisted_access_log(self: Any, request: Any) -> None:
    """Daphne's own access log (``server.log_action``) is the one that is kept."""


def daphne_adjusted() -> None:
    """Accept a small batch per wake-up, and build no access-log line nobody reads."""
    from daphne import http_protocol
    from twisted.internet import tcp

    tcp.Port.numberAccepts = property(_accepts, _accepts_set)  # type: ignore[assignment]
    http_protocol.HTTPFactory.log = _no_twisted_access_log
