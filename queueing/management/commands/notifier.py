"""python manage.py notifier: the failure detector and lease reaper (one of any number leads)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from queueing.notifier import Notifier


def seconds(raw: str) -> float:
    """A flag's positive number of seconds; decimals allowed."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {raw!r}")
    return value


class Command(BaseCommand):
    help = (
        "Declare silent outlets down and move their orders, reassign expired claims, "
        "let returning outlets back in. Run any number; one leads (a lease with a term in PostgreSQL)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tick", type=seconds, help="seconds between ticks (default HEARTH_NOTIFIER_TICK)"
        )
        parser.add_argument(
            "--timeout",
            type=seconds,
            help="seconds without a heartbeat before an outlet is down "
            "(default HEARTH_HEARTBEAT_TIMEOUT)",
        )
        parser.add_argument("--name", help="how this notifier is named (default host:pid)")
        parser.add_argument(
            "--once",
            action="store_true",
            help="run one tick now, with no grace period, and exit (does nothing if another leads)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("hearth").setLevel(
            logging.INFO if options["verbosity"] < 2 else logging.DEBUG
        )
        overrides = {k: options[k] for k in ("tick", "timeout", "name") if options[k] is not None}
        notifier = Notifier(**overrides)
        if options["once"]:
            try:
                report = notifier.run_once()
            finally:
                notifier.release()
            if report is None:
                raise CommandError("another notifier leads; this one did nothing")
            self.stdout.write(
                f"tick at {report.now:%H:%M:%S}: down {report.down or 'none'}, "
                f"rerouted {sum(report.rerouted.values())}, cancelled {report.cancelled}, "
                f"lease expired {report.expired}, back {report.back or 'none'}"
                + (f", ALERT {report.alert}" if report.alert else "")
            )
            return
        notifier.install_signal_handlers()
        notifier.run()
