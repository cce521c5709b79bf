"""Shared fixtures: a real PostgreSQL (DATABASE_URL, or the embedded one), the menu, outlets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command

from queueing.models import Outlet
from queueing.services import outlet_create


@pytest.fixture
def menu(db: None) -> None:
    call_command("loaddata", "sample_menu", verbosity=0)


@pytest.fixture
def make_outlet(db: None) -> Callable[..., tuple[Outlet, str]]:
    """Create an outlet; returns (outlet, agent token)."""

    def make(slug: str, *, weight: int = 1, name: str = "") -> tuple[Outlet, str]:
        return outlet_create(slug=slug, name=name or slug.title(), weight=weight)

    return make


@pytest.fixture(autouse=True)
def no_order_rate_limit(settings: Any) -> None:
    """One test client places many orders; tests/shop/test_abuse.py turns the limit back on."""
    settings.HEARTH_ORDER_RATE_LIMIT = 0
