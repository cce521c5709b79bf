"""Outlets the screen tests share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from queueing.models import Outlet


@pytest.fixture
def north(make_outlet: Callable[..., tuple[Outlet, str]]) -> Outlet:
    return make_outlet("north", name="Hearth North")[0]


@pytest.fixture
def south(make_outlet: Callable[..., tuple[Outlet, str]]) -> Outlet:
    return make_outlet("south", name="Hearth South")[0]
