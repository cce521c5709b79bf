"""python manage.py outlet add|list|drain|retire|down|activate|token: manage outlets."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import IntegrityError

from queueing.errors import QueueError
from queueing.models import Outlet
from queueing.selectors import outlets_health
from queueing.services import (
    outlet_create,
    outlet_drain,
    outlet_mark_down,
    outlet_retire,
    outlet_rotate_token,
)
from queueing.services.outlets import outlet_activate, outlet_get

MAX_WEIGHT = 1000


def weight_type(raw: str) -> int:
    try:
        weight = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None
    if not 1 <= weight <= MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_WEIGHT}, got {weight}")
    return weight


def age_text(age: timedelta | None) -> str:
    if age is None:
        return "never"
    seconds = max(age.total_seconds(), 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


class Command(BaseCommand):
    help = (
        "Add, list, drain, retire, mark down or reactivate outlets, and rotate their agent tokens."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        add = actions.add_parser("add", help="add an outlet; prints its agent token last")
        add.add_argument("slug")
        add.add_argument("--name", default="", help="display name (default: the slug)")
        add.add_argument(
            "--weight", type=weight_type, default=1, help="capacity weight on the ring"
        )
        actions.add_parser("list", help="every outlet with its state and load")
        drain = actions.add_parser("drain", help="take no new orders; finish what it has")
        drain.add_argument("slug")
        drain.add_argument(
            "--move", action="store_true", help="move its unclaimed delivery orders elsewhere now"
        )
        retire = actions.add_parser("retire", help="retire an outlet with no open orders")
        retire.add_argument("slug")
        down = actions.add_parser("down", help="declare an outlet down now and move its orders")
        down.add_argument("slug")
        activate = actions.add_parser(
            "activate", help="let a down or draining outlet take new orders again"
        )
        activate.add_argument("slug")
        token = actions.add_parser("token", help="give an outlet a new agent token; prints it last")
        token.add_argument("slug")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{action}")(**options)
        except QueueError as exc:
            raise CommandError(exc.message) from None

    def do_add(self, *, slug: str, name: str, weight: int, **_: Any) -> None:
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(
                f"{slug!r} is not a slug: use letters, digits, hyphens and underscores"
            ) from None
        if len(slug) > 50 or len(name) > 100:
            raise CommandError("the slug must be at most 50 characters and the name 100")
        try:
            outlet, token = outlet_create(slug=slug, name=name, weight=weight)
        except IntegrityError:
            raise CommandError(f"outlet {slug} already exists") from None
        self.stdout.write(f"outlet {outlet.slug} ({outlet.name}) added: weight {outlet.weight}")
        self.stdout.write(
            f"it is down, waiting for proof: it takes orders once its agent has heartbeated "
            f"without a break for {settings.HEARTH_FLAP_GUARD:g}s "
            f"(or: python manage.py outlet activate {outlet.slug})"
        )
        self.stdout.write("its agent token, shown only this once (the next line):")
        self.stdout.write(token)

    def do_list(self, **_: Any) -> None:
        outlets = list(outlets_health())
        if not outlets:
            self.stdout.write("no outlets yet: python manage.py outlet add SLUG")
            return
        rows = [("slug", "name", "weight", "state", "heartbeat", "open")]
        for o in outlets:
            figures: Any = o  # annotated by outlets_health()
            open_orders = figures.queued + figures.preparing + figures.ready
            rows.append(
                (
                    o.slug,
                    o.name,
                    str(o.weight),
                    o.state,
                    age_text(figures.heartbeat_age),
                    str(open_orders),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )

    def do_drain(self, *, slug: str, move: bool, **_: Any) -> None:
        moved = outlet_drain(outlet=outlet_get(slug=slug), move_queued=move)
        self.stdout.write(f"outlet {slug} is draining: it takes no new orders and finishes its own")
        if move:
            self.stdout.write(f"{len(moved)} queued delivery orders moved to other outlets")

    def do_retire(self, *, slug: str, **_: Any) -> None:
        outlet_retire(outlet=outlet_get(slug=slug))
        self.stdout.write(f"outlet {slug} retired; its agent token no longer works")

    def do_down(self, *, slug: str, **_: Any) -> None:
        moved, cancelled = outlet_mark_down(outlet=outlet_get(slug=slug))
        self.stdout.write(
            f"outlet {slug} is down: {len(moved)} orders moved, {len(cancelled)} takeaway cancelled"
        )

    def do_activate(self, *, slug: str, **_: Any) -> None:
        outlet_activate(outlet=outlet_get(slug=slug))
        self.stdout.write(f"outlet {slug} is active: it takes new orders")

    def do_token(self, *, slug: str, **_: Any) -> None:
        outlet: Outlet = outlet_get(slug=slug)
        if outlet.state == "retired":
            raise CommandError(f"outlet {slug} is retired; it has no agent token")
        token = outlet_rotate_token(outlet=outlet)
        self.stdout.write(f"outlet {slug} has a new agent token; the old one stopped working")
        self.stdout.write(token)
