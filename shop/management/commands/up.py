"""python manage.py up [--demo]: migrate, then run the web server, a notifier and (demo) agents."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

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
            "--web-processes",
            type=int,
            default=settings.HEARTH_WEB_PROCESSES,
            help="web (daphne) processes sharing the port; default: one per core",
        )
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
        web_processes: int,
        no_notifier: bool,
        order_interval: float,
        **options: Any,
    ) -> None:
        if web_processes < 1:
            raise CommandError("--web-processes must be at least 1")
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

        def start(
            name: str,
            argv: list[str],
            extra_env: dict[str, str] | None = None,
            pass_fds: tuple[int, ...] = (),
        ) -> None:
            child = subprocess.Popen(argv, env={**env, **(extra_env or {})}, pass_fds=pass_fds)
            children.append((name, child))

        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        access_log = settings.HEARTH_ACCESS_LOG
        if access_log:
            Path(access_log).parent.mkdir(parents=True, exist_ok=True)
        trickle = None
        try:
            listening = _listening_socket(host, port)
            for n in range(web_processes):
                start(
                    f"web {n + 1}",
                    web_argv(listening.fileno(), access_log=access_log),
                    pass_fds=(listening.fileno(),),
                )
            # The children hold the socket now; up keeps no copy, so the port closes with them.
            listening.close()
            self.stdout.write(f"{web_processes} web processes share {host}:{port}")
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
                if tokens:
                    self.stdout.write(
                        f"New outlets take orders once their agents have heartbeated without "
                        f"a break for {settings.HEARTH_FLAP_GUARD:g}s; delivery orders wait "
                        "for them until then."
                    )
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


def web_argv(
    fd: int, *, access_log: str | None, application: str = "shop.asgi:application"
) -> list[str]:
    """One web process serving on the listening socket ``fd``; with an access log or none."""
    # One line per request would bury the console: in a file, or (the default) not at all,
    # since writing it costs each request time in the process's one event loop. Daphne
    # writes one to stdout at its default verbosity unless told otherwise: -v 0 (its own
    # log then says warnings and errors; Hearth's loggers keep their own levels).
    log = ["--access-log", access_log] if access_log else ["-v", "0"]
    return [
        sys.executable,
        "-m",
        "daphne",
        "--fd",
        str(fd),
        "--ping-interval",
        "20",
        "--ping-timeout",
        "30",
        *log,
        application,
    ]


def _listening_socket(host: str, port: int) -> socket.socket:
    """One listening TCP socket that every web process accepts on (the kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(1024)
    return sock
