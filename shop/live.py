"""Who hears an event, and the in-process bus that carries it to the sockets (docs/live.md).

The engine's listener (``queueing.listener``) reads events in commit order and
hands each batch here; ``events_fan_out`` sends it as one channel-layer message
per group (a kitchen per outlet, an order per token, ops), with the cursor the
batch brings a socket to, and wakes the claims parked at an outlet that may
have work now (``claim_waiting``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from queueing.events import Cursor, public_event
from queueing.listener import EventListener
from queueing.listener import listener_ready as engine_listener_ready
from shop import live_metrics

OPS_GROUP = "ops"
# The channel-layer message a consumer handles in ``hearth_events``:
# {"events": [...], "xids": [writing transaction of each], "cursor": "<snapshot text>"}.
EVENTS_MESSAGE = "hearth.events"


def kitchen_group(slug: str) -> str:
    return f"kitchen.{slug}"


def order_group(token: str) -> str:
    return f"order.{token}"


def event_groups(event: dict[str, Any]) -> list[str]:
    """Who hears an event: ops, the kitchens of its outlet and the outlet it left, its order."""
    groups = [OPS_GROUP]
    for slug in (event.get("outlet"), event.get("from_outlet")):
        if isinstance(slug, str) and slug and kitchen_group(slug) not in groups:
            groups.append(kitchen_group(slug))
    token = event.get("order")
    if isinstance(token, str) and token:
        groups.append(order_group(token))
    return groups


# Events that never give an outlet's stations something to claim; any other event of
# the outlet (placed, rerouted to it, released, recalled, a lease taken back...) wakes
# its parked claims, which claim once and park again when a sibling station was faster.
NO_WORK_EVENTS = frozenset({"claimed", "ready", "completed", "cancelled"})
# The claims parked in this process, by outlet slug: each waits on its own asyncio.Event.
_claim_waiters: dict[str, set[asyncio.Event]] = {}


@asynccontextmanager
async def claim_waiting(slug: str) -> AsyncIterator[asyncio.Event]:
    """An event set when something claimable may have arrived at the outlet (while inside)."""
    woken = asyncio.Event()
    _claim_waiters.setdefault(slug, set()).add(woken)
    try:
        yield woken
    finally:
        waiters = _claim_waiters.get(slug)
        if waiters is not None:
            waiters.discard(woken)
            if not waiters:
                del _claim_waiters[slug]


def claims_parked() -> int:
    """How many claims this process holds parked (for tests and the bench)."""
    return sum(len(w) for w in _claim_waiters.values())


def claims_wake(events: list[dict[str, Any]]) -> None:
    """Wake the parked claims of every outlet these events may have given work."""
    if not _claim_waiters:
        return
    for event in events:
        if event.get("type") in NO_WORK_EVENTS:
            continue
        for woken in _claim_waiters.get(event.get("outlet") or "", ()):
            woken.set()


async def events_fan_out(events: list[dict[str, Any]], cursor: Cursor) -> None:
    """One channel-layer message per group with its events, oldest first, and the batch's cursor.

    Each event goes out as screens get it (``public_event``, made once here, not per
    socket), with its writing transaction's id beside it in ``xids``: a socket drops
    what its hello's snapshot already saw.
    """
    claims_wake(events)
    by_group: dict[str, tuple[list[dict[str, Any]], list[int | None]]] = {}
    for event in events:
        public, xid = public_event(event), event.get("xid")
        for group in event_groups(event):
            batch, xids = by_group.setdefault(group, ([], []))
            batch.append(public)
            xids.append(xid)
    layer = get_channel_layer()
    text = str(cursor)
    # Side by side: a batch's groups are independent, and the listener waits for this
    # batch before it reads the next, so each socket still sees commit order.
    await asyncio.gather(
        *(
            layer.group_send(
                group, {"type": EVENTS_MESSAGE, "events": batch, "xids": xids, "cursor": text}
            )
            for group, (batch, xids) in by_group.items()
        )
    )
    live_metrics.figures.events_fanned_out(events)


async def listener_ready(*, timeout: float) -> EventListener | None:
    """The process's listener, fanning out to this process's sockets, once it listens."""
    live_metrics.reporting()  # the process's figures for /metrics live as long as its sockets
    return await engine_listener_ready(
        on_events=events_fan_out,
        timeout=timeout,
        retry_min=float(getattr(settings, "HEARTH_LISTENER_RETRY_MIN", 0.1)),
        retry_max=float(getattr(settings, "HEARTH_LISTENER_RETRY_MAX", 5.0)),
    )


class ProcessChannelLayer(BaseChannelLayer):
    """A channel layer for one process's sockets: Channels' layer API, no per-call expiry walk.

    Channels' ``InMemoryChannelLayer`` walks every channel and group membership of
    the process on every ``receive`` and ``group_send`` to expire old messages;
    with a thousand sockets that walk, once per message per socket, was the largest
    cost of a web process's event loop. Here a message's age is checked only where
    it is taken off its queue, a full queue drops that socket's message (as
    Channels does) and a socket's membership ends when it leaves its group, or
    when its queue is full and it has taken nothing for ``expiry`` seconds (a
    consumer that died without leaving).
    """

    extensions = ["groups", "flush"]

    def __init__(self, expiry: int = 60, capacity: int = 100, **kwargs: Any) -> None:
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.channels: dict[str, asyncio.Queue[tuple[float, dict[str, Any]]]] = {}
        self.groups: dict[str, set[str]] = {}
        self._last_taken: dict[str, float] = {}

    def _queue(self, channel: str) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
            self._last_taken.setdefault(channel, time.monotonic())
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        now = time.monotonic()
        try:
            # Every receiver of a group message gets the same dict: they only read it.
            self._queue(channel).put_nowait((now + self.expiry, message))
        except asyncio.QueueFull:
            if now - self._last_taken.get(channel, now) > self.expiry:
                self._drop(channel)
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        queue = self._queue(channel)
        try:
            while True:
                expires, message = await queue.get()
                now = self._last_taken[channel] = time.monotonic()
                if expires >= now:
                    return message
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
                self._last_taken.pop(channel, None)

    def _drop(self, channel: str) -> None:
        """Forget a channel whose consumer is gone: its queue and every membership."""
        self.channels.pop(channel, None)
        self._last_taken.pop(channel, None)
        for group in [g for g, members in self.groups.items() if channel in members]:
            self.groups[group].discard(channel)
            if not self.groups[group]:
                del self.groups[group]

    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{prefix}.inmemory!{secrets.token_urlsafe(9)}"

    async def flush(self) -> None:
        self.channels = {}
        self.groups = {}
        self._last_taken = {}

    async def close(self) -> None:
        pass

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        members = self.groups.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.groups[group]

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass
