"""Each web process's Daphne accepts in small batches and builds no unread log line."""

from __future__ import annotations

import io
import socket
from types import SimpleNamespace

import pytest
from daphne import http_protocol
from twisted.internet import epollreactor, tcp
from twisted.internet.protocol import Factory, Protocol

from shop.serving import ACCEPT_BATCH_MAX, daphne_adjusted


def test_twisted_port__a_burst_is_accepted_in_small_batches() -> None:
    """A process woken by a burst takes one connection and goes back to its loop, so the
    other processes on the same socket take theirs (Twisted took up to 100 at once); after
    a full batch it takes more, up to ACCEPT_BATCH_MAX, so a busy loop keeps up."""
    daphne_adjusted()
    reactor = epollreactor.EPollReactor()  # its own, not installed: no event loop runs
    port = tcp.Port(0, Factory.forProtocol(Protocol), interface="127.0.0.1", reactor=reactor)
    port.startListening()
    pending = ACCEPT_BATCH_MAX + 5
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(pending)]
    try:
        port.doRead()
        assert port.sessionno == 1  # one of the pending connections accepted
        port.doRead()
        assert port.sessionno == 1 + ACCEPT_BATCH_MAX  # the batch grew, up to its cap
        assert port.numberAccepts == ACCEPT_BATCH_MAX
        port.doRead()
        assert port.sessionno == pending
        assert port.numberAccepts == 4  # Twisted shrinks it to what it took
    finally:
        for client in clients:
            client.close()
        port.socket.close()


def test_daphne_factory__builds_no_twisted_access_log_line() -> None:
    """Daphne sends Twisted's log nowhere; the line Twisted formatted per request is not built."""
    daphne_adjusted()
    factory = http_protocol.HTTPFactory(SimpleNamespace())
    written = io.StringIO()
    factory._logFile = written
    factory._logFormatter = lambda *_: pytest.fail("an access-log line was formatted")
    factory.log(SimpleNamespace())
    assert written.getvalue() == ""
