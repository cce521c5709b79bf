"""python manage.py bench <queue|failover|sockets|outlets|web|idle|scale>: measure, print, and write docs/benchmarks.md."""

from __future__ import annotations

import importlib
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from shop.collector import quiet_collector

BENCHES = ("queue", "failover", "sockets", "outlets", "web", "idle", "scale")
# The bench's own clients (a simulated fleet of 1,000 outlets, thousands of sockets) hold as
# many objects as a web process: without the web process's collector their full collections
# stop the clients and read as the server's latency. Fixed here,
# so HEARTH_GC_FULL_AFTER=0 compares the web processes' collector alone.
CLIENT_GC_FULL_AFTER = 1000


class Command(BaseCommand):
    help = "Run a benchmark; prints its figures and writes them to docs/benchmarks.md."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=BENCHES)
        parser.add_argument(
            "--quick", action="store_true", help="a small run, to check the bench works"
        )

    def handle(self, *args: Any, name: str, quick: bool, **options: Any) -> None:
        module = importlib.import_module(f"lab.bench.{name}")
        quiet_collector(CLIENT_GC_FULL_AFTER)
        module.run(stdout=self.stdout, quick=quick)
