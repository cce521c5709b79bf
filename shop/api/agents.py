"""The outlet agents' side of the API: heartbeat, claim, ready, complete, renew, release (Bearer token)."""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from queueing.errors import QueueError
from queueing.services import (
    lease_renew,
    order_claim_next,
    order_complete,
    order_mark_ready,
    orders_complete,
    outlet_heartbeat_by_token,
    stations_release,
)
from queueing.tickets import Ticket
from shop.api.common import (
    agent_outlet,
    api_view,
    bearer_token,
    fence_of,
    json_body,
    order_token,
    whole_number,
)
from shop.live import claim_waiting, listener_ready
from shop.refusal import Refused, refusal_response, refused_from

MAX_CLAIM_BATCH = 50
MAX_COMPLETE_BATCH = 200
MAX_STATIONS = 50
# The longest a claim may wait for work (?wait=seconds); an agent asks for less than
# its HTTP client's timeout, and anything in between (a proxy) must allow as long.
MAX_CLAIM_WAIT = 60
# Without a running listener (its connection is down) a parked claim looks again this often.
CLAIM_WAIT_UNHEARD = 1.0
# A parked claim that gets nothing is answered after between 80 % and 100 % of its wait, at
# random: stations that parked together (a fleet started together, a web process restarted
# under it) then re-park spread out instead of all at once every wait.
CLAIM_WAIT_SPREAD = 0.2


def claim_answer(ticket: Ticket) -> dict[str, Any]:
    return {
        "fence": ticket.fence,
        # "ready": made already (its holder went away); hand it over, do not cook it again.
        "state": ticket.state,
        "lease_expires_at": ticket.lease_expires_at.isoformat()
        if ticket.lease_expires_at
        else None,
        "lease_seconds": settings.HEARTH_LEASE_SECONDS,
        "order": {
            "token": ticket.token,
            "number": ticket.id,
            "kind": ticket.kind,
            "rush": ticket.rush,
            "lines": [
                {
                    "item": ln.get("item"),
                    "name": ln.get("name"),
                    "qty": ln.get("qty"),
                    "note": ln.get("note", ""),
                    "prep_seconds": ln.get("prep_seconds", 0),
                }
                for ln in ticket.lines
            ],
            "prep_seconds": ticket.prep_seconds,
        },
    }


def acknowledged(ticket: Ticket) -> dict[str, Any]:
    return {
        "token": ticket.token,
        "number": ticket.id,
        "state": ticket.state,
        "fence": ticket.fence,
    }


def _station(data: dict[str, Any], outlet_slug: str) -> str:
    station = data.get("station", f"{outlet_slug}-api")
    if not isinstance(station, str) or not station.strip() or len(station) > 60:
        raise Refused(
            400, "invalid", "station must be a name of 1 to 60 characters", field="station"
        )
    return station.strip()


def heartbeat_fields(data: dict[str, Any]) -> tuple[int, str]:
    """A heartbeat body's (seq, source); Refused 400 naming the field otherwise."""
    seq = whole_number(data, "seq", default=0)
    source = data.get("source", "agent")
    if not isinstance(source, str) or not source.strip() or len(source) > 60:
        raise Refused(400, "invalid", "source must be a name of 1 to 60 characters", field="source")
    return seq, source.strip()


