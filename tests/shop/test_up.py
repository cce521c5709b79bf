"""``manage.py up`` runs several web processes on one port, each answering on its own."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.processes import Process, free_port, manage, process_env, wait_for, wait_for_port


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_up__two_web_processes_share_one_port_and_either_answers_alone(tmp_path: Path) -> None:
    port = free_port()
    up = Process(
        manage("up", "--port", str(port), "--no-notifier", "--web-processes", "2"),
        env=process_env(),
        log_path=tmp_path / "up.log",
    )
    try:
        wait_for_port(port, timeout=60)

        def web_processes() -> list[int] | None:
            found = [p for p in _children(up.pid) if "daphne" in _cmdline(p)]
            return found if len(found) == 2 else None

        web = wait_for(web_processes, timeout=30, message="two daphne processes under up")
        for frozen in web:
            os.kill(frozen, signal.SIGSTOP)
            try:
                for _ in range(5):
                    # A new connection each time: the kernel hands it to the process that accepts.
                    answer = httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=20)
                    assert answer.status_code == 200
            finally:
                os.kill(frozen, signal.SIGCONT)
        assert "2 web processes" in up.output()
        # No access log unless HEARTH_ACCESS_LOG names one: a line per request costs the loop.
        assert '"GET /api/openapi.json' not in up.output()
    finally:
        up.stop(timeout=20)
