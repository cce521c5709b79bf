"""The hot API endpoints' short path: one pool thread per request instead of a hop per middleware.

Under ASGI, Django runs every request in a thread made for it (a
``ThreadSensitiveContext``) and hops between the event loop and that thread for
each middleware's request and response halves and for the view: about 18 hand-offs
and one new thread per request, each paid on the process's one event loop. The
order endpoints (``/api/orders``, ``/api/orders/<token>``: placing and following an
order, the paths a chain's customers hit hardest) need none of that: this ASGI
wrapper answers them with a synchronous Django handler run whole in one thread of
the loop's pool, so requests wait for PostgreSQL side by side.

Two agent requests go shorter still, since an idle fleet sends them all day: a
well-formed heartbeat is answered on the event loop by ``shop.api.beats`` (the
heartbeats that it declines come here, to the view), and a parked claim
(``?wait=`` above 0) runs the async view in the loop, with no thread of its own
(``ApiFastPath.claim``).

The handler is Django's own (URL resolution, the views, refusals, the
``request_started``/``request_finished`` signals that hand connections back to the
pool) with a shorter middleware list: these endpoints are anonymous or
token-authenticated, so they skip messages, CSRF (the views are exempt anyway) and
django-axes (sign-ins only). Sessions and authentication stay, lazily, because a
signed-in member of staff may rush an order; a request that carries no session
cookie never touches the session table. ``HEARTH_API_FAST=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from io import BytesIO
from typing import cast
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import response_for_exception
from django.http import HttpResponse
from django.urls import set_script_prefix

from shop.api import agents
from shop.api.beats import Heartbeats
from shop.api.edge import security_headers, short_path_allowed
from shop.body_limit import ASGIApp, Message, Receive, Scope, Send

# The paths answered here: the order endpoints and the agents' heartbeats (an idle
# fleet's whole load, declined by shop.api.beats), not claims or pages.
FAST_PATH = re.compile(
    r"/api/orders(?:/[A-Za-z0-9_-]{1,40})?|/api/outlets/[-A-Za-z0-9_]{1,50}/heartbeat"
)
# Agents' parked claims (``?wait=`` more than 0: up to a minute each), answered in the
# loop; a claim that answers at once goes through Django like any other request.
CLAIM_PATH = re.compile(r"/api/outlets/(?P<slug>[-A-Za-z0-9_]{1,50})/claim")


def parks(query_string: bytes) -> bool:
    """Whether a claim asks to wait: ``wait`` read as the view reads it (its last value)."""
    values = parse_qs(query_string.decode("latin1")).get("wait") or ["0"]
    try:
        return float(values[-1]) > 0  # NaN is not > 0
    except ValueError:
        return False


# Every page's middleware, less what an anonymous or token-authenticated API call never uses.
SKIPPED = {
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "axes.middleware.AxesMiddleware",
}


class ApiHandler(BaseHandler):
    """Django's request handling, synchronous, with the API's middleware."""

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware(is_async=False)

    def load_middleware(self, is_async: bool = False) -> None:
        full = settings.MIDDLEWARE
        try:
            settings.MIDDLEWARE = [m for m in full if m not in SKIPPED]
            super().load_middleware(is_async=False)
        finally:
            settings.MIDDLEWARE = full

    def respond(self, scope: Scope, body: bytes) -> HttpResponse:
        """The whole request in this (pool) thread: signals, middleware, view, close."""
        set_script_prefix(scope.get("root_path", "") or "/")
        signals.request_started.send(sender=self.__class__, scope=scope)
        request = ASGIRequest(scope, BytesIO(body))
        # The order endpoints answer whole responses, never streaming ones.
        response = cast(HttpResponse, self.get_response(request))
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        # Sends request_finished: this thread's connection goes back to the pool now.
        response.close()
        return response


class ApiFastPath:
    """ASGI app: heartbeats on the loop (else ApiHandler), the order endpoints through
    ApiHandler, parked claims in the loop; everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.enabled = settings.HEARTH_API_FAST
        self.handler = ApiHandler() if self.enabled else None
        self.beats = Heartbeats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        claim = CLAIM_PATH.fullmatch(path)
        if claim and not parks(scope.get("query_string", b"")):
            claim = None  # answered at once: through Django like any other request
        if self.handler is None or not (claim or FAST_PATH.fullmatch(path)):
            await self.app(scope, receive, send)
            return
        if claim and not short_path_allowed(scope)[0]:
            await self.app(scope, receive, send)  # Django redirects or refuses it
            return
        chunks: list[bytes] = []
        while True:  # BodyLimit, outside, has already refused a body over the limit
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if claim:
            await self.claim(scope, body, claim["slug"], receive, send)
            return
        answered = await self.beats.answer(scope, body)
        if answered is not None:  # a heartbeat, on the event loop
            headers, content = answered
            headers = [*headers, (b"Content-Length", str(len(content)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        response = await sync_to_async(self.handler.respond, thread_sensitive=False)(scope, body)
        await send_response(response, send)

    async def claim(
        self, scope: Scope, body: bytes, slug: str, receive: Receive, send: Send
    ) -> None:
        """A parked claim in the event loop: the async view with no middleware.

        Through Django's handler every request, an async view's too, runs its sync
        middleware in a thread made for that request: 2,000 parked claims were 2,000
        threads in one web process. The view authenticates by token and uses no
        session; the security headers are added as the middleware would. As Django
        does, a client that goes away cancels the view: parked, it claims nothing; a
        claim already in its pool thread still commits, and that order is sent again on
        the station's next claim (``resend_held``) or moves on when its lease runs out.
        """
        set_script_prefix(scope.get("root_path", "") or "/")
        request = ASGIRequest(scope, BytesIO(body))
        view = asyncio.ensure_future(agents.claim(request, slug))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({view, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (view, gone):
                if not task.done():
                    task.cancel()
        if not view.done() or view.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                await view
            return
        try:
            response = view.result()
        except Exception as exc:  # as Django answers a view's error: logged, its 500 page
            response = await sync_to_async(response_for_exception, thread_sensitive=False)(
                request, exc
            )
        for name, value in security_headers(short_path_allowed(scope)[1]):
            key = name.decode()
            if key not in response:
                response[key] = value.decode()
        response["Content-Length"] = str(len(response.content))
        await send_response(response, send)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_response(response: HttpResponse, send: Send) -> None:
    """A whole (not streaming) response over ASGI, cookies included, as Django's handler sends it."""
    headers: list[tuple[bytes, bytes]] = [
        (name.encode("ascii"), value.encode("latin1")) for name, value in response.items()
    ]
    headers += [
        (b"Set-Cookie", c.output(header="").encode("ascii").strip())
        for c in response.cookies.values()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
