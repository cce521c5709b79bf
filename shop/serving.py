"""How each web process's Daphne (Twisted underneath) takes connections and logs requests.

``up`` starts one Daphne per core on one listening socket, and the kernel hands each new
connection to whichever process calls ``accept()`` first. Twisted accepts as many
pending connections as it can (up to 100) each time the socket is readable, so a
process that woke first took a whole burst: 32 keep-alive connections opened together
were split 29/3 or 26/6 between two processes, and the one with 29 set the pace while
the other idled. Accepting one connection per wake-up, as nginx does by default
(``multi_accept off``), lets the other processes take their share: a busy process comes
back to its loop later, and an idle one accepts first.

Twisted also formatted an access-log line for every request, which Daphne (below
``-v 2``, as ``up`` runs it) sends nowhere; Daphne's own ``--access-log`` is unchanged.
"""

from __future__ import annotations

from typing import Any


def _one(self: Any) -> int:
    return 1


def _kept_at_one(self: Any, value: int) -> None:
    """Twisted grows its accept batch after a full one; it stays at one connection."""


def _no_twisted_access_log(self: Any, request: Any) -> None:
    """Daphne's own access log (``server.log_action``) is the one that is kept."""


def daphne_adjusted() -> None:
    """Accept one connection per wake-up, and build no access-log line nobody reads."""
    from daphne import http_protocol
    from twisted.internet import tcp

    tcp.Port.numberAccepts = property(_one, _kept_at_one)  # type: ignore[assignment]
    http_protocol.HTTPFactory.log = _no_twisted_access_log
