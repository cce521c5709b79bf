"""A small TCP proxy whose connections a test can cut, refuse, stall or slow down.

Each process talks to PostgreSQL (or a screen to a web process) through its own
proxy, so a fault hits one process's network and nothing else. Threads, not
asyncio: the proxy must keep forwarding while the orchestrator sleeps or waits.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

CHUNK = 65536
POLL = 0.1
LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Link:
    client: socket.socket
    server: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.server):
            try:
                # RST rather than FIN, like a peer that vanished or a firewall reset.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


class Proxy:
    """Listens on 127.0.0.1:<port> and forwards each connection to ``target`` (host, port)."""

    def __init__(self, name: str, target: tuple[str, int], *, port: int = 0) -> None:
        self.name = name
        self.target = target
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._refuse_until = 0.0
        self._stall_until = 0.0
        self._delay_until = 0.0
        self._delay = 0.0
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(256)
        self._listener.settimeout(POLL)
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        threading.Thread(target=self._accept_loop, name=f"proxy-{name}", daemon=True).start()

    # --- faults ----------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection now; returns how many."""
        with self._lock:
            links, self._links = self._links, set()
        for link in links:
            link.close()
        return len(links)

    def refuse(self, seconds: float) -> None:
        """New connections are reset at once for ``seconds`` (open ones carry on)."""
        self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)

    def partition(self, seconds: float) -> None:
        """Cut everything and refuse new connections for ``seconds``."""
        self.refuse(seconds)
        self.cut()

    def stall(self, seconds: float) -> None:
        """Open connections stay up but no byte passes for ``seconds`` (a silent partition)."""
        self._stall_until = max(self._stall_until, time.monotonic() + seconds)

    def slow(self, seconds: float, delay: float) -> None:
        """Every chunk waits ``delay`` seconds before it is forwarded, for ``seconds``."""
        self._delay = delay
        self._delay_until = max(self._delay_until, time.monotonic() + seconds)

    def heal(self) -> None:
        self._refuse_until = self._stall_until = self._delay_until = 0.0

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()

    # --- forwarding ------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _Link(client, client).close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.add(link)
                self.connections += 1
            threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link: _Link) -> None:
        peers = {link.client: link.server, link.server: link.client}
        try:
            while not link.closed.is_set():
                now = time.monotonic()
                if now < self._stall_until:
                    time.sleep(min(POLL, self._stall_until - now))
                    continue
                try:
                    readable, _, _ = select.select(list(peers), [], [], POLL)
                except (OSError, ValueError):
                    break
                for sock in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        raise ConnectionError("closed by peer")
                    while time.monotonic() < self._stall_until:
                        time.sleep(POLL)
                    if time.monotonic() < self._delay_until:
                        time.sleep(self._delay)
                    peers[sock].sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._links.discard(link)
            link.close()
