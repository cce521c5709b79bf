"""Start Hearth's real processes (web server, notifier, agents) against the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """A conninfo URL of the database the tests are using right now."""
    s: dict[str, Any] = connection.settings_dict
    host = s["HOST"] or "localhost"
    if host.startswith("/"):
        return f"postgresql://{s['USER']}@/{s['NAME']}?host={host}" + (
            f"&port={s['PORT']}" if s["PORT"] else ""
        )
    port = f":{s['PORT']}" if s["PORT"] else ""
    password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
    return f"postgresql://{s['USER']}{password}@{host}{port}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=test_database_url(),
        DJANGO_SETTINGS_MODULE="shop.settings",
        PYTHONUNBUFFERED="1",
        HEARTH_ORDER_RATE_LIMIT="0",  # a test's one client places many orders; see test_abuse
    )
    env.update(extra)
    return env


def wait_for(condition: Any, *, timeout: float, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``condition()`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)


def wait_for_port(port: int, *, timeout: float = 60.0) -> None:
    def is_open() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(is_open, timeout=timeout, message=f"port {port}")


class Process:
    """A child process with its output in a log file under the test's tmp dir."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            args, cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def manage(*args: str) -> list[str]:
    return [sys.executable, str(PROJECT_DIR / "manage.py"), *args]


@contextmanager
def web_server(
    tmp_path: Path, *, port: int | None = None, **env: str
) -> Iterator[tuple[Process, str]]:
    """Daphne serving shop.asgi on a free port; yields (process, base URL)."""
    port = port or free_port()
    proc = Process(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "shop.asgi:application",
        ],
        env=process_env(**env),
        log_path=tmp_path / f"web-{port}.log",
    )
    try:
        wait_for_port(port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
