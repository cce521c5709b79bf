"""A headless outlet: heartbeats, claims, "cooks" at a set pace, acknowledges with its fence.

It talks to Hearth over the HTTP API only, as an outlet's computer would, and
never to the database. Each station loops claim → cook (renewing the lease at a
third of its length) → ready → complete. A 409 ``stale_fence`` means the order
was taken away (the outlet was declared down, the lease ran out): the station
drops it and carries on, because someone else now holds the only valid claim.

Network errors and 5xx answers are retried with a bounded backoff, so the agent
rides through a restart of the server or of PostgreSQL. A retried write may find
its first attempt already applied (the answer was lost, not the request): a
retried ``complete`` that finds the order completed under the same fence counts
as done, which is what keeps the made-log exactly one line per completed claim.

SIGTERM or SIGINT stops the stations from starting anything new; an order being
cooked is abandoned (its lease runs out and the notifier moves it), an
acknowledgement already on the wire gets a moment to finish, and the agent
exits 0 within a second or two.

On start the agent releases its stations' names (``stations/release``): whatever
they held before a restart is handed back at once (being made: queued again;
ready: waiting for the next claim) instead of waiting for its lease. A claim that
comes back ``ready`` is made already (a station went away before handing it over):
the station completes it without cooking it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("hearth.agent")

# An idle station's claim waits at the server up to ``claim_wait`` seconds for an order
# (``claim?wait=``: woken by the order's commit, no polling); its HTTP client waits a
# little longer than that. Each wait that brings nothing costs the web process a request
# per station (an idle fleet's stations re-park all day), so the default is as long as a
# proxy's usual 60-second idle timeout allows; behind one that cuts idle requests sooner,
# pass a shorter ``--claim-wait`` (at least CLAIM_WAIT_MIN). A server that answers 204 at
# once (one without waiting claims) is asked again after IDLE_POLL_MIN, doubling up to
# IDLE_POLL_MAX.
CLAIM_WAIT = 50.0
CLAIM_WAIT_MIN = 1.0
CLAIM_WAIT_SLACK = 10.0
IDLE_POLL_MIN = 0.1
IDLE_POLL_MAX = 1.0
BACKOFF_START = 0.1
BACKOFF_MAX = 2.0
REQUEST_TIMEOUT = 10.0
# An idle connection is kept this long (httpx's default is 5 s, the heartbeat interval, so
# every beat of an idle outlet opened a new TCP connection: an accept and a close more for
# the web process each time). Longer than the heartbeat interval, shorter than the idle
# timeout of Daphne (Twisted's HTTP factory: 60 s); one the server closed sooner (a proxy's)
# is seen closed and replaced before it is used.
KEEP_ALIVE = 30.0
STOP_GRACE = 1.5  # seconds an acknowledgement on the wire gets after a stop


@dataclass(frozen=True)
class AgentConfig:
    outlet: str
    token: str
    server: str = "http://127.0.0.1:8000"
    stations: int = 2
    pace: float = 1.0
    heartbeat_interval: float = 5.0
    made_log: Path | None = None
    claim_wait: float = CLAIM_WAIT


class Stopping(Exception):
    """The agent was asked to stop while waiting to retry."""


class AgentRefused(Exception):
    """The server refuses this agent for good (a wrong or revoked token)."""


@dataclass
class Answer:
    status: int
    data: dict[str, Any]
    retried: bool  # an earlier attempt may have reached the server

    @property
    def error(self) -> str:
        return str(self.data.get("error", ""))


def cook_seconds(claim: dict[str, Any], pace: float) -> float:
    """How long a station cooks this order: its slowest line's time, times the pace."""
    order = claim["order"]
    times = [int(line.get("prep_seconds") or 0) for line in order.get("lines", [])]
    slowest = max(times, default=0) or int(order.get("prep_seconds") or 0)
    return slowest * pace


