"""Screens as a browser runs them: a session login, a live socket that reconnects, a folded view.

No Django here: the cook runs this in a process of its own (``python -m lab.cook``),
and the orchestrator runs the watching screens in threads.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

# A page reconnects with a margin below the highest id it saw: an event with a lower
# id can commit after a higher one (docs/live.md, "Reconnecting").
RESUME_MARGIN = 1000


def login(base: str, username: str, password: str) -> httpx.Client:
    """An HTTP client signed in with a session cookie, as the login page does it."""
    client = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
    client.get("/accounts/login/")
    answer = client.post(
        "/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies.get("csrftoken", ""),
            "next": "/",
        },
    )
    if answer.status_code != 302 or "sessionid" not in client.cookies:
        raise RuntimeError(f"login as {username} failed: {answer.status_code}")
    return client


class Screen:
    """One live socket (``ws/kitchen/<slug>/`` or ``ws/orders/<token>/``) kept open for a run.

    It reconnects with ``?after=`` after any drop, heartbeats when it is a kitchen
    screen, and folds every event it hears into the latest (state, outlet, fence) of
    each order and the latest state of each outlet.
    """

    def __init__(
        self,
        name: str,
        base: str,
        path: str,
        *,
        cookies: str = "",
        heartbeat: float = 0.0,
        silence: float = 3.0,
    ) -> None:
        self.name = name
        self.base = base.rstrip("/")
        self.path = path
        self.cookies = cookies
        self.heartbeat = heartbeat
        self.silence = silence  # no message for this long while heartbeating: the socket is dead
        self.orders: dict[str, tuple[int, str, str | None, int]] = {}
        self.outlets: dict[str, tuple[int, str]] = {}
        self.seen: set[int] = set()
        self.highest = 0
        self.connects = 0
        self.live = False
        self.epoch = 0  # grows on every connect and every drop
        self.log: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name=f"screen-{name}", daemon=True)

    # --- the view --------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        with self.lock:
            eid = int(event["id"])
            if eid in self.seen:
                return
            self.seen.add(eid)
            self.highest = max(self.highest, eid)
            if event.get("order"):
                token = event["order"]
                known = self.orders.get(token)
                # One order's events are written under its row lock: a higher id is later.
                if known is None or known[0] < eid:
                    self.orders[token] = (eid, event["state"], event["outlet"], int(event["fence"]))
            elif event.get("type") == "outlet" and event.get("outlet"):
                slug = event["outlet"]
                known_outlet = self.outlets.get(slug)
                if known_outlet is None or known_outlet[0] < eid:
                    self.outlets[slug] = (eid, event["state"])

    def view(self) -> dict[str, Any]:
        """What the screen shows now, as plain data for the history."""
        with self.lock:
            return {
                "screen": self.name,
                "path": self.path,
                "orders": {t: [s, o, f] for t, (_, s, o, f) in self.orders.items()},
                "outlets": {slug: s for slug, (_, s) in self.outlets.items()},
                "live": self.live,
                "connects": self.connects,
                "highest": self.highest,
            }

    # --- the socket ------------------------------------------------------------

    def _url(self) -> str:
        after = max(0, self.highest - RESUME_MARGIN)
        return "ws" + self.base[4:] + f"{self.path}?after={after}"

    def _connect(self) -> ClientConnection:
        headers = {"Origin": self.base}
        if self.cookies:
            headers["Cookie"] = self.cookies
        return connect(self._url(), additional_headers=headers, open_timeout=5, close_timeout=1)

    def _note(self, what: str, **extra: Any) -> None:
        self.log.append({"at": time.time(), "screen": self.name, "socket": what, **extra})

    def run(self) -> None:
        backoff = 0.1
        while not self.stop.is_set():
            try:
                with self._connect() as ws:
                    self.connects += 1
                    self.epoch += 1
                    self._note("open")
                    backoff = 0.1
                    self._serve(ws)
            except (OSError, WebSocketException, TimeoutError) as exc:
                self._note("error", error=type(exc).__name__)
            if self.live:
                self.epoch += 1
            self.live = False
            self._note("closed")
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _serve(self, ws: ClientConnection) -> None:
        seq = 0
        next_beat = 0.0
        heard = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if self.heartbeat and now >= next_beat:
                seq += 1
                ws.send(json.dumps({"type": "heartbeat", "seq": seq}))
                next_beat = now + self.heartbeat
            elif not self.heartbeat and now - heard > self.silence / 2 and now >= next_beat:
                ws.send(json.dumps({"type": "ping"}))
                next_beat = now + self.silence / 3
            if now - heard > self.silence:
                self._note("silent")
                return
            try:
                raw = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            heard = time.monotonic()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "event":
                self.apply(message["event"])
            elif kind == "live":
                self.live = True
                if message.get("truncated"):
                    self._note("truncated")
            elif kind == "error":
                self._note("error", error=message.get("message"))

    def start(self) -> Screen:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
