"""What every API view shares: reading a JSON body safely, answering errors, agent tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

from queueing.errors import QueueError
from queueing.models import Outlet
from queueing.services.outlets import outlet_by_token
from shop.refusal import Refused, refusal_response

MAX_BODY = 64 * 1024  # settings.DATA_UPLOAD_MAX_MEMORY_SIZE says the same to Django
BIGINT_MAX = 2**63 - 1  # fences and sequence numbers are PostgreSQL bigints
ORDER_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,40}")


def storable_text_check(data: Any) -> None:
    """Refuse strings PostgreSQL cannot store (NUL, lone surrogates) anywhere in the document."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise Refused(400, "invalid_text", "text must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Refused(
                    400, "invalid_text", "text must be valid Unicode (no lone surrogates)"
                ) from None


def json_body(request: HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; Refused 413 when too big, 415 when not JSON, 400 when malformed."""
    has_body = request.META.get("CONTENT_LENGTH") not in (None, "", "0") or (
        "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    media_type = request.content_type or ""
    # Only JSON: a form on another site cannot send it without the browser asking first (CORS).
    if has_body and media_type != "application/json":
        raise Refused(
            415,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY:
        raise Refused(413, "too_large", "request body is larger than 64 KiB")
    # Read one byte past the limit, never the whole of a body sent without a length.
    raw = request.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Refused(413, "too_large", "request body is larger than 64 KiB")
    if not raw.strip():
        if required:
            raise Refused(400, "malformed_json", "request body must be a JSON object")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Refused(400, "malformed_json", "request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise Refused(400, "malformed_json", "request body must be a JSON object")
    storable_text_check(data)
    return data


def api_view(*methods: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """An API endpoint answering these methods; domain refusals become JSON errors, never a 500."""
    allowed = ", ".join(methods)

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods and not (
                request.method == "HEAD" and "GET" in methods
            ):
                response = refusal_response(
                    Refused(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here; use {allowed}",
                    )
                )
                response["Allow"] = allowed
                return response
            try:
                return view(request, *args, **kwargs)
            except (Refused, QueueError) as exc:
                return refusal_response(exc)

        # A machine API authenticated by tokens, not cookies: there is no session to forge.
        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(
            401,
            "unauthenticated",
            "send the outlet's agent token as 'Authorization: Bearer <token>'",
        )
    return token.strip()


def agent_outlet(request: HttpRequest, slug: str | None = None) -> Outlet:
    """The outlet the bearer token belongs to: 401 when it is no outlet's, 403 when another's."""
    outlet = outlet_by_token(token=bearer_token(request))
    if outlet is None:
        raise Refused(401, "unauthenticated", "this is not a valid agent token")
    if slug is not None and outlet.slug != slug:
        raise Refused(403, "forbidden", f"this token belongs to another outlet, not {slug}")
    return outlet


def order_token(token: str) -> str:
    """An order token from the URL; 404 for anything that cannot be one."""
    if not ORDER_TOKEN.fullmatch(token):
        raise Refused(404, "not_found", "no order with this token")
    return token


def whole_number(data: dict[str, Any], name: str, *, minimum: int = 0, default: Any = None) -> int:
    """A bounded whole number from a JSON body (fences, sequence numbers); 400 naming it otherwise."""
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= BIGINT_MAX:
        raise Refused(
            400,
            "invalid",
            f"{name} must be a whole number from {minimum} to {BIGINT_MAX}",
            field=name,
        )
    return value


def fence_of(data: dict[str, Any]) -> int:
    """The one parser of a fence, for the agents' API and the kitchen screen's actions."""
    fence = data.get("fence")
    if isinstance(fence, bool) or not isinstance(fence, int) or not 0 <= fence <= BIGINT_MAX:
        raise Refused(
            400,
            "invalid",
            "fence must be the non-negative integer the claim returned",
            field="fence",
        )
    return fence


def token_of(data: dict[str, Any]) -> str:
    """The one parser of an order token in a JSON body (kitchen actions, batches)."""
    token = data.get("token")
    if not isinstance(token, str) or not ORDER_TOKEN.fullmatch(token):
        raise Refused(400, "invalid", "token must be an order token", field="token")
    return token