class Agent:
    def __init__(
        self, config: AgentConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.refused: str = ""
        self.client = httpx.AsyncClient(
            base_url=config.server.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=REQUEST_TIMEOUT,
            # httpx's own limits (100 connections, 20 kept), with a longer keep-alive.
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEP_ALIVE
            ),
            transport=transport,
        )
        self._made_fd: int | None = None
        self.completed = 0

    # --- talking to the server -------------------------------------------------

    async def call(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        who: str,
        stoppable: bool = True,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Answer:
        """POST until the server answers with something other than a 5xx.

        Raises Stopping when the agent stops while waiting to retry, unless not
        ``stoppable`` (an acknowledgement of a made order: only the exit deadline ends it).
        """
        delay = BACKOFF_START
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.client.post(path, json=payload, timeout=timeout)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 500:
                    try:
                        data = response.json() if response.content else {}
                    except ValueError:
                        data = {}
                    if response.status_code == 401:
                        raise AgentRefused(str(data.get("message", "token refused")))
                    if attempt > 1:
                        log.info("%s: POST %s went through after %d attempts", who, path, attempt)
                    return Answer(response.status_code, data, retried=attempt > 1)
                problem = f"server answered {response.status_code}"
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s: POST %s failed (%s); retrying", who, path, problem)
            # Full jitter keeps a fleet of agents from hammering a server that is coming back.
            pause = random.uniform(delay / 2, delay)
            if stoppable:
                if await self._sleep(pause):
                    raise Stopping
            else:
                await asyncio.sleep(pause)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopping."""
        if seconds <= 0:
            return self.stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    # --- the heartbeat ---------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        seq = 0
        who = f"{self.config.outlet} heartbeat"
        state = ""
        while not self.stop.is_set():
            seq += 1
            try:
                answer = await self.call(
                    f"/api/outlets/{self.config.outlet}/heartbeat",
                    {"seq": seq, "source": "agent"},
                    who=who,
                )
            except Stopping:
                return
            if answer.status != 200:
                log.error("%s refused: %s", who, answer.data.get("message", answer.status))
                if answer.status == 403:
                    raise AgentRefused(str(answer.data.get("message")))
            elif answer.data.get("state") != state:
                state = str(answer.data.get("state"))
                log.info("%s %d: outlet %s is %s", who, seq, self.config.outlet, state)
            if await self._sleep(self.config.heartbeat_interval):
                return

    # --- a station -------------------------------------------------------------

    def station_names(self) -> list[str]:
        return [f"{self.config.outlet}-{n}" for n in range(1, self.config.stations + 1)]

    async def stations_release(self) -> None:
        """Hand back what these stations held before a restart, so nobody waits a lease for it."""
        who = f"{self.config.outlet} start"
        answer = await self.call(
            f"/api/outlets/{self.config.outlet}/stations/release",
            {"stations": self.station_names()},
            who=who,
        )
        if answer.status == 403:
            raise AgentRefused(str(answer.data.get("message")))
        if answer.status != 200:
            log.error("%s: release refused: %s", who, answer.data.get("message", answer.status))
            return
        released = answer.data.get("released", [])
        if released:
            log.info(
                "%s: handed back %d orders its stations held before (%s)",
                who,
                len(released),
                ", ".join(f"order {r['number']} {r['state']}" for r in released[:10]),
            )

    async def station_loop(self, number: int) -> None:
        name = f"{self.config.outlet}-{number}"
        who = f"{self.config.outlet} station {number}"
        idle_poll = IDLE_POLL_MIN
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            asked = loop.time()
            try:
                answer = await self.claim_waiting(name, who=who)
            except Stopping:
                return
            if answer.status == 204:
                if loop.time() - asked >= self.config.claim_wait / 2:
                    idle_poll = IDLE_POLL_MIN  # it waited: ask again at once
                    continue
                # Answered at once: a server without waiting claims; poll, backing off.
                if await self._sleep(idle_poll * random.uniform(0.8, 1.2)):
                    return
                idle_poll = min(IDLE_POLL_MAX, idle_poll * 2)
                continue
            idle_poll = IDLE_POLL_MIN
            if answer.status != 200:
                log.error("%s: claim refused: %s", who, answer.data.get("message", answer.status))
                if answer.status == 403:
                    raise AgentRefused(str(answer.data.get("message")))
                if await self._sleep(BACKOFF_MAX):
                    return
                continue
            try:
                await self.cook(answer.data, who=who)
            except Stopping:
                return

    async def claim_waiting(self, name: str, *, who: str) -> Answer:
        """Claim, waiting at the server for an order; Stopping as soon as the agent stops.

        A claim cut off by a stop claims nothing (the server drops a parked claim whose
        client left); one that claimed just before is handed back by the next start's release.
        """
        claiming = asyncio.create_task(
            self.call(
                f"/api/outlets/{self.config.outlet}/claim?wait={self.config.claim_wait:g}",
                {"station": name},
                who=who,
                timeout=self.config.claim_wait + CLAIM_WAIT_SLACK,
            )
        )
        stopping = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({claiming, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not claiming.done():
                claiming.cancel()
                with contextlib.suppress(asyncio.CancelledError, Stopping):
                    await claiming
        if not claiming.done() or claiming.cancelled():
            raise Stopping
        return claiming.result()

    async def cook(self, claim: dict[str, Any], *, who: str) -> None:
        """Cook one claimed order and acknowledge it; drop it when its fence is lost."""
        order = claim["order"]
        token, number, fence = order["token"], order["number"], claim["fence"]
        if claim.get("state") == "ready":
            log.info("%s: order %s is made already (fence %s): handing it over", who, number, fence)
            await self.hand_over(token=token, number=number, fence=fence, who=who)
            return
        seconds = cook_seconds(claim, self.config.pace)
        log.info("%s: claimed order %s (fence %s), cooking %.1fs", who, number, fence, seconds)
        renew_every = max(float(claim.get("lease_seconds") or 120) / 3, 0.05)
        loop = asyncio.get_running_loop()
        done_at = loop.time() + seconds
        while True:
            left = done_at - loop.time()
            if left <= 0:
                break
            if await self._sleep(min(left, renew_every)):
                log.info("%s: stopping; order %s left to its lease", who, number)
                raise Stopping
            if done_at - loop.time() > 0:
                answer = await self.call(f"/api/orders/{token}/renew", {"fence": fence}, who=who)
                if answer.status != 200:
                    self._lost(who, number, answer)
                    return
        # From here the pizza is made: finish acknowledging even if a stop comes in.
        answer = await self.call(
            f"/api/orders/{token}/ready", {"fence": fence}, who=who, stoppable=False
        )
        if answer.status != 200 and not (answer.retried and answer.error == "invalid_state"):
            self._lost(who, number, answer)
            return
        log.info("%s: order %s ready", who, number)
        await self.hand_over(token=token, number=number, fence=fence, who=who)

    async def hand_over(self, *, token: str, number: int, fence: int, who: str) -> None:
        """Complete a ready order (its lease was renewed when it was marked ready)."""
        answer = await self.call(
            f"/api/orders/{token}/complete", {"fence": fence}, who=who, stoppable=False
        )
        if answer.status == 200 or (answer.retried and answer.error == "invalid_state"):
            # invalid_state on a retry: the first attempt completed it, its answer was lost.
            self._made(token=token, number=number, fence=fence)
            self.completed += 1
            log.info("%s: order %s completed", who, number)
            return
        self._lost(who, number, answer)

    def _lost(self, who: str, number: int, answer: Answer) -> None:
        # not_found: the order moved to another outlet, which is told nothing more.
        if answer.error in ("stale_fence", "not_found"):
            log.warning(
                "%s: fence lost on order %s; dropping it (%s)",
                who,
                number,
                answer.data.get("message"),
            )
        else:
            log.warning(
                "%s: order %s refused (%s: %s); dropping it",
                who,
                number,
                answer.status,
                answer.data.get("message", ""),
            )

    def _made(self, *, token: str, number: int, fence: int) -> None:
        if self.config.made_log is None:
            return
        line = json.dumps(
            {
                "order": token,
                "number": number,
                "fence": fence,
                "outlet": self.config.outlet,
                "at": datetime.now(UTC).isoformat(),
            }
        )
        if self._made_fd is None:
            self._made_fd = os.open(
                self.config.made_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        # One write() of one line on an O_APPEND file: agents sharing a log never interleave.
        os.write(self._made_fd, (line + "\n").encode())

    # --- running ---------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; 0 after a clean stop, 1 when the server refuses this agent."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig)
        log.info(
            "agent for outlet %s: %d stations, pace %s, server %s",
            self.config.outlet,
            self.config.stations,
            self.config.pace,
            self.config.server,
        )
        try:
            await self.stations_release()
        except Stopping:
            await self.client.aclose()
            return 0
        except AgentRefused as exc:
            log.error("outlet %s: the server refuses this agent: %s", self.config.outlet, exc)
            await self.client.aclose()
            return 1
        tasks = [asyncio.create_task(self.heartbeat_loop(), name="heartbeat")]
        tasks += [
            asyncio.create_task(self.station_loop(n), name=f"station-{n}")
            for n in range(1, self.config.stations + 1)
        ]
        code = 0
        try:
            stop_wait = asyncio.create_task(self.stop.wait())
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending and not self.stop.is_set():
                done, pending = await asyncio.wait(
                    pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop_wait)
                for task in done - {stop_wait}:
                    failure = task.exception()
                    if isinstance(failure, AgentRefused):
                        log.error(
                            "outlet %s: the server refuses this agent: %s",
                            self.config.outlet,
                            failure,
                        )
                        code = 1
                        self.stop.set()
                    elif failure is not None:
                        raise failure
            stop_wait.cancel()
            # Stopping: stations finish an acknowledgement on the wire, then everything ends.
            finished, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for task in finished:
                # Retrieved, so asyncio does not print each station's refusal again.
                if not task.cancelled():
                    task.exception()
        finally:
            await self.client.aclose()
            if self._made_fd is not None:
                os.close(self._made_fd)
        log.info(
            "agent for outlet %s stopped; %d orders completed", self.config.outlet, self.completed
        )
        return code

    def request_stop(self, sig: int | None = None) -> None:
        if not self.stop.is_set():
            log.info(
                "agent for outlet %s: %s, stopping",
                self.config.outlet,
                signal.Signals(sig).name if sig else "stop",
            )
        self.stop.set()


def agent_run(config: AgentConfig) -> int:
    """Run an agent in its own event loop until SIGTERM/SIGINT; returns the exit code."""

    async def main() -> int:
        return await Agent(config).run()

    return asyncio.run(main())
