"""The API's OpenAPI 3.1 description, written by hand, and the docs page rendered from it.

Hand-written rather than generated, so it says what clients may rely on (the
shapes in issue 2) and nothing about how the views happen to be built. A test
checks that it is valid OpenAPI 3.1, that it names every API route, and that
real answers match its schemas.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from queueing.selectors import ESTIMATE_DEPTH
from shop.api.common import api_view

MAX_QTY = 50
# Money is a decimal string with two places, never a JSON number (a float to most clients).
MONEY = {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"}
MONEY_OR_NULL = {"type": ["string", "null"], "pattern": MONEY["pattern"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref("Error"))}


def body(schema: dict[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema, example)}


TOKEN_PARAM = {
    "name": "token",
    "in": "path",
    "required": True,
    "description": "The order's public token (from the answer to POST /api/orders or a claim).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
}
SLUG_PARAM = {
    "name": "slug",
    "in": "path",
    "required": True,
    "description": "The outlet's slug.",
    "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
}
AGENT_SECURITY: list[dict[str, list[str]]] = [{"outletToken": []}]

# Every endpoint can answer these; each operation lists the ones that apply to it.
MALFORMED = error("The body is not a JSON object, or a field is wrong (`field` names it).")
TOO_LARGE = error(
    "The body is larger than 64 KiB (by `Content-Length`, or counted as a chunked body "
    "arrives): refused before the rest is read, and the connection is closed."
)
NOT_JSON = error("The body is not sent as `Content-Type: application/json`.")
RATE_LIMITED = {
    **error("Too many orders from this client address in the window; `retry_after` says when."),
    "headers": {
        "Retry-After": {
            "description": "Seconds until this client may place orders again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
WRONG_METHOD = error("This method is not allowed on this path (see the Allow header).")
UNAUTHENTICATED = error("No bearer token, or one that is no outlet's agent token.")
OTHER_OUTLET = error("The token is another outlet's.")
STALE = error(
    "The fence is stale for an order of this outlet (`stale_fence`: the claim was lost; drop "
    "the work) or the order is in a state that does not allow this (`invalid_state`)."
)
NO_ORDER = error("No order with this token.")
NOT_OURS = error(
    "No order with this token at this outlet: it never existed, or it is another outlet's "
    "(perhaps moved there); said the same way whatever the fence. Drop the work."
)


def _agent_errors(*, order: bool) -> dict[str, Any]:
    answers = {
        "400": MALFORMED,
        "401": UNAUTHENTICATED,
        "403": OTHER_OUTLET,
        "405": WRONG_METHOD,
        "413": TOO_LARGE,
        "415": NOT_JSON,
    }
    if order:
        answers |= {"404": NOT_OURS, "409": STALE}
    else:
        answers["404"] = error("Nothing at this address (a slug that cannot be one).")
    return answers


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every refusal. `error` is a stable code; `message` is fit to show a person.",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "examples": [
                    "invalid",
                    "malformed_json",
                    "stale_fence",
                    "unauthenticated",
                    "forbidden",
                    "not_found",
                    "method_not_allowed",
                    "too_large",
                    "unsupported_media_type",
                    "rate_limited",
                ],
            },
            "message": {"type": "string"},
            "field": {
                "type": "string",
                "description": "The part of the request to fix, e.g. `lines[0].qty`.",
            },
            "token": {"type": "string"},
            "fence": {"type": "integer"},
            "current_fence": {"type": "integer"},
            "retry_after": {"type": "integer", "description": "With 429: seconds to wait."},
        },
    },
    "OrderLineRequest": {
        "type": "object",
        "required": ["item"],
        "properties": {
            "item": {
                "type": "string",
                "description": "A menu item's slug.",
                "examples": ["margherita"],
            },
            "qty": {"type": "integer", "minimum": 1, "maximum": MAX_QTY, "default": 1},
            "note": {"type": ["string", "null"], "maxLength": 200},
        },
    },
    "Customer": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "phone": {"type": ["string", "null"], "maxLength": 40},
            "address": {
                "type": ["string", "null"],
                "maxLength": 300,
                "description": "Required for delivery orders.",
            },
        },
    },
    "OrderRequest": {
        "type": "object",
        "description": (
            "A delivery order names its zone (and the customer's address); a takeaway order names "
            "the outlet the customer walks into, which must be active."
        ),
        "required": ["kind", "lines", "customer"],
        "properties": {
            "kind": {"type": "string", "enum": ["delivery", "takeaway"]},
            "zone": {
                "type": "string",
                "maxLength": 40,
                "pattern": "^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,38}[A-Za-z0-9])?$",
                "description": (
                    "Delivery only: the routing key. ASCII letters and digits, spaces and dashes "
                    "inside, e.g. `N1`, `SE-12`."
                ),
            },
            "outlet": {"type": "string", "description": "Takeaway only: the outlet's slug."},
            "lines": {
                "type": "array",
                "minItems": 1,
                "maxItems": 30,
                "items": ref("OrderLineRequest"),
            },
            "customer": ref("Customer"),
            "rush": {"type": "boolean", "default": False},
        },
    },
    "OrderLine": {
        "type": "object",
        "required": ["item", "name", "qty", "note"],
        "properties": {
            "item": {"type": "string"},
            "name": {"type": "string"},
            "qty": {"type": "integer"},
            "note": {"type": "string"},
            "price": {
                **MONEY_OR_NULL,
                "description": "The unit price the line was ordered at (null: placed before "
                "prices were recorded).",
            },
        },
    },
    "Money": {**MONEY, "examples": ["12.50"]},
    "Payment": {
        "type": "object",
        "required": ["amount", "method", "where", "at"],
        "properties": {
            "amount": ref("Money"),
            "method": {"type": "string", "enum": ["cash", "card"]},
            "where": {
                "type": "string",
                "enum": ["counter", "delivery"],
                "description": "Paid at the counter (takeaway) or on delivery.",
            },
            "at": {"type": "string", "format": "date-time"},
        },
    },
    "MenuItem": {
        "type": "object",
        "required": ["slug", "name", "price", "prep_seconds", "available"],
        "properties": {
            "slug": {"type": "string", "description": "What an order line's `item` names."},
            "name": {"type": "string"},
            "price": ref("Money"),
            "prep_seconds": {"type": "integer", "minimum": 0},
            "available": {"type": "boolean"},
        },
    },
    "Menu": {
        "type": "object",
        "required": ["currency", "items"],
        "properties": {
            "currency": {"type": "string", "description": "ISO 4217 code.", "examples": ["GBP"]},
            "items": {"type": "array", "items": ref("MenuItem")},
        },
    },
    "OrderState": {
        "type": "string",
        "enum": ["queued", "preparing", "ready", "completed", "cancelled", "attention"],
    },
    "Order": {
        "type": "object",
        "required": [
            "number",
            "token",
            "kind",
            "state",
            "outlet",
            "status_url",
            "lines",
            "total",
            "paid",
        ],
        "properties": {
            "number": {"type": "integer", "description": "The short number the customer is told."},
            "token": {
                "type": "string",
                "description": "Unguessable; the key to the order's pages.",
            },
            "kind": {"type": "string", "enum": ["delivery", "takeaway"]},
            "state": ref("OrderState"),
            "outlet": {
                "type": ["string", "null"],
                "description": "The outlet making it; null while no outlet is available.",
            },
            "zone": {"type": "string"},
            "rush": {"type": "boolean"},
            "lines": {"type": "array", "items": ref("OrderLine")},
            "total": {
                **MONEY_OR_NULL,
                "description": "What the order costs, at the prices it was placed at (null: "
                "placed before prices were recorded).",
            },
            "paid": {
                "oneOf": [ref("Payment"), {"type": "null"}],
                "description": "How it was paid, marked by staff at hand-over; null: still owed.",
            },
            "cancel_reason": {"type": "string"},
            "estimated_ready_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When it should be ready: the work queued ahead of it, shared by "
                f"the outlet's stations (with more than {ESTIMATE_DEPTH} orders ahead, the "
                "earliest it can be).",
            },
            "status_url": {"type": "string", "description": "The customer's live page."},
        },
    },
    "PlacedOrder": {
        "allOf": [
            ref("Order"),
            {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
            },
        ]
    },
    "TimelineEvent": {
        "type": "object",
        "required": ["type", "at", "outlet"],
        "properties": {
            "id": {"type": "integer", "description": "Grows monotonically."},
            "type": {
                "type": "string",
                "examples": ["placed", "claimed", "ready", "completed", "rerouted", "cancelled"],
            },
            "state": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "outlet": {"type": ["string", "null"]},
            "from_outlet": {"type": ["string", "null"]},
            "detail": {"type": "object"},
        },
    },
    "OrderWithTimeline": {
        "allOf": [
            ref("Order"),
            {
                "type": "object",
                "required": ["timeline"],
                "properties": {"timeline": {"type": "array", "items": ref("TimelineEvent")}},
            },
        ]
    },
    "HeartbeatRequest": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer", "minimum": 0, "description": "The sender's own counter."},
            "source": {"type": "string", "maxLength": 60, "default": "agent"},
        },
    },
    "Heartbeat": {
        "type": "object",
        "required": ["outlet", "state", "at", "interval"],
        "properties": {
            "outlet": {"type": "string"},
            "state": {"type": "string", "enum": ["active", "draining", "down"]},
            "at": {"type": "string", "format": "date-time", "description": "Database clock."},
            "interval": {
                "type": "number",
                "description": "Seconds until the next heartbeat is due.",
            },
        },
    },
    "ClaimRequest": {
        "type": "object",
        "properties": {
            "station": {
                "type": "string",
                "maxLength": 60,
                "description": "Who claims, for the screens.",
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 50,
                "description": "Claim up to this many at once; the answer is then a ClaimBatch.",
            },
        },
    },
    "ReleaseRequest": {
        "type": "object",
        "required": ["stations"],
        "properties": {
            "stations": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": {"type": "string", "minLength": 1, "maxLength": 60},
                "description": "The names this agent's stations claim with.",
            },
        },
    },
    "Released": {
        "type": "object",
        "required": ["released"],
        "properties": {"released": {"type": "array", "items": ref("Acknowledged")}},
    },
    "ClaimedLine": {
        "type": "object",
        "required": ["item", "qty"],
        "properties": {
            "item": {"type": "string"},
            "name": {"type": "string"},
            "qty": {"type": "integer"},
            "note": {"type": "string"},
            "prep_seconds": {"type": "integer", "description": "Time to prepare this item."},
        },
    },
    "Claim": {
        "type": "object",
        "description": "A claim is (order, fence): send the fence with every write on this order.",
        "required": ["fence", "order"],
        "properties": {
            "fence": {"type": "integer"},
            "state": {
                "type": "string",
                "enum": ["preparing", "ready"],
                "description": (
                    "`preparing`: cook it, then mark it ready. `ready`: it is made already (its "
                    "station went away before handing it over): hand it over and complete it, "
                    "do not cook it again."
                ),
            },
            "lease_expires_at": {"type": ["string", "null"], "format": "date-time"},
            "lease_seconds": {
                "type": "number",
                "description": (
                    "Renew (or finish) well before this many seconds pass; a ready order's lease "
                    "too, until it is completed."
                ),
            },
            "order": {
                "type": "object",
                "required": ["token", "number", "kind", "lines"],
                "properties": {
                    "token": {"type": "string"},
                    "number": {"type": "integer"},
                    "kind": {"type": "string", "enum": ["delivery", "takeaway"]},
                    "rush": {"type": "boolean"},
                    "lines": {"type": "array", "items": ref("ClaimedLine")},
                    "prep_seconds": {"type": "integer", "description": "The slowest line's time."},
                },
            },
        },
    },
    "ClaimBatch": {
        "type": "object",
        "required": ["claims"],
        "properties": {"claims": {"type": "array", "items": ref("Claim")}},
    },
    "FenceRequest": {
        "type": "object",
        "required": ["fence"],
        "properties": {"fence": {"type": "integer", "minimum": 0}},
    },
    "Acknowledged": {
        "type": "object",
        "required": ["token", "number", "state", "fence"],
        "properties": {
            "token": {"type": "string"},
            "number": {"type": "integer"},
            "state": ref("OrderState"),
            "fence": {"type": "integer"},
        },
    },
    "Renewed": {
        "type": "object",
        "required": ["token", "fence", "lease_expires_at"],
        "properties": {
            "token": {"type": "string"},
            "fence": {"type": "integer"},
            "lease_expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "CompleteBatchRequest": {
        "type": "object",
        "required": ["claims"],
        "properties": {
            "claims": {
                "type": "array",
                "minItems": 1,
                "maxItems": 200,
                "items": {
                    "type": "object",
                    "required": ["token", "fence"],
                    "properties": {
                        "token": {"type": "string"},
                        "fence": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    },
    "CompleteBatch": {
        "type": "object",
        "required": ["completed", "refused"],
        "properties": {
            "completed": {"type": "array", "items": ref("Acknowledged")},
            "refused": {
                "type": "array",
                "description": "Claims that did not complete, each with the reason (a stale fence…).",
                "items": {
                    "type": "object",
                    "required": ["token", "error", "message"],
                    "properties": {
                        "token": {"type": "string"},
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "fence": {"type": "integer"},
                        "current_fence": {"type": "integer"},
                    },
                },
            },
        },
    },
}

DELIVERY_EXAMPLE = {
    "kind": "delivery",
    "zone": "N1",
    "lines": [{"item": "margherita", "qty": 2, "note": "no basil"}],
    "customer": {"name": "Ada", "phone": "020 7946 0000", "address": "12 Analytical Row"},
}

PATHS: dict[str, Any] = {
    "/api/orders": {
        "post": {
            "operationId": "orderPlace",
            "tags": ["customers"],
            "summary": "Place an order",
            "description": (
                "Validates every field and queues the order in one transaction. With an "
                "`Idempotency-Key`, a retried request gets the first answer again (and the "
                "`Idempotent-Replayed: true` header) instead of a second order."
            ),
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Any string up to 200 characters, unique per order the client means.",
                    "schema": {"type": "string", "maxLength": 200},
                }
            ],
            "requestBody": body(ref("OrderRequest"), example=DELIVERY_EXAMPLE),
            "responses": {
                "202": {
                    "description": "Accepted: the order is queued (or was, for a replayed key).",
                    "headers": {
                        "Idempotent-Replayed": {
                            "description": "`true` when this is the answer to an earlier request.",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        }
                    },
                    "content": json_content(ref("PlacedOrder")),
                },
                "400": MALFORMED,
                "403": error("`rush` is set by a client that is not staff or an agent token."),
                "405": WRONG_METHOD,
                "413": TOO_LARGE,
                "415": NOT_JSON,
                "429": RATE_LIMITED,
                "422": error(
                    "The takeaway outlet is not taking orders, or the Idempotency-Key was used "
                    "for a different order request."
                ),
            },
        }
    },
    "/api/orders/{token}": {
        "get": {
            "operationId": "orderGet",
            "tags": ["customers"],
            "summary": "Follow an order",
            "description": "The order's state, outlet and timeline (oldest event first).",
            "parameters": [TOKEN_PARAM],
            "responses": {
                "200": {
                    "description": "The order.",
                    "content": json_content(ref("OrderWithTimeline")),
                },
                "404": NO_ORDER,
                "405": WRONG_METHOD,
            },
        }
    },
    "/api/menu": {
        "get": {
            "operationId": "menuGet",
            "tags": ["customers"],
            "summary": "What is on sale",
            "description": (
                "The items available today, with their prices, so a client can build its own "
                "order form. No sign-in; the answer may be cached for 60 seconds. An item taken "
                "off the menu since is refused when ordered (400 naming the line)."
            ),
            "responses": {
                "200": {"description": "The menu.", "content": json_content(ref("Menu"))},
                "405": WRONG_METHOD,
            },
        }
    },
    "/api/orders/{token}/ready": {
        "post": {
            "operationId": "orderReady",
            "tags": ["outlet agents"],
            "summary": "Mark a claimed order ready",
            "parameters": [TOKEN_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("FenceRequest"), example={"fence": 2}),
            "responses": {
                "200": {"description": "Ready.", "content": json_content(ref("Acknowledged"))},
                **_agent_errors(order=True),
            },
        }
    },
    "/api/orders/{token}/complete": {
        "post": {
            "operationId": "orderComplete",
            "tags": ["outlet agents"],
            "summary": "Complete (bump) a claimed order",
            "parameters": [TOKEN_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("FenceRequest"), example={"fence": 2}),
            "responses": {
                "200": {"description": "Completed.", "content": json_content(ref("Acknowledged"))},
                **_agent_errors(order=True),
            },
        }
    },
    "/api/orders/{token}/renew": {
        "post": {
            "operationId": "leaseRenew",
            "tags": ["outlet agents"],
            "summary": "Renew a claim's lease while cooking",
            "description": "Unrenewed claims are taken back when their lease ends.",
            "parameters": [TOKEN_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("FenceRequest"), example={"fence": 2}),
            "responses": {
                "200": {"description": "Renewed.", "content": json_content(ref("Renewed"))},
                **_agent_errors(order=True),
            },
        }
    },
    "/api/outlets/{slug}/heartbeat": {
        "post": {
            "operationId": "outletHeartbeat",
            "tags": ["outlet agents"],
            "summary": "Say the outlet is alive",
            "description": "An outlet silent for longer than the timeout is declared down.",
            "parameters": [SLUG_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("HeartbeatRequest"), required=False, example={"seq": 7}),
            "responses": {
                "200": {"description": "Recorded.", "content": json_content(ref("Heartbeat"))},
                "409": error("The outlet is retired."),
                **_agent_errors(order=False),
            },
        }
    },
    "/api/outlets/{slug}/claim": {
        "post": {
            "operationId": "orderClaimNext",
            "tags": ["outlet agents"],
            "summary": "Claim the outlet's next order",
            "description": (
                "The best queued order, with the fence to send with every write on it; with "
                "`limit`, up to that many in one answer. What this station already holds and "
                "has not completed comes first, with the same fence: a claim whose answer was "
                "lost is answered again on the retry (a station works one claim or batch at a "
                "time, and one agent runs an outlet's stations). Then ready orders that lost "
                "their station (`state: ready`: hand them over), then queued ones. A down "
                "outlet claims nothing. With `wait`, a claim that finds nothing waits at the "
                "server (no polling, no database work while it waits) until something may have "
                "arrived at the outlet, then claims; 204 when the wait ends with nothing. "
                "The wait ends at random between 80 % and 100 % of `wait`, so that stations "
                "that parked together re-park spread out. "
                "The token is checked before it waits. A client that goes away while it waits "
                "claims nothing; set its timeout a little longer than `wait`."
            ),
            "parameters": [
                SLUG_PARAM,
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "description": (
                        "Seconds to wait for an order when none is waiting (0, the default: "
                        "answer at once). The agent sends 25."
                    ),
                    "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
                },
            ],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("ClaimRequest"), required=False, example={"station": "oven-1"}),
            "responses": {
                "200": {
                    "description": "Claimed (a Claim, or a ClaimBatch when `limit` was sent).",
                    "content": json_content({"oneOf": [ref("Claim"), ref("ClaimBatch")]}),
                },
                "204": {
                    "description": (
                        "Nothing is waiting (nothing came within `wait`); ask again (at once "
                        "after a wait, shortly without one)."
                    )
                },
                **_agent_errors(order=False),
            },
        }
    },
    "/api/outlets/{slug}/stations/release": {
        "post": {
            "operationId": "stationsRelease",
            "tags": ["outlet agents"],
            "summary": "Hand back what these stations held (an agent starting)",
            "description": (
                "An agent that starts sends the names of the stations it runs: whatever they "
                "held from before the restart is handed back at once instead of waiting for its "
                "lease. Orders being made go back to the outlet's queue, ready ones stay at the "
                "pass for the next claim to hand over; the fence grows, so the old claims are "
                "refused from now on."
            ),
            "parameters": [SLUG_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(
                ref("ReleaseRequest"), example={"stations": ["north-1", "north-2"]}
            ),
            "responses": {
                "200": {
                    "description": "What was handed back (possibly nothing).",
                    "content": json_content(ref("Released")),
                },
                **_agent_errors(order=False),
            },
        }
    },
    "/api/outlets/{slug}/complete": {
        "post": {
            "operationId": "ordersComplete",
            "tags": ["outlet agents"],
            "summary": "Complete a batch of claimed orders",
            "description": (
                "One statement for the whole batch, every row checked against its own fence: "
                "stale claims are refused one by one and the rest complete."
            ),
            "parameters": [SLUG_PARAM],
            "security": AGENT_SECURITY,
            "requestBody": body(ref("CompleteBatchRequest")),
            "responses": {
                "200": {
                    "description": "What completed and what was refused.",
                    "content": json_content(ref("CompleteBatch")),
                },
                **_agent_errors(order=False),
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["about"],
            "summary": "This description",
            "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": json_content({"type": "object"})},
                "405": WRONG_METHOD,
            },
        }
    },
    "/api/docs/": {
        "get": {
            "operationId": "docs",
            "tags": ["about"],
            "summary": "This description as a page",
            "responses": {
                "200": {
                    "description": "HTML.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "405": WRONG_METHOD,
            },
        }
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Hearth",
        "version": "1",
        "summary": "A live order queue for a chain of shops.",
        "description": (
            "Customers place and follow orders. Outlet agents (an outlet's computer) heartbeat, "
            "claim orders and acknowledge them with the claim's fence; a write with a stale fence "
            "is refused with 409, so an order is never made twice. Every error, on every path "
            "under /api/ (unknown paths too), is one JSON object with `error` (a stable code) "
            "and `message`, and `field` when one input is to blame: 400 malformed or invalid, "
            "401 no agent token, 403 not allowed, 404 nothing here (another outlet's order "
            "included), 405 wrong method, 409 stale fence or state, 413 body over 64 KiB "
            "(refused before it is read), 415 not `application/json`, 422 cannot be done now, "
            "429 too many requests (with `Retry-After`)."
        ),
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "customers", "description": "Placing and following orders."},
        {"name": "outlet agents", "description": "An outlet's computer, with its agent token."},
        {"name": "about", "description": "This description."},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "outletToken": {
                "type": "http",
                "scheme": "bearer",
                "description": (
                    "The agent token `manage.py outlet add` printed. Another outlet's token "
                    "gets 403."
                ),
            }
        },
    },
}


@api_view("GET")
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(OPENAPI, json_dumps_params={"indent": 1})


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False)


def docs_context() -> dict[str, Any]:
    """The description reshaped for the template: a list of operations with their parts."""
    operations = []
    for path, methods in OPENAPI["paths"].items():
        for method, op in methods.items():
            request_body = op.get("requestBody")
            operations.append(
                {
                    "anchor": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "tag": (op.get("tags") or [""])[0],
                    "needs_token": bool(op.get("security")),
                    "parameters": op.get("parameters", []),
                    "request": {
                        "schema": _schema_text(
                            next(iter(request_body["content"].values()))["schema"]
                        ),
                        "example": _schema_text(
                            next(iter(request_body["content"].values())).get("example", {})
                        ),
                        "required": request_body.get("required", False),
                    }
                    if request_body
                    else None,
                    "responses": [
                        {
                            "status": status,
                            "description": answer.get("description", ""),
                            "schema": _schema_text(next(iter(answer["content"].values()))["schema"])
                            if answer.get("content")
                            else "",
                        }
                        for status, answer in sorted(op["responses"].items())
                    ],
                }
            )
    schemas = [
        {"name": name, "text": _schema_text(schema)}
        for name, schema in OPENAPI["components"]["schemas"].items()
    ]
    return {"info": OPENAPI["info"], "operations": operations, "schemas": schemas}


@api_view("GET")
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html", docs_context())
