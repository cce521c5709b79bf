"""python manage.py chaos --seed N --minutes M: one randomized fault run and the checker's verdict."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lab.scenario import run_chaos, schedule
from shop.database import database_url


class Command(BaseCommand):
    help = (
        "Run Hearth's processes behind fault-injecting proxies on a database of the run's own "
        "(<name>_chaos_<seed>), apply the fault schedule drawn from --seed, settle, and check "
        "the invariants over the whole history. Exit status 1 when an invariant fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
        parser.add_argument("--minutes", type=float, default=1.0, help="minutes of faults")
        parser.add_argument(
            "--seconds", type=float, default=None, help="seconds of faults (instead of --minutes)"
        )
        parser.add_argument("--settle", type=float, default=60.0, help="seconds to converge")
        parser.add_argument("--keep", action="store_true", help="keep the run's database")
        parser.add_argument("--logs", type=Path, default=None, help="where logs go (a temp dir)")
        parser.add_argument(
            "--schedule", action="store_true", help="print the seed's fault schedule and stop"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["seconds"] or options["minutes"] * 60
        if options["schedule"]:
            for fault in schedule(options["seed"], seconds):
                self.stdout.write(fault.text())
            return
        logs = options["logs"] or Path(tempfile.mkdtemp(prefix=f"chaos-{options['seed']}-"))
        result = run_chaos(
            seed=options["seed"],
            seconds=seconds,
            server_url=database_url(),
            log_dir=logs,
            settle=options["settle"],
            keep=options["keep"],
            say=lambda text: self.stdout.write(text),
        )
        self.stdout.write(result.text())
        if not result.ok:
            raise CommandError(
                f"invariants failed; reproduce with: python manage.py chaos --seed "
                f"{options['seed']} --seconds {seconds:g}"
            )
