"""python manage.py up [--demo]: migrate, then run the web server, a notifier and (demo) agents."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from shop import database

log = logging.getLogger("hearth.up")

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


class Command(BaseCommand):
    help = "Run Hearth: migrations, the web server, a notifier; with --demo also outlets, agents and orders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo",
            action="store_true",
            help="seed a menu, three outlets with agents, and a trickle of orders",
        )
        parser.add_argument("--host", default=os.environ.get("HEARTH_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("HEARTH_PORT", "8000")))
        parser.add_argument(
            "--no-notifier", action="store_true", help="run web only (a notifier runs elsewhere)"
        )
        parser.add_argument(
            "--order-interval", type=float, default=3.0, help="demo: seconds between orders"
        )

    def handle(
        self,
        *args: Any,
        demo: bool,
        host: str,
        port: int,
        no_notifier: bool,
        order_interval: float,
        **options: Any,
    ) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        env = dict(os.environ)
        env["DATABASE_URL"] = database.database_url()
        env.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
        env["PYTHONUNBUFFERED"] = "1"
        if demo:
            # The demo's customers are one client placing an order every few seconds.
            env.setdefault("HEARTH_ORDER_RATE_LIMIT", "0")
            # The order form offers only configured zones: offer the demo's.
            from shop.demo import DEMO_ZONES

            env.setdefault("HEARTH_DELIVERY_ZONES", ",".join(DEMO_ZONES))
        if database.started_here:
            self.stdout.write(f"Started the embedded PostgreSQL in {database.EMBEDDED_DATA_DIR}")
        elif "DATABASE_URL" not in os.environ:
            self.stdout.write(f"Reusing the embedded PostgreSQL in {database.EMBEDDED_DATA_DIR}")

        server = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        children: list[tuple[str, subprocess.Popen[bytes]]] = []

        def start(name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
            children.append((name, subprocess.Popen(argv, env={**env, **(extra_env or {})})))

        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        access_log = Path(settings.BASE_DIR) / "var" / "access.log"
        access_log.parent.mkdir(parents=True, exist_ok=True)
        trickle = None
        try:
            start(
                "web",
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "--ping-interval",
                    "20",
                    "--ping-timeout",
                    "30",
                    # One line per request would bury the console (agents poll); keep them in a file.
                    "--access-log",
                    str(access_log),
                    "shop.asgi:application",
                ],
            )
            if not no_notifier:
                start("notifier", [sys.executable, MANAGE, "notifier"])
            if demo:
                from shop.demo import OrderTrickle, demo_seed

                tokens, passwords = demo_seed()
                for slug, token in tokens.items():
                    start(
                        f"agent {slug}",
                        [
                            sys.executable,
                            MANAGE,
                            "outlet_agent",
                            "--outlet",
                            slug,
                            "--server",
                            server,
                            "--pace",
                            "0.02",
                        ],
                        {"HEARTH_OUTLET_TOKEN": token},
                    )
                trickle = OrderTrickle(server=server, interval=order_interval)
                trickle.start()
                self.stdout.write("Demo users (passwords are new on every start):")
                for user, password in passwords.items():
                    self.stdout.write(f"  {user:<14} {password}")
            self.stdout.write(
                self.style.SUCCESS(
                    f"Hearth is up: {server}/  (order form {server}/order/, operations {server}/ops/, "
                    f"kitchens {server}/kitchen/<outlet>/). Ctrl-C stops everything."
                )
            )
            watched = list(children)
            while not stopping:
                for name, child in list(watched):
                    if child.poll() is None:
                        continue
                    if name.startswith("agent"):
                        # An outlet going dark is what Hearth is for: the demo carries on.
                        self.stderr.write(
                            f"{name} exited with status {child.returncode}; its outlet will fall "
                            "silent and the notifier will move its orders"
                        )
                        watched.remove((name, child))
                    else:
                        self.stderr.write(f"{name} exited with status {child.returncode}; stopping")
                        stopping = True
                time.sleep(0.2)
        finally:
            if trickle:
                trickle.stop()
            for _, child in reversed(children):
                if child.poll() is None:
                    child.terminate()
            for name, child in children:
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{name} did not stop in 10 s; killing it")
                    child.kill()
            if database.started_here:
                database.embedded_server_stop()
                self.stdout.write("Stopped the embedded PostgreSQL")
            self.stdout.write("Hearth stopped")
