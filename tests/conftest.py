"""Shared fixtures: a real PostgreSQL (DATABASE_URL, or the embedded one), the menu, outlets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.management import call_command

from queueing.models import Outlet
from queueing.services import outlet_create
from queueing.services.outlets import outlet_activate


@pytest.fixture
def menu(db: None) -> None:
    call_command("loaddata", "sample_menu", verbosity=0)


@pytest.fixture
def make_outlet(db: None) -> Callable[..., tuple[Outlet, str]]:
    """Create an outlet; returns (outlet, agent token).

    A new outlet is down until its first heartbeats; ``active=True`` (the default)
    has a manager vouch for it at once, as most tests want an outlet taking orders.
    """

    def make(
        slug: str, *, weight: int = 1, name: str = "", active: bool = True
    ) -> tuple[Outlet, str]:
        outlet, token = outlet_create(slug=slug, name=name or slug.title(), weight=weight)
        if active:
            outlet_activate(outlet=outlet)
            outlet.refresh_from_db()
        return outlet, token

    return make