def heartbeat_answer(owner: str, row: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat's answer: whose it is, the outlet's state, when (UTC), the interval to keep."""
    return {
        "outlet": owner,
        "state": row["state"],
        "at": row["last_heartbeat_at"].astimezone(UTC).isoformat(),
        "interval": settings.HEARTH_HEARTBEAT_INTERVAL,
    }


@api_view("POST")
def heartbeat(request: HttpRequest, slug: str) -> JsonResponse:
    # Usually answered before Django by shop.api.beats; here when that path declines.
    token = bearer_token(request)
    seq, source = heartbeat_fields(json_body(request, required=False))
    found = outlet_heartbeat_by_token(slug=slug, token=token, source=source, seq=seq)
    if found is None:
        raise Refused(401, "unauthenticated", "this is not a valid agent token")
    owner, row = found
    if row is None:
        raise Refused(403, "forbidden", f"this token belongs to another outlet, not {slug}")
    return JsonResponse(heartbeat_answer(owner, row))


def _claim_wait(request: HttpRequest) -> float:
    raw = request.GET.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_CLAIM_WAIT:  # NaN fails this too
        raise Refused(
            400,
            "invalid",
            f"wait must be a number of seconds from 0 to {MAX_CLAIM_WAIT}",
            field="wait",
        )
    return wait


def _claim_parse(request: HttpRequest, slug: str) -> tuple[Any, str, int | None]:
    """The claim's outlet (authenticated), station and batch limit; Refused otherwise."""
    outlet = agent_outlet(request, slug)
    data = json_body(request, required=False)
    limit = data.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CLAIM_BATCH
    ):
        raise Refused(
            400,
            "invalid",
            f"limit must be a whole number from 1 to {MAX_CLAIM_BATCH}",
            field="limit",
        )
    return outlet, _station(data, outlet.slug), limit


def _claim_once(outlet: Any, station: str, limit: int | None) -> list[Ticket]:
    # An agent's station works one claim (or batch) at a time, so what it already holds is
    # an answer it never got: it is sent again (same fence) before anything new.
    return order_claim_next(outlet=outlet, station=station, limit=limit or 1, resend_held=True)


def _closing(work: Any, executor: ThreadPoolExecutor | None = None) -> Any:
    """``work`` in a pool of threads (the loop's shared one by default), its connection back right after.

    A waiting claim then holds neither a thread of its own nor a connection while parked.
    """

    def run(*args: Any) -> Any:
        try:
            return work(*args)
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False, executor=executor)


# A woken claim (an order may be waiting for it) has threads of its own: an idle fleet
# re-parks its stations in bursts (every station of a fleet that started together, every
# CLAIM_WAIT), and their first looks queued in the shared pool ahead of the order's claim.
_WOKEN_CLAIMS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hearth-woken-claim")


def _claim_first(request: HttpRequest, slug: str) -> tuple[Any, str, int | None, list[Ticket]]:
    """A parked claim's first look: authenticated and parsed, then claimed, in one thread."""
    outlet, station, limit = _claim_parse(request, slug)
    return outlet, station, limit, _claim_once(outlet, station, limit)


_claim_first_pooled = _closing(_claim_first)
_claim_again_pooled = _closing(_claim_once, _WOKEN_CLAIMS)


def _claimed(tickets: list[Ticket], limit: int | None) -> HttpResponse:
    if not tickets:
        return HttpResponse(status=204)
    if limit is None:
        return JsonResponse(claim_answer(tickets[0]))
    return JsonResponse({"claims": [claim_answer(t) for t in tickets]})


async def claim(request: HttpRequest, slug: str) -> HttpResponse:
    """Claim the outlet's next order; with ``?wait=N``, wait up to N seconds for one (else 204).

    A waiting claim is parked on this process's event listener, not on the database:
    it claims again only when an event of its outlet may have brought work. A client
    that goes away while parked is cancelled and claims nothing; one that goes away while
    a look is in its pool thread may still get an order claimed for its station, which is
    sent again on that station's next claim (``resend_held``) or moves on with its lease.
    """
    if request.method != "POST":
        response = refusal_response(
            Refused(405, "method_not_allowed", f"{request.method} is not allowed here; use POST")
        )
        response["Allow"] = "POST"
        return response
    try:
        wait = _claim_wait(request)
        if wait <= 0:
            outlet, station, limit = await sync_to_async(_claim_parse)(request, slug)
            return _claimed(await sync_to_async(_claim_once)(outlet, station, limit), limit)
        deadline = time.monotonic() + wait * (1 - random.uniform(0, CLAIM_WAIT_SPREAD))
        listener = await listener_ready(timeout=min(wait, 5.0))
        # Parked before the first look: whatever commits after it wakes this claim. The
        # first look authenticates (401/403, refused before it waits) and claims in one
        # trip to a pool thread: an idle fleet re-parks every station every CLAIM_WAIT.
        async with claim_waiting(slug) as woken:
            outlet, station, limit, tickets = await _claim_first_pooled(request, slug)
            while True:
                left = deadline - time.monotonic()
                if tickets or left <= 0:
                    return _claimed(tickets, limit)
                pause = left if listener is not None and listener.connected else CLAIM_WAIT_UNHEARD
                try:
                    async with asyncio.timeout(min(left, pause)):
                        await woken.wait()
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        return HttpResponse(status=204)
                woken.clear()
                tickets = await _claim_again_pooled(outlet, station, limit)
    except (Refused, QueueError) as exc:
        return refusal_response(exc)


