"""Oversized bodies are refused with 413 before they are read, in a real Daphne process."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from daphne import http_protocol
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from shop.body_limit import BodyLimit, daphne_refuses_large_bodies
from tests.body_flood import rss_kib, send_big_body
from tests.processes import Process, web_server

# A 300 MB attempt may cost the process a little bookkeeping, never the body.
RSS_GROWTH_LIMIT_KIB = 8 * 1024
FLOOD = 300 * 2**20


@pytest.fixture(scope="module")
def web(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    with django_db_blocker.unblock():
        with web_server(tmp_path_factory.mktemp("body")) as (proc, base):
            httpx.get(base + "/api/openapi.json", timeout=30)  # warm up: imports, first request
            yield proc, base


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_limit__300_mb_attempt_is_413_and_does_not_grow_the_web_process(
    web: tuple[Process, str], chunked: bool
) -> None:
    proc, base = web
    before = rss_kib(proc.pid)
    status, sent = send_big_body(port_of(base), total=FLOOD, chunked=chunked)
    grown = rss_kib(proc.pid) - before
    assert status == 413
    assert sent < FLOOD // 10, f"the server read {sent} bytes before refusing"
    assert grown < RSS_GROWTH_LIMIT_KIB, f"the web process grew by {grown} KiB"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/orders", "/kitchen/north/start", "/order/", "/nowhere"])
def test_body_limit__every_endpoint_answers_413_json(web: tuple[Process, str], path: str) -> None:
    _, base = web
    answer = httpx.post(
        base + path,
        content=b"{" + b" " * (64 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.reason_phrase == "Content Too Large"
    assert answer.json()["error"] == "too_large"


@pytest.mark.slow
def test_body_limit__a_body_at_the_limit_still_reaches_the_view(web: tuple[Process, str]) -> None:
    _, base = web
    answer = httpx.post(
        base + "/api/orders",
        content=b"{" + b" " * (64 * 1024 - 2) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 400  # read and parsed: an empty object is no order
    assert answer.json()["field"] == "kind"


def run_body_limit(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> Any:
    """Run BodyLimit around an app that reads the whole body; returns (sent, app's body or None)."""
    seen: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    asyncio.run(BodyLimit(app, limit=10)(scope, receive, send))
    return sent, seen.get("body"), queue


def test_body_limit_middleware__refuses_by_content_length_without_reading() -> None:
    messages = [{"type": "http.request", "body": b"x" * 5, "more_body": True}]
    sent, body, left = run_body_limit(messages, [(b"content-length", b"11")])
    assert sent[0]["status"] == 413 and body is None
    assert len(left) == 1  # not one message of the body was taken
    assert json.loads(sent[1]["body"])["error"] == "too_large"


def test_body_limit_middleware__counts_a_streamed_body_and_stops_past_the_limit() -> None:
    chunk = {"type": "http.request", "body": b"x" * 4, "more_body": True}
    sent, body, left = run_body_limit([dict(chunk) for _ in range(10)], [])
    assert sent[0]["status"] == 413 and body is None
    assert len(left) == 7  # 3 chunks (12 bytes) were read, the rest never


def test_body_limit_middleware__hands_a_small_body_to_the_app_whole() -> None:
    messages = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"67890", "more_body": False},
    ]
    sent, body, _ = run_body_limit(messages, [])
    assert sent == [] and body == b"1234567890"


@pytest.mark.skipif(
    "parsePOSTFormSubmission" not in inspect.signature(http.Request.__init__).parameters,
    reason="this Twisted parses every form body (the parameter came later)",
)
def test_daphne_request__leaves_a_form_body_to_the_application() -> None:
    """Twisted parsed every POST's Content-Type and form body into ``args``, which Daphne
    never reads; the body still reaches the application whole."""
    daphne_refuses_large_bodies()
    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda p: None))  # type: ignore[attr-defined]
    request = http_protocol.WebRequest(channel)
    request.process = lambda: None  # Daphne's: hands the request to the application
    body = b"username=north&password=secret"
    request.gotLength(len(body))
    request.handleContentChunk(body)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.requestReceived(b"POST", b"/accounts/login/?next=/kitchen/", b"HTTP/1.1")
    assert request.args == {b"next": [b"/kitchen/"]}  # the query string only
    assert request.content.getvalue() == body
