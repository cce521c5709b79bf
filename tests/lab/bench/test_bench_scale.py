"""The scale bench in its quick size: every figure is reported, and no event is lost."""

from __future__ import annotations

import io
import math

import pytest

from lab.bench import scale
from lab.bench.sockets import DB_PREFIX_ENV


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_scale__quick_reports_every_figure_and_loses_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DB_PREFIX_ENV, "test_bench_")  # not the database a real run uses
    out = io.StringIO()

    result = scale.run(stdout=out, quick=True)

    assert result.idle is not None and result.idle.web_cpu > 0
    assert [s.rate for s in result.steps] == list(scale.QUICK.rates)
    for step in result.steps:
        assert step.placed > 0 and step.failed == 0
        assert step.expected > 0 and step.lost == 0 and step.duplicates == 0
        assert step.web_cpu > 0 and step.db_cpu > 0 and step.client_cpu > 0
        assert math.isfinite(step.api_p99) and math.isfinite(step.quantile(0.99))
        assert step.by_kind.get("customer") and step.by_kind.get("kitchen")
        assert step.load > 0
    assert result.fleet and result.fleet["claimed"] > 0 and result.fleet["errors"] == 0
    for heading in (
        "orders/s asked",
        "web CPU (",
        "database CPU",
        "API p50 / p99",
        "commit → screen p50 / p99",
        "lost",
        "load",
        "Highest rate at which p99 < 250 ms holds",
        "Lost events over every step: 0 (must be 0)",
    ):
        assert heading in result.report
    assert result.report in out.getvalue()
    assert [p.name for p in result.plots] == ["bench-scale-latency.png", "bench-scale-cpu.png"]
    # The quick run leaves docs/ as the last full run wrote it.
    for plot in result.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plot.parent != scale.DOCS_DIR


def _step(rate: float, *, api_ms: float, screen_ms: float, placed: int | None = None) -> scale.Step:
    step = scale.Step(rate=rate, seconds=1)
    step.placed = int(rate) if placed is None else placed
    step.elapsed = 1
    step.expected = 1
    step.api_latencies = [api_ms / 1000]
    step.latencies = [screen_ms / 1000]
    return step


def test_past_the_bend__a_stall_goes_on_a_rising_p99_or_a_rate_not_reached_stops() -> None:
    holds = _step(5, api_ms=50, screen_ms=60)
    stall = _step(10, api_ms=400, screen_ms=600)
    assert holds.holds and not stall.holds

    assert not scale._past_the_bend(holds, [])
    assert not scale._past_the_bend(stall, [holds])  # the first step over: one more
    assert not scale._past_the_bend(_step(20, api_ms=300, screen_ms=500), [stall])  # both fell
    assert scale._past_the_bend(_step(20, api_ms=300, screen_ms=700), [stall])  # screen rose
    assert scale._past_the_bend(_step(20, api_ms=500, screen_ms=100), [stall])  # API rose
    assert scale._past_the_bend(_step(20, api_ms=50, screen_ms=60, placed=10), [holds])
    lossy = _step(20, api_ms=50, screen_ms=60)
    lossy.lost = 1
    assert scale._past_the_bend(lossy, [holds])
