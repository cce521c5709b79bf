"""The nemesis: a few seeds of randomized faults over real processes, checked over the whole history.

Each seed runs lab.scenario on a database of its own (``<test db>_nemesis_<seed>``,
dropped afterwards): two web processes, two notifiers, three agents and a cook on
a kitchen screen, all behind fault-injecting proxies, about 25 s of faults, then a
settle and the checker (docs/chaos.md). A failing seed prints its reproduction:
``python manage.py chaos --seed N --seconds 25``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import checker
from lab.scenario import run_chaos
from tests.processes import test_database_url as database_url_of_tests

pytestmark = pytest.mark.slow

SEEDS = [1, 2, 3]
SECONDS = 25.0
SETTLE = 35.0


@pytest.mark.parametrize("seed", SEEDS)
def test_nemesis__seeded_faults_over_real_processes__every_invariant_holds(
    seed: int, tmp_path: Path
) -> None:
    url = database_url_of_tests()
    if "host=/" in url:
        # The embedded PostgreSQL listens on a Unix socket only; the proxies speak TCP.
        pytest.skip("the nemesis needs PostgreSQL over TCP: set DATABASE_URL (as .ci/run does)")
    base = url.rsplit("/", 1)[1].split("?")[0]
    result = run_chaos(
        seed=seed,
        seconds=SECONDS,
        server_url=url,
        log_dir=tmp_path,
        settle=SETTLE,
        database=f"{base}_nemesis_{seed}",
    )
    print(result.text())
    assert result.ok, (
        f"seed {seed} broke {', '.join(checker.failed(result.verdict))}; reproduce with "
        f"`python manage.py chaos --seed {seed} --seconds {SECONDS:g}`\n"
        + checker.report(result.verdict)
    )
