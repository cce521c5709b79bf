"""The one way the product says no: ``Refused``, answered as one JSON shape everywhere.

The API, the kitchen screen's actions and the order form raise ``Refused``; the
engine's ``QueueError`` is turned into one by ``refused_from``. Every answer is
``{"error": <stable code>, "message": <fit to show>, ...extras}`` (``field``
names the input to fix), with the status's proper reason phrase.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from queueing.errors import QueueError


class Refused(Exception):
    """A refusal: HTTP status, stable code, a message fit to show, optional ``field`` and extras."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            answer["field"] = self.field
        return {**answer, **self.extra}


def refused_from(exc: QueueError) -> Refused:
    """The engine's refusal in the product's terms (only plain values of its context travel)."""
    extra = {k: v for k, v in exc.context.items() if isinstance(v, str | int) and k != "field"}
    field = exc.context.get("field")
    return Refused(
        exc.status, exc.code, exc.message, field=field if isinstance(field, str) else None, **extra
    )


def refusal_response(exc: Refused | QueueError) -> JsonResponse:
    """The JSON answer to a refusal; the status line carries the proper reason phrase."""
    refused = refused_from(exc) if isinstance(exc, QueueError) else exc
    response = JsonResponse(refused.as_json(), status=refused.status)
    try:
        response.reason_phrase = HTTPStatus(refused.status).phrase
    except ValueError:
        pass
    if refused.status == 429 and "retry_after" in refused.extra:
        response["Retry-After"] = str(refused.extra["retry_after"])
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: the JSON refusal under /api/ (the clients there read JSON), the page elsewhere."""
    if request.path.startswith("/api/"):
        return refusal_response(Refused(404, "not_found", "there is nothing at this address"))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Exception())


def login_locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' answer to a sign-in after too many failures: 429 with Retry-After."""
    retry = max(1, int(settings.AXES_COOLOFF_TIME * 3600))
    minutes = max(1, round(retry / 60))
    message = f"Too many failed sign-ins: try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        return refusal_response(Refused(429, "rate_limited", message, retry_after=retry))
    locked = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
    locked["Retry-After"] = str(retry)
    return locked
