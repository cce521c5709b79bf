"""The least a web process can do for a request: Daphne reads it and answers, no Django.

``bench web`` serves this through the same daphne processes as ``up`` (the same
command line, the same accept batching) to measure what Daphne itself costs a
request: the floor under every figure of the real endpoints.
"""

from __future__ import annotations

from typing import Any

from shop.serving import daphne_adjusted

daphne_adjusted()

# About the size of an order answer (a placed margherita is ~600 bytes).
BODY = b'{"bench": "' + b"x" * 580 + b'"}'


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as the order endpoint reads it
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"Content-Type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
