"""What every API view shares: reading a JSON body safely, answering errors, agent tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from queueing.errors import QueueError
from queueing.models import Outlet
from queueing.services import outlet_authenticate
from queueing.services.outlets import outlet_by_token
from shop.ordering import OrderInvalid


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "message": message, **extra}, status=status)


def json_body(request: HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; ApiError 413 when too big, 400 when malformed."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "too_large", "request body is larger than 64 KiB") from None
    if not raw.strip():
        if required:
            raise ApiError(400, "malformed_json", "request body must be a JSON object")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return data


def api_view(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Turn the domain's refusals into JSON answers with their status; never a 500 for bad input."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        except OrderInvalid as exc:
            return error_response(exc.status, "invalid", exc.message, field=exc.field)
        except QueueError as exc:
            extra = {k: v for k, v in exc.context.items() if isinstance(v, str | int)}
            return error_response(exc.status, exc.code, exc.message, **extra)

    return wrapper


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "send the outlet's agent token as 'Authorization: Bearer <token>'")
    return token.strip()


def agent_outlet(request: HttpRequest, slug: str | None = None) -> Outlet:
    """The outlet the bearer token belongs to; 403 when it is another outlet's or no outlet's."""
    token = bearer_token(request)
    if slug is not None:
        outlet = outlet_authenticate(slug=slug, token=token)
    else:
        outlet = outlet_by_token(token=token)
    if outlet is None:
        raise ApiError(403, "forbidden", "this token is not a valid agent token for this outlet")
    return outlet


def fence_of(data: dict[str, Any]) -> int:
    fence = data.get("fence")
    if isinstance(fence, bool) or not isinstance(fence, int) or fence < 0:
        raise ApiError(400, "invalid", "fence must be the non-negative integer the claim returned", field="fence")
    return fence
