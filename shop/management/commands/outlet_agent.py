"""python manage.py outlet_agent --outlet SLUG: a headless outlet cooking over the HTTP API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.agent import CLAIM_WAIT, CLAIM_WAIT_MIN, AgentConfig, agent_run
from shop.api.agents import MAX_CLAIM_WAIT

TOKEN_ENV = "HEARTH_OUTLET_TOKEN"


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise CommandError(f"expected a number, got {raw!r}") from None
    if not value >= 0:
        raise CommandError(f"expected a number of at least 0, got {raw!r}")
    return value


class Command(BaseCommand):
    help = (
        "Run an outlet agent: heartbeats, claims orders, cooks them at --pace, marks them ready "
        "and complete. Talks to the server over HTTP only; stops cleanly on SIGTERM or Ctrl-C."
    )
    requires_system_checks: list[str] = []  # an outlet's computer: no database to check

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--outlet", required=True, help="the outlet's slug")
        parser.add_argument("--token", default="", help=f"agent token (default: ${TOKEN_ENV})")
        parser.add_argument("--server", default="http://127.0.0.1:8000", help="Hearth's base URL")
        parser.add_argument("--stations", type=int, default=2, help="stations cooking at once")
        parser.add_argument(
            "--pace",
            type=positive_float,
            default=1.0,
            help="multiplies each order's preparation time (0 cooks at once)",
        )
        parser.add_argument(
            "--heartbeat-interval",
            type=positive_float,
            default=None,
            help="seconds between heartbeats (default: HEARTH_HEARTBEAT_INTERVAL)",
        )
        parser.add_argument(
            "--claim-wait",
            type=positive_float,
            default=CLAIM_WAIT,
            help=(
                f"seconds an idle station's claim waits at the server for an order, from "
                f"{CLAIM_WAIT_MIN:g} to {MAX_CLAIM_WAIT} (default {CLAIM_WAIT:g}; shorter behind "
                "a proxy that cuts idle requests sooner)"
            ),
        )
        parser.add_argument(
            "--made-log",
            type=Path,
            default=None,
            help="append one JSON line per order this agent completed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        token = options["token"] or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise CommandError(f"give the outlet's agent token with --token or ${TOKEN_ENV}")
        if not 1 <= options["stations"] <= 64:
            raise CommandError("--stations must be from 1 to 64")
        interval = options["heartbeat_interval"]
        if interval is None:
            interval = float(settings.HEARTH_HEARTBEAT_INTERVAL)
        if interval <= 0:
            raise CommandError("--heartbeat-interval must be more than 0")
        if not CLAIM_WAIT_MIN <= options["claim_wait"] <= MAX_CLAIM_WAIT:
            # Shorter, a 204 after the wait and one at once (a server without waiting
            # claims, which the agent backs off from) could not be told apart.
            raise CommandError(
                f"--claim-wait must be from {CLAIM_WAIT_MIN:g} to {MAX_CLAIM_WAIT} seconds"
            )
        config = AgentConfig(
            outlet=options["outlet"],
            token=token,
            server=options["server"],
            stations=options["stations"],
            pace=options["pace"],
            heartbeat_interval=interval,
            made_log=options["made_log"],
            claim_wait=options["claim_wait"],
        )
        if agent_run(config) != 0:
            raise CommandError(f"the server refused the agent of outlet {config.outlet}")
