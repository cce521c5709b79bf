"""Request bodies over the limit are refused with 413 before they are read, in two places.

Daphne reads a whole request body (into a temporary file) and then queues all of
it in memory for the application before any ASGI code runs: a 300 MB upload grew
a web process by 300 MB before Django's own limit could say no. So the refusal
has to happen in Daphne's request object, as the headers and then the body
arrive: ``daphne_refuses_large_bodies`` puts that in place (shop/asgi.py calls
it). ``BodyLimit`` is the same rule as ASGI middleware, for any server that
streams the body to the application; it keeps at most the limit in memory.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping
from io import BytesIO
from typing import Any

MAX_BODY = 64 * 1024  # settings.DATA_UPLOAD_MAX_MEMORY_SIZE says the same to Django

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOO_LARGE_BODY = json.dumps(
    {"error": "too_large", "message": f"request body is larger than {MAX_BODY // 1024} KiB"}
).encode()


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request declares; None when absent or not a number."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(TOO_LARGE_BODY)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": TOO_LARGE_BODY})


class BodyLimit:
    """ASGI middleware: 413 by Content-Length at once, or as soon as a body passes the limit."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope.get("headers", []))
        if length is not None and length > self.limit:
            await send_too_large(send)
            return
        # Read the body up to the limit here, so the application never starts on one too big.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await send_too_large(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def daphne_refuses_large_bodies(limit: int = MAX_BODY) -> None:
    """Make Daphne answer 413 when the headers announce too much or a chunked body passes ``limit``.

    And leave the body to the application: Twisted parses a POST's Content-Type (through
    the ``email`` package) and any form body into ``request.args``, which Daphne never
    reads, on every POST.
    """
    from daphne import http_protocol
    from twisted.web import http

    # Twisted knows no reason phrase for these; the status line read "Unknown Status".
    http.RESPONSES.setdefault(422, b"Unprocessable Content")
    http.RESPONSES.setdefault(429, b"Too Many Requests")
    http.RESPONSES[413] = b"Content Too Large"

    base = http_protocol.WebRequest
    takes = inspect.signature(http.Request.__init__).parameters  # an older Twisted parses anyway
    no_form_parsing = (
        {"parsePOSTFormSubmission": False} if "parsePOSTFormSubmission" in takes else {}
    )
    if getattr(base, "body_limit", None) is not None:
        return  # already in place

    class LimitedWebRequest(base):  # type: ignore[misc,valid-type]
        body_limit = limit
        refused = False
        received = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, **no_form_parsing)

        def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
            if length is not None and length > self.body_limit:
                self.refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
            if self.refused:
                return
            self.received += len(data)
            if self.received > self.body_limit:
                self.refuse()
                return
            super().handleContentChunk(data)

        def process(self) -> Any:
            if self.refused:
                return None
            return super().process()

        def refuse(self) -> None:
            """Answer 413 and close; nothing more of this body is read or kept."""
            self.refused = True
            old = getattr(self, "content", None)
            if old is not None:
                old.close()
            self.content = BytesIO()
            self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the answer
            transport = self.channel.transport
            transport.write(
                b"HTTP/1.1 413 Content Too Large\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(TOO_LARGE_BODY) + TOO_LARGE_BODY
            )
            transport.loseConnection()

    http_protocol.WebRequest = LimitedWebRequest
