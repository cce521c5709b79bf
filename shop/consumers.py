"""The live sockets: a kitchen's, a customer's order, and operations (protocol in docs/live.md).

Each socket joins its group before it reads its replay from the table, so an
event committed at any moment is either in the replay or in the stream, and may
be in both: a socket never sends one event id twice. Replays read from a cursor
(a snapshot, ``queueing.events``), so they follow commit order like the stream,
and every cursor a socket hands out covers everything it sent before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from queueing.errors import QueueError
from queueing.events import Cursor, CursorInvalid, events_cursor, events_since, public_event
from queueing.models import Order, Outlet
from queueing.services import outlet_heartbeat, station_claims_renew
from shop.access import can_open_kitchen, customer_detail, is_manager, session_user, works_at
from shop.kitchen import TAB, station_of
from shop.live import OPS_GROUP, kitchen_group, listener_ready, order_group
from shop.live_metrics import figures

log = logging.getLogger("hearth.live")

# Close codes (after accept, so the browser sees them; see docs/live.md).
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN = 1013  # the database is unreachable (listener or replay): reconnect later
LISTENER_WAIT_SECONDS = 10.0
# Replays are capped to the newest this many events; "live" then says "truncated".
OPS_REPLAY_LIMIT = 500
KITCHEN_REPLAY_LIMIT = 5_000
MAX_EVENT_ID = 2**63 - 1
# Longer slugs or other tokens name no outlet or order (and would be no valid group name).
SLUG_MAX = Outlet._meta.get_field("slug").max_length or 50
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # orders' tokens are token_urlsafe
AFTER_PATTERN = re.compile(r"[0-9]{1,19}")


class SentIds:
    """The event ids one socket has sent; remembers the newest ``keep`` of them."""

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._ids

    def add(self, event_id: int) -> bool:
        """Record ``event_id``; False when it was sent already."""
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.keep:
            self._ids.discard(self._order.popleft())
        return True


class BadMessage(ValueError):
    """A client message or parameter the socket cannot act on; the text is sent back."""


def event_id_of(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EVENT_ID:
        raise BadMessage(f"{name} must be a non-negative integer event id")
    return value


def query_param(scope: dict[str, Any], name: str) -> list[str] | None:
    query = scope.get("query_string", b"").decode("latin-1")
    return parse_qs(query, keep_blank_values=True).get(name)


def cursor_of(value: Any, name: str) -> Cursor:
    """A cursor the server gave out (text) or a legacy event id (integer or digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value) if value >= 0 else "-"
    if not isinstance(value, str):
        raise BadMessage(f"{name} must be a cursor from the server or an event id")
    try:
        return Cursor.parse(value)
    except CursorInvalid as exc:
        raise BadMessage(str(exc).replace("after", name, 1)) from None


def after_param(scope: dict[str, Any]) -> Cursor | None:
    """The ``?after=<cursor>`` of the socket URL; None when absent."""
    values = query_param(scope, "after")
    if not values:
        return None
    return cursor_of(values[-1], "after")


