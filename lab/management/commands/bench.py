"""python manage.py bench <queue|failover|sockets|outlets|web|idle|scale>: measure, print, and write docs/benchmarks.md."""

from __future__ import annotations

import importlib
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

BENCHES = ("queue", "failover", "sockets", "outlets", "web", "idle", "scale")


class Command(BaseCommand):
    help = "Run a benchmark; prints its figures and writes them to docs/benchmarks.md."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=BENCHES)
        parser.add_argument(
            "--quick", action="store_true", help="a small run, to check the bench works"
        )

    def handle(self, *args: Any, name: str, quick: bool, **options: Any) -> None:
        module = importlib.import_module(f"lab.bench.{name}")
        module.run(stdout=self.stdout, quick=quick)
