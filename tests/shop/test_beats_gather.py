"""The web process's heartbeat writer: beats that arrive together share a statement, none is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shop.api import beats
from shop.api.beats import Beat, Heartbeats


class FakePool:
    @asynccontextmanager
    async def connection(self, timeout: float) -> AsyncIterator[object]:
        yield object()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[list[Beat]]:
    """Each statement's beats; a beat whose seq is negative makes its statement fail."""
    written: list[list[Beat]] = []

    async def write(conn: object, batch: list[Beat]) -> list[Any]:
        written.append(batch)
        await asyncio.sleep(0.01)  # the statement's round trip
        if any(seq < 0 for *_, seq in batch):
            raise OSError("the connection broke")
        return [(slug, {"state": "active"}) for slug, *_ in batch]

    async def pool(self: Heartbeats) -> FakePool:
        return FakePool()

    monkeypatch.setattr(beats, "outlet_heartbeats_by_token_async", write)
    monkeypatch.setattr(Heartbeats, "_connections", pool)
    return written


def beat(n: int, seq: int = 1) -> Beat:
    return (f"outlet-{n}", f"token-{n}", "agent", seq)


def test_beats_a_few_ms_apart_share_one_statement(statements: list[list[Beat]]) -> None:
    async def run() -> list[Any]:
        heartbeats = Heartbeats()

        async def later(n: int) -> Any:
            await asyncio.sleep(0.005 * n)
            return await heartbeats._write(beat(n))

        return await asyncio.gather(*(later(n) for n in range(3)))

    answers = asyncio.run(run())
    assert [slug for slug, _ in answers] == ["outlet-0", "outlet-1", "outlet-2"]
    assert statements == [[beat(0), beat(1), beat(2)]]


def test_a_beat_after_the_writers_finished_is_written_in_a_statement_of_its_own(
    statements: list[list[Beat]],
) -> None:
    async def run() -> tuple[Any, Any]:
        heartbeats = Heartbeats()
        first = await heartbeats._write(beat(1))
        await asyncio.sleep(0.05)  # every writer has finished
        return first, await heartbeats._write(beat(2))

    first, second = asyncio.run(run())
    assert (first[0], second[0]) == ("outlet-1", "outlet-2")
    assert statements == [[beat(1)], [beat(2)]]


def test_one_outlets_two_beats_go_in_two_statements(statements: list[list[Beat]]) -> None:
    async def run() -> list[Any]:
        heartbeats = Heartbeats()
        return list(
            await asyncio.gather(heartbeats._write(beat(1)), heartbeats._write(beat(1, seq=2)))
        )

    assert [slug for slug, _ in asyncio.run(run())] == ["outlet-1", "outlet-1"]
    assert statements == [[beat(1)], [beat(1, seq=2)]]


def test_a_failed_statement_fails_each_of_its_beats_and_no_other(
    statements: list[list[Beat]],
) -> None:
    async def run() -> list[Any]:
        heartbeats = Heartbeats()
        failing = [heartbeats._write(beat(n, seq=-1 if n == 2 else 1)) for n in range(4)]
        answers = await asyncio.gather(*failing, return_exceptions=True)
        return [*answers, await heartbeats._write(beat(9))]

    answers = asyncio.run(run())
    assert all(isinstance(a, OSError) for a in answers[:4]), answers
    assert answers[4][0] == "outlet-9"  # the writer carries on after a failure