def replay(
    *,
    after: Cursor | None,
    outlet_id: int | None = None,
    order_id: int | None = None,
    limit: int | None = None,
) -> tuple[Cursor, int, list[dict[str, Any]], bool]:
    """(cursor of now, newest event id, events since ``after`` for this audience, cut by the cap).

    The cursor covers the replay: a client that keeps it misses nothing when it resumes.
    """
    now, last = events_cursor()
    if after is None:
        return now, last, [], False
    events, now = events_since(
        after,
        outlet_id=outlet_id,
        order_id=order_id,
        limit=None if limit is None else limit + 1,
    )
    truncated = limit is not None and len(events) > limit
    kept = events[-limit:] if truncated and limit else events
    return now, last, [public_event(e) for e in kept], truncated


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """hello, replay, live, then the stream; ping and resume; never one event id twice."""

    kind = ""  # the socket's kind in /metrics: kitchen, order or ops
    group: str = ""
    replay_limit: int | None = None
    admitted = False  # nothing is sent on a socket until its access was checked
    # Staff sockets check their access again while they live (staff leave, sign out).
    recheck_access = False
    recheck_task: asyncio.Task[None] | None = None
    hello_cursor: Cursor | None = None  # the snapshot the hello handed out
    counted = False  # among this process's open sockets (/metrics) since it was admitted

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Counted down however the socket ends: a close, an error, or Daphne cancelling it.
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.counted:
                figures.socket_closed(self.kind)

    async def connect(self) -> None:
        self.sent = SentIds()
        self.cursor: Cursor | None = None  # the newest cursor this socket handed out
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        # Accept first: a close code reaches the client only on an open socket.
        await self.accept()
        try:
            after = after_param(self.scope)
        except BadMessage as exc:
            await self.send_error(str(exc))
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        refusal = self.prepare()
        if refusal is not None:
            await self.close(code=refusal)
            return
        if await listener_ready(timeout=LISTENER_WAIT_SECONDS) is None:
            await self.send_error("live updates are unavailable right now; try again")
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        # Join before reading the table: whatever commits after the read is then streamed.
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.groups = [self.group]
        # Access and replay in one trip to the sync thread, which every socket of the
        # process shares (a reconnect storm queues there).
        try:
            refusal, cursor, last_id, events, truncated = await database_sync_to_async(self.admit)(
                after
            )
        except DatabaseError as exc:
            log.warning("live socket %s: database unavailable (%s)", self.scope.get("path"), exc)
            await self.send_error("live updates are unavailable right now; try again")
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        if refusal is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.groups = []
            await self.close(code=refusal)
            return
        self.admitted = True
        self.counted = True
        figures.socket_opened(self.kind)
        # What the hello's snapshot saw the client has (the page, then the replay); the
        # stream carries only what committed after it, though the fan-out may bring an
        # event that committed before (the process had not read it yet when we joined).
        self.hello_cursor = cursor
        if self.recheck_access:
            self.recheck_task = asyncio.create_task(self.recheck_forever())
        await self.send_json({"type": "hello", "last_event_id": last_id, "cursor": str(cursor)})
        await self.send_replay(events, truncated, cursor)

    def access_now(self) -> int | None:
        """Synchronous: the socket's user as the session says now, checked again; a close code to end it."""
        user = session_user(session_key=self.session_key)
        if not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        self.scope["user"] = user
        return self.authorize()

    async def access_still_holds(self) -> bool:
        """Check access again; when it has ended, stop sending and close with the code that says why."""
        if not self.admitted:
            return False
        refusal = await database_sync_to_async(self.access_now)()
        if refusal is None:
            return True
        self.admitted = False  # from this moment nothing is sent and no message is acted on
        await self.channel_layer.group_discard(self.group, self.channel_name)
        self.groups = []
        await self.send_json({"type": "error", "message": "access to this screen has ended"})
        await self.close(code=refusal)
        return False

    async def recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.HEARTH_SOCKET_RECHECK)
            try:
                if not await self.access_still_holds():
                    return
            except DatabaseError as exc:  # checked again next time; the socket stays
                log.warning(
                    "live socket %s: access re-check failed (%s)", self.scope.get("path"), exc
                )

    def prepare(self) -> int | None:
        """From the URL and session alone (no database): set ``group``, or a close code to refuse."""
        raise NotImplementedError

    def authorize(self) -> int | None:
        """Synchronous: look up what this socket follows and check access; a close code to refuse."""
        raise NotImplementedError

    def audience(self) -> dict[str, Any]:
        """The filter of ``replay`` for this socket (outlet_id or order_id; none for all)."""
        return {}

    def admit(
        self, after: Cursor | None
    ) -> tuple[int | None, Cursor | None, int, list[dict[str, Any]], bool]:
        """Synchronous: (close code or None, cursor, newest event id, replay, cut by the cap)."""
        refusal = self.authorize()
        if refusal is not None:
            return refusal, None, 0, [], False
        return None, *replay(after=after, limit=self.replay_limit, **self.audience())

    def advance(self, cursor: Cursor) -> str | None:
        """The cursor's text if it is newer than any this socket handed out (they never go back)."""
        if cursor.newer_than(self.cursor):
            self.cursor = cursor
            return str(cursor)
        return None

    async def send_replay(
        self, events: list[dict[str, Any]], truncated: bool, cursor: Cursor
    ) -> None:
        for event in events:
            await self.send_event(event)
        live: dict[str, Any] = {"type": "live"}
        if truncated:
            live["truncated"] = True
        text = self.advance(cursor)
        if text is not None:
            live["cursor"] = text
        await self.send_json(live)

    async def send_event(self, event: dict[str, Any], cursor: Cursor | None = None) -> bool:
        """Send ``event`` unless sent already; with ``cursor`` (a batch's last), hand it out too."""
        if not (self.admitted and self.sent.add(int(event["id"]))):
            return False
        message: dict[str, Any] = {"type": "event", "event": event}
        text = self.advance(cursor) if cursor is not None else None
        if text is not None:
            message["cursor"] = text
        await self.send_json(message)
        return True

    async def send_error(self, message: str) -> None:
        await self.send_json({"type": "error", "message": message})

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections() in the one sync thread every socket of
        # the process shares, before every handler and after a disconnect. These
        # consumers reach the database only through database_sync_to_async, which does
        # that around each call itself; the extra trip, once per message per socket
        # (every event on every screen), queued all sockets behind that thread:
        # seconds of delay at 50 orders/s, and customers' connects timing out.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message.get('type')!r}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.recheck_task is not None:
            self.recheck_task.cancel()
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def hearth_events(self, message: dict[str, Any]) -> None:
        """Events fanned out by shop.live to this socket's group, in commit order."""
        hello = self.hello_cursor
        # Not yet sent, and not seen by the hello's snapshot: those the page or the replay
        # already carried are dropped, and the batch's cursor rides on the last event this
        # socket does send.
        fresh = [
            event
            for event, xid in zip(message["events"], message["xids"], strict=True)
            if int(event["id"]) not in self.sent and not (hello is not None and hello.saw(xid))
        ]
        cursor = Cursor.parse(message["cursor"]) if fresh else None
        for i, event in enumerate(fresh):
            await self.send_event(event, cursor if i == len(fresh) - 1 else None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.admitted:
            return  # refused (and closing), or still connecting
        try:
            if text_data is None:
                raise BadMessage("messages are JSON text frames")
            try:
                content = json.loads(text_data)
            except ValueError:
                raise BadMessage("message is not valid JSON") from None
            if not isinstance(content, dict) or not isinstance(content.get("type"), str):
                raise BadMessage('a message is a JSON object with a "type"')
            await self.receive_message(content["type"], content)
        except BadMessage as exc:
            await self.send_error(str(exc))
        except QueueError as exc:
            await self.send_error(exc.message)
        except Exception:
            log.exception("live socket %s: message failed", self.scope.get("path"))
            await self.send_error("the server could not handle this message; try again")

    async def receive_message(self, kind: str, content: dict[str, Any]) -> None:
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "resume":
            after = cursor_of(content.get("after"), "after")
            cursor, _, events, truncated = await database_sync_to_async(replay)(
                after=after, limit=self.replay_limit, **self.audience()
            )
            await self.send_replay(events, truncated, cursor)
        else:
            raise BadMessage(f"unknown message type {kind[:40]!r}")


class KitchenConsumer(LiveConsumer):
    """``ws/kitchen/<slug>/``: an outlet's staff (or a manager); a staff member's screen heartbeats.

    A manager or superuser who is not on the outlet's staff may watch the screen, but
    their heartbeats do not count: a head-office tab must never re-open a closed outlet.
    """

    kind = "kitchen"
    replay_limit = KITCHEN_REPLAY_LIMIT
    recheck_access = True

    def prepare(self) -> int | None:
        user = self.scope["user"]
        if not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if len(slug) > SLUG_MAX:
            return CLOSE_NOT_FOUND
        self.source = f"screen:{user.get_username()}"
        self.group = kitchen_group(slug)
        # The screen's station (``?tab=``): its claims live while this socket does. Always
        # the signed-in user's own station; no tab (an older screen), no station.
        tabs = query_param(self.scope, "tab")
        if tabs and not TAB.fullmatch(tabs[-1]):
            return CLOSE_BAD_REQUEST
        self.station = station_of(user.get_username(), tabs[-1]) if tabs else ""
        return None

    def authorize(self) -> int | None:
        outlet = Outlet.objects.filter(slug=self.scope["url_route"]["kwargs"]["slug"]).first()
        if outlet is None:
            return CLOSE_NOT_FOUND
        if not can_open_kitchen(self.scope["user"], outlet):
            return CLOSE_FORBIDDEN
        self.outlet = outlet
        self.heartbeats_count = works_at(self.scope["user"], outlet)
        return None

    def audience(self) -> dict[str, Any]:
        return {"outlet_id": self.outlet.pk}

    async def receive_message(self, kind: str, content: dict[str, Any]) -> None:
        if kind in ("heartbeat", "ping") and self.station:
            # The screen is still there: so are the claims of its station.
            await database_sync_to_async(station_claims_renew)(
                outlet=self.outlet, station=self.station
            )
        if kind != "heartbeat":
            await super().receive_message(kind, content)
            return
        seq = event_id_of(content.get("seq", 0), "seq")
        if not await self.access_still_holds():
            return  # a cook who has left keeps no outlet alive
        if not self.heartbeats_count:
            await self.send_json({"type": "heartbeat", "counted": False})
            return
        row = await database_sync_to_async(outlet_heartbeat)(
            outlet=self.outlet, source=self.source, seq=seq
        )
        at: datetime = row["last_heartbeat_at"]
        await self.send_json(
            {"type": "heartbeat", "counted": True, "state": row["state"], "at": at.isoformat()}
        )


class OrderConsumer(LiveConsumer):
    """``ws/orders/<token>/``: anyone with the order's token; only that order's events."""

    kind = "order"

    def prepare(self) -> int | None:
        token = self.scope["url_route"]["kwargs"]["token"]
        if not TOKEN_PATTERN.fullmatch(token):
            return CLOSE_NOT_FOUND
        self.token = token
        self.group = order_group(token)
        return None

    def authorize(self) -> int | None:
        order_id = Order.objects.filter(token=self.token).values_list("id", flat=True).first()
        if order_id is None:
            return CLOSE_NOT_FOUND
        self.order_id = order_id
        return None

    def audience(self) -> dict[str, Any]:
        return {"order_id": self.order_id}

    async def send_event(self, event: dict[str, Any], cursor: Cursor | None = None) -> bool:
        # The kitchens' events name the station that claimed; a customer sees no staff.
        customer_event = {**event, "detail": customer_detail(event.get("detail"))}
        return await super().send_event(customer_event, cursor)


class OpsConsumer(LiveConsumer):
    """``ws/ops/``: managers; every event."""

    kind = "ops"
    replay_limit = OPS_REPLAY_LIMIT
    recheck_access = True

    def prepare(self) -> int | None:
        if not self.scope["user"].is_authenticated:
            return CLOSE_UNAUTHENTICATED
        self.group = OPS_GROUP
        return None

    def authorize(self) -> int | None:
        return None if is_manager(self.scope["user"]) else CLOSE_FORBIDDEN


class UnknownSocket(AsyncJsonWebsocketConsumer):
    """Any other websocket path: accepted only to close it with 4404 (no traceback, no 500)."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
