"""The outlet agents' side of the API: heartbeat, claim, ready, complete, renew (Bearer token)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from queueing.services import (
    lease_renew,
    order_claim_next,
    order_complete,
    order_mark_ready,
    outlet_heartbeat,
)
from queueing.tickets import Ticket
from shop.api.common import ApiError, agent_outlet, api_view, fence_of, json_body

MAX_CLAIM_BATCH = 50


def claim_answer(ticket: Ticket) -> dict[str, Any]:
    return {
        "fence": ticket.fence,
        "lease_expires_at": ticket.lease_expires_at.isoformat() if ticket.lease_expires_at else None,
        "order": {
            "token": ticket.token,
            "number": ticket.id,
            "kind": ticket.kind,
            "rush": ticket.rush,
            "lines": ticket.lines,
            "prep_seconds": ticket.prep_seconds,
        },
    }


def _station(data: dict[str, Any], outlet_slug: str) -> str:
    station = data.get("station", f"{outlet_slug}-api")
    if not isinstance(station, str) or not station.strip() or len(station) > 60:
        raise ApiError(400, "invalid", "station must be a name of 1 to 60 characters", field="station")
    return station.strip()


@csrf_exempt  # token-authenticated machine API; no cookies
@require_POST
@api_view
def heartbeat(request: HttpRequest, slug: str) -> JsonResponse:
    outlet = agent_outlet(request, slug)
    data = json_body(request, required=False)
    seq = data.get("seq", 0)
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ApiError(400, "invalid", "seq must be an integer", field="seq")
    source = data.get("source", "agent")
    if not isinstance(source, str):
        raise ApiError(400, "invalid", "source must be a string", field="source")
    row = outlet_heartbeat(outlet=outlet, source=source, seq=seq)
    return JsonResponse(
        {
            "outlet": outlet.slug,
            "state": row["state"],
            "at": row["last_heartbeat_at"].isoformat(),
            "interval": settings.HEARTH_HEARTBEAT_INTERVAL,
        }
    )


@csrf_exempt
@require_POST
@api_view
def claim(request: HttpRequest, slug: str) -> HttpResponse:
    outlet = agent_outlet(request, slug)
    data = json_body(request, required=False)
    limit = data.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CLAIM_BATCH):
        raise ApiError(400, "invalid", f"limit must be from 1 to {MAX_CLAIM_BATCH}", field="limit")
    tickets = order_claim_next(outlet=outlet, station=_station(data, outlet.slug), limit=limit or 1)
    if not tickets:
        return HttpResponse(status=204)
    if limit is None:
        return JsonResponse(claim_answer(tickets[0]))
    return JsonResponse({"claims": [claim_answer(t) for t in tickets]})


@csrf_exempt
@require_POST
@api_view
def ready(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    ticket = order_mark_ready(token=token, fence=fence_of(json_body(request)), outlet=outlet)
    return JsonResponse({"token": ticket.token, "state": ticket.state, "fence": ticket.fence})


@csrf_exempt
@require_POST
@api_view
def complete(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    ticket = order_complete(token=token, fence=fence_of(json_body(request)), outlet=outlet)
    return JsonResponse({"token": ticket.token, "state": ticket.state, "fence": ticket.fence})


@csrf_exempt
@require_POST
@api_view
def renew(request: HttpRequest, token: str) -> JsonResponse:
    outlet = agent_outlet(request)
    fence = fence_of(json_body(request))
    expires = lease_renew(token=token, fence=fence, outlet=outlet)
    return JsonResponse({"token": token, "fence": fence, "lease_expires_at": expires.isoformat()})
