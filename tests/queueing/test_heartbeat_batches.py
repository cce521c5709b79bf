"""Several agents' heartbeats in one statement (the web process's event loop writes them so)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from queueing.models import Heartbeat, Outlet, OutletState
from queueing.services.outlets import outlet_heartbeats_by_token_async
from queueing.wake import own_conninfo

pytestmark = pytest.mark.django_db(transaction=True)  # the async connection sees commits only

MakeOutlet = Callable[..., tuple[Outlet, str]]


def beats(batch: list[tuple[str, str, str, int]]) -> list[Any]:
    async def write() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(
            own_conninfo("test"), autocommit=True, row_factory=dict_row
        ) as conn:
            return await outlet_heartbeats_by_token_async(conn, batch)

    return asyncio.run(write())


def test_batch__each_beat_answered_in_order_and_only_the_good_ones_written(
    make_outlet: MakeOutlet,
) -> None:
    north, north_token = make_outlet("north")
    south, south_token = make_outlet("south", active=False)  # down: a beat starts its return
    _, east_token = make_outlet("east")
    answers = beats(
        [
            ("north", north_token, "agent", 1),
            ("north", "no-such-token", "agent", 2),
            ("north", east_token, "agent", 3),  # east's token on north's URL
            ("south", south_token, "agent", 4),
        ]
    )
    assert answers[0] is not None and answers[0][0] == "north"
    assert answers[0][1] is not None and answers[0][1]["state"] == OutletState.ACTIVE
    assert answers[1] is None  # no outlet's token: 401 by the view
    assert answers[2] == ("east", None)  # another outlet's: 403 by the view
    assert answers[3] is not None and answers[3][1] is not None
    assert answers[3][1]["state"] == OutletState.DOWN  # one beat never brings it back
    # One statement, one clock: both good beats carry the same time, and only they were written.
    assert answers[0][1]["last_heartbeat_at"] == answers[3][1]["last_heartbeat_at"]
    assert sorted(Heartbeat.objects.values_list("outlet__slug", "seq")) == [
        ("north", 1),
        ("south", 4),
    ]
    south.refresh_from_db()
    assert (south.back_beats, south.last_heartbeat_at) == (1, answers[3][1]["last_heartbeat_at"])


def test_batch__a_token_beats_once_per_statement(make_outlet: MakeOutlet) -> None:
    _, token = make_outlet("north")
    with pytest.raises(ValueError, match="once per batch"):
        beats([("north", token, "agent", 1), ("north", token, "agent", 2)])
    assert not Heartbeat.objects.exists()


def test_batch__retired_outlets_token_is_no_token(make_outlet: MakeOutlet) -> None:
    outlet, token = make_outlet("north")
    Outlet.objects.filter(pk=outlet.pk).update(state=OutletState.RETIRED)
    assert beats([("north", token, "agent", 1)]) == [None]
    assert not Heartbeat.objects.exists()
