"""Child processes with their output in log files, restartable, and waiting with timeouts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, message: str = ""
) -> Any:
    """Poll ``condition()`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def manage(*args: str) -> list[str]:
    return [sys.executable, str(PROJECT_DIR / "manage.py"), *args]


class Process:
    """One named role (a web server, a notifier, an agent, the cook): started again after a kill."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_dir = log_dir
        self.starts = 0
        self.stopped = False  # SIGSTOPped by the nemesis
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed on the next start or stop)
        self.popen = subprocess.Popen(
            self.args,
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the orchestrator only
        )
        self.stopped = False

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            os.kill(self.popen.pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig in (signal.SIGCONT, signal.SIGKILL):
                self.stopped = False

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()

    def tail(self, lines: int = 15) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
