"""Agents' heartbeats answered on the event loop: no thread, no Django request, one statement.

An idle fleet's whole load is heartbeats: 1,000 outlets beating every 5 s are 200
requests a second, all day. Through Django's handler each cost the web process about
3.9 ms of CPU, and 1.6 ms through the API's short path (``ApiHandler``: a request
object, the middleware, a pool thread); here (about 0.5 ms, written with others) a heartbeat is
checked by the view's own rules (``heartbeat_fields``), written by the engine's
statement on a pooled async connection (``outlet_heartbeats_by_token_async``) and
answered with the view's JSON (``heartbeat_answer``) after the checks and with the
security headers Django's middleware would add (allowed hosts, HTTPS, CSP).

Beats are written in batches: a beat waits up to ``GATHER`` (20 ms) for the beats
that arrive after it, and those that arrive while a write is in flight go together in
the next statement, so one commit (one WAL flush, one round trip) serves them all. A
steady fleet of 1,000 outlets (200 beats a second) writes about four per statement
instead of one or two; a burst (a fleet reconnecting, a client that fell behind) is
written in a few statements instead of queueing one commit each behind the pool's
connections. A heartbeat's answer comes 20 ms later; the outlet's silence is counted
in seconds.

Only a well-formed heartbeat with a token of this outlet is answered here. Anything
else (no token, a body that is not JSON or not a valid heartbeat, a token that is no
outlet's or another outlet's, plain HTTP where HTTPS is required, the database
failing) goes on to the view, which refuses it in the API's one error shape. A
refused beat wrote nothing, so the view running the statement again is safe; a beat
whose connection broke after its commit is written twice (one more history row),
which the flap guard's count of beats tolerates (it asks for several).
``HEARTH_API_FAST=0`` turns this off with the rest of the short path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from queueing.services.outlets import outlet_heartbeats_by_token_async
from queueing.wake import own_conninfo, prepare_threshold
from shop.api.agents import heartbeat_answer, heartbeat_fields
from shop.api.common import storable_text_check
from shop.api.edge import security_headers, short_path_allowed
from shop.body_limit import Scope
from shop.refusal import Refused

log = logging.getLogger("hearth.api")

HEARTBEAT_PATH = re.compile(r"/api/outlets/(?P<slug>[-A-Za-z0-9_]{1,50})/heartbeat")
# Statements in flight at once (each on its own pooled connection), and beats per statement.
WRITERS = 2
BATCH = 200
# How long the first beat of a batch waits for others (seconds).
GATHER = 0.02

Beat = tuple[str, str, str, int]  # slug, token, source, seq
Answer = tuple[str, dict[str, Any] | None] | None


class Heartbeats:
    """The web process's heartbeat answerer, with its own small pool of async connections."""

    def __init__(self) -> None:
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()
        self._waiting: list[tuple[Beat, asyncio.Future[Answer]]] = []
        self._writers = 0
        self._gathering: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the running writers, kept referenced

    async def _connections(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            async with self._opening:  # one pool, however many beats arrive while it opens
                if self._pool is None:
                    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                        own_conninfo("hearth-beats"),
                        min_size=1,
                        max_size=WRITERS,
                        kwargs={
                            "autocommit": True,
                            "row_factory": dict_row,
                            "prepare_threshold": prepare_threshold(),
                        },
                        open=False,
                        name="hearth-beats",
                    )
                    await pool.open()
                    self._pool = pool
        return self._pool

    async def _write(self, beat: Beat) -> Answer:
        """Write this beat with whatever else is waiting; its answer."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((beat, written))
        if self._gathering is None:
            self._gathering = loop.call_later(GATHER, self._gathered)
        return await written

    def _gathered(self) -> None:
        """The gather window is over: a writer takes what waits (a busy one, after its statement)."""
        self._gathering = None
        if self._waiting and self._writers < WRITERS:
            self._writers += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        """Write waiting beats, a batch per statement, until none wait."""
        try:
            while self._waiting:
                batch: list[tuple[Beat, asyncio.Future[Answer]]] = []
                later: list[tuple[Beat, asyncio.Future[Answer]]] = []
                tokens: set[str] = set()
                for beat, written in self._waiting:
                    if written.done():
                        continue  # its client went away
                    token = beat[1]
                    if token in tokens or len(batch) >= BATCH:
                        later.append((beat, written))  # a token beats once per statement
                    else:
                        tokens.add(token)
                        batch.append((beat, written))
                self._waiting = later
                if not batch:
                    continue
                try:
                    pool = await self._connections()
                    async with pool.connection(timeout=5) as conn:
                        answers = await outlet_heartbeats_by_token_async(
                            conn, [beat for beat, _ in batch]
                        )
                except Exception as exc:  # noqa: BLE001 - each beat's caller decides (the view)
                    for _, written in batch:
                        if not written.done():
                            written.set_exception(exc)
                    continue
                for (_, written), found in zip(batch, answers, strict=True):
                    if not written.done():
                        written.set_result(found)
        finally:
            self._writers -= 1

    async def answer(
        self, scope: Scope, body: bytes
    ) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        """(headers, body) of a 200 for a heartbeat this path can take; None: the view answers."""
        match = HEARTBEAT_PATH.fullmatch(scope.get("path", ""))
        if match is None or scope.get("method") != "POST":
            return None
        allowed, secure = short_path_allowed(scope)
        if not allowed:
            return None  # Django redirects it to HTTPS, or refuses the host
        headers = dict(scope.get("headers", []))
        scheme, _, token = headers.get(b"authorization", b"").decode("latin1").partition(" ")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scheme.lower() != "bearer" or not token.strip():
            return None
        if body and content_type != b"application/json":
            return None
        try:
            data = json.loads(body) if body else {}
            if not isinstance(data, dict):
                return None
            storable_text_check(data)  # as json_body: no NUL, no lone surrogate anywhere
            seq, source = heartbeat_fields(data)
        except (ValueError, RecursionError, Refused):
            return None
        try:
            found = await self._write((match["slug"], token.strip(), source, seq))
        except (psycopg.Error, OSError, ValueError) as exc:  # the pool's timeout is a psycopg.Error
            log.warning("heartbeat on the event loop failed (%s); the view answers it", exc)
            return None
        owner, row = found or ("", None)
        if row is None:
            return None  # no outlet's token, or another outlet's: the view refuses it
        return security_headers(secure), json.dumps(heartbeat_answer(owner, row)).encode()
