"""What the queue refuses, with messages fit to show a cook or an API client."""

from __future__ import annotations


class QueueError(Exception):
    """Base of every refusal; ``code`` is stable for API clients."""

    code = "queue_error"
    status = 400

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


class NotFound(QueueError):
    code = "not_found"
    status = 404


class Forbidden(QueueError):
    code = "forbidden"
    status = 403


class StaleFence(QueueError):
    """The claim this write acts on is no longer the valid one."""

    code = "stale_fence"
    status = 409


class TicketTaken(QueueError):
    code = "taken"
    status = 409


class InvalidState(QueueError):
    code = "invalid_state"
    status = 409


class OutletUnavailable(QueueError):
    code = "outlet_unavailable"
    status = 422


class OutletNotEmpty(QueueError):
    code = "outlet_not_empty"
    status = 409
