"""Per-client rate limits kept in PostgreSQL, so every web process counts the same requests.

A fixed window per (limit, client): one statement counts the request and says
how many the window holds and when it ends, by the database's clock. Logins
are limited by django-axes (also in the database); this is for order placement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from queueing.db import execute, fetch_one
from shop.refusal import Refused

# Count one request of ``key``; a window older than ``window`` seconds starts again at 1.
RATE_HIT = """
INSERT INTO shop_ratecounter AS c (key, window_start, hits)
VALUES (%(key)s, now(), 1)
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN c.window_start > now() - make_interval(secs => %(window)s)
                THEN c.hits + 1 ELSE 1 END,
    window_start = CASE WHEN c.window_start > now() - make_interval(secs => %(window)s)
                        THEN c.window_start ELSE now() END
RETURNING hits,
    ceil(extract(epoch FROM c.window_start + make_interval(secs => %(window)s) - now()))::int
        AS retry_after
"""

PRUNE_CHANCE = 0.01
# Forget windows that ended long ago (run now and then, not on every request).
RATE_PRUNE = """
DELETE FROM shop_ratecounter WHERE window_start < now() - interval '1 day'
"""


@dataclass(frozen=True)
class Limit:
    name: str
    hits: int
    window: float  # seconds


def client_address(request: HttpRequest) -> str:
    """The client as the web server saw it (behind a proxy: run Daphne with --proxy-headers)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")[:100]


def rate_limit_check(*, limit: Limit, request: HttpRequest) -> None:
    """Count this request; Refused 429 with ``retry_after`` once the client is over the limit."""
    if limit.hits <= 0:
        return  # switched off
    row = fetch_one(
        RATE_HIT, {"key": f"{limit.name}:{client_address(request)}", "window": limit.window}
    )
    assert row is not None
    if row["hits"] == 1 and random.random() < PRUNE_CHANCE:
        execute(RATE_PRUNE, {})  # now and then, at the start of a window
    if row["hits"] > limit.hits:
        retry = max(1, int(row["retry_after"]))
        raise Refused(
            429,
            "rate_limited",
            f"too many requests from this client; try again in {retry} s",
            retry_after=retry,
        )


def order_limit() -> Limit:
    return Limit("orders", settings.HEARTH_ORDER_RATE_LIMIT, settings.HEARTH_ORDER_RATE_WINDOW)
