"""A cook at a kitchen screen: ``python -m lab.cook --server URL --outlet SLUG ...``.

It signs in, keeps the kitchen socket open (heartbeating as the page does) and
works tickets through the screen's HTTP actions: Next, then Ready and Bump after
a cooking time drawn from its seed. Every action and answer, and every time the
socket opens or drops, is one JSON line in ``--log``: the nemesis can SIGKILL or
SIGSTOP this process like any other.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from typing import Any

import httpx

from lab.screens import Screen, login


class Cook:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.random = random.Random(args.seed)
        self.tab = f"c{args.seed % 1000}"
        self.fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.running = True
        self.bumped: set[tuple[str, int]] = set()
        self.answered = False

    def write(self, **record: Any) -> None:
        record = {"at": time.time(), "pid": os.getpid(), **record}
        os.write(self.fd, (json.dumps(record) + "\n").encode())

    def act(self, client: httpx.Client, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a screen action; its answer's JSON on a 200, {} otherwise; ``self.answered`` says
        whether any answer came (a cook presses again when the screen showed nothing)."""
        self.answered = False
        body = {**body, "tab": self.tab}
        sent = time.time()
        try:
            answer = client.post(
                f"/kitchen/{self.args.outlet}/{action}",
                json=body,
                headers={"X-CSRFToken": client.cookies.get("csrftoken") or ""},
            )
        except httpx.HTTPError as exc:
            self.write(action=action, sent=sent, token=body.get("token"), fence=body.get("fence"),
                       status=None, error=type(exc).__name__, epoch=self.screen.epoch)  # fmt: skip
            return {}
        self.answered = True
        try:
            data = answer.json()
        except ValueError:
            data = {}
        ticket = data.get("ticket") or {}
        self.write(
            action=action,
            sent=sent,
            token=body.get("token") or ticket.get("token"),
            fence=body.get("fence", ticket.get("fence")),
            status=answer.status_code,
            error=data.get("error"),
            ticket=ticket or None,
            epoch=self.screen.epoch,
        )
        return data if answer.status_code == 200 else {}

    def ready_tickets(self) -> list[tuple[str, int]]:
        """Tickets the screen shows as ready at this outlet, oldest event first."""
        with self.screen.lock:
            shown = sorted(self.screen.orders.items(), key=lambda item: item[1][0])
        return [
            (t, f)
            for t, (_, state, outlet, f) in shown
            if state == "ready" and outlet == self.args.outlet
        ]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        while self.running:
            try:
                client = login(self.args.server, self.args.username, self.args.password)
                break
            except (httpx.HTTPError, RuntimeError) as exc:
                self.write(action="login", status=None, error=str(exc)[:200])
                time.sleep(0.5)
        else:
            return 0
        cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        self.screen = Screen(
            "cook",
            self.args.server,
            f"/ws/kitchen/{self.args.outlet}/",
            cookies=cookies,
            heartbeat=self.args.heartbeat,
        )
        self.screen.start()
        while self.running:
            if not self.screen.live:
                time.sleep(0.1)  # a cook works with a screen that shows the queue
                continue
            # A ticket on the pass (ready) is handed over first, as a cook bumps what the screen
            # shows as ready: after a restart, the screen shows what the last one left there.
            waiting = [t for t in self.ready_tickets() if t not in self.bumped]
            if waiting:
                token, fence = waiting[0]
                self.act(client, "complete", {"token": token, "fence": fence})
                if self.answered:
                    self.bumped.add((token, fence))  # once: a refusal means it is not ours
                else:
                    time.sleep(0.3)
                continue
            data = self.act(client, "next", {})
            ticket = data.get("ticket")
            if not ticket:
                time.sleep(0.3)
                continue
            # Mostly quick; sometimes longer than a lease, as a real pizza is.
            seconds = self.random.uniform(0.05, 0.3)
            if self.random.random() < self.args.long_share:
                seconds = self.random.uniform(self.args.long, self.args.long * 1.5)
            self.write(action="cook", token=ticket["token"], fence=ticket["fence"], seconds=seconds)
            time.sleep(seconds)
            body = {"token": ticket["token"], "fence": ticket["fence"]}
            if self.act(client, "ready", body):
                self.act(client, "complete", body)
                if self.answered:
                    self.bumped.add((ticket["token"], ticket["fence"]))
        self.screen.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--outlet", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--long", type=float, default=8.0, help="a long pizza's seconds")
    parser.add_argument("--long-share", type=float, default=0.04)
    return Cook(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