# A machine API authenticated by tokens, not cookies: there is no session to forge.
claim.csrf_exempt = True  # type: ignore[attr-defined]


@api_view("POST")
def release(request: HttpRequest, slug: str) -> JsonResponse:
    outlet = agent_outlet(request, slug)
    stations = json_body(request).get("stations")
    if (
        not isinstance(stations, list)
        or not 1 <= len(stations) <= MAX_STATIONS
        or not all(isinstance(s, str) and 1 <= len(s.strip()) <= 60 for s in stations)
    ):
        raise Refused(
            400,
            "invalid",
            f"stations must be a list of 1 to {MAX_STATIONS} station names (1 to 60 characters)",
            field="stations",
        )
    released = stations_release(
        outlet=outlet, stations=[s.strip() for s in stations], reason="its station restarted"
    )
    return JsonResponse({"released": [acknowledged(t) for t in released]})


@api_view("POST")
def ready(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    token = order_token(token)
    ticket = order_mark_ready(token=token, fence=fence_of(json_body(request)), outlet=outlet)
    return JsonResponse(acknowledged(ticket))


@api_view("POST")
def complete(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    token = order_token(token)
    ticket = order_complete(token=token, fence=fence_of(json_body(request)), outlet=outlet)
    return JsonResponse(acknowledged(ticket))


@api_view("POST")
def renew(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    token = order_token(token)
    fence = fence_of(json_body(request))
    expires = lease_renew(token=token, fence=fence, outlet=outlet)
    return JsonResponse({"token": token, "fence": fence, "lease_expires_at": expires.isoformat()})


def order_token_ok(token: str) -> bool:
    """Whether this could be an order token at all (so the database need not be asked)."""
    try:
        order_token(token)
    except Refused:
        return False
    return True


def _claims_of(data: dict[str, Any]) -> list[tuple[str, int]]:
    raw = data.get("claims")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_COMPLETE_BATCH:
        raise Refused(
            400,
            "invalid",
            f"claims must be a list of 1 to {MAX_COMPLETE_BATCH} {{token, fence}} objects",
            field="claims",
        )
    claims: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"claims[{i}]"
        if not isinstance(item, dict):
            raise Refused(400, "invalid", "must be an object with token and fence", field=where)
        token = item.get("token")
        if not isinstance(token, str) or not token:
            raise Refused(400, "invalid", "token must be an order token", field=f"{where}.token")
        if token in seen:
            raise Refused(400, "invalid", "this order is listed twice", field=f"{where}.token")
        seen.add(token)
        try:
            fence = fence_of(item)
        except Refused as exc:
            exc.field = f"{where}.fence"
            raise
        claims.append((token, fence))
    return claims


def _refusal(token: str, exc: QueueError) -> dict[str, Any]:
    return {**refused_from(exc).as_json(), "token": token}


@api_view("POST")
def complete_batch(request: HttpRequest, slug: str) -> JsonResponse:
    outlet = agent_outlet(request, slug)
    claims = _claims_of(json_body(request))
    # A token that cannot exist is refused without asking the database.
    valid = [(t, f) for t, f in claims if order_token_ok(t)]
    done, refused = orders_complete(claims=valid, outlet=outlet) if valid else ([], [])
    refusals = [_refusal(str(exc.context.get("token", "")), exc) for exc in refused]
    refusals += [
        {"token": t, "error": "not_found", "message": "no order with this token"}
        for t, _ in claims
        if not order_token_ok(t)
    ]
    return JsonResponse({"completed": [acknowledged(t) for t in done], "refused": refusals})
