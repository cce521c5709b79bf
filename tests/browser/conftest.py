"""Playwright driving Debian's Chromium against real Hearth processes.

Playwright's sync API keeps an asyncio loop running in the test's thread, and
Django refuses ORM calls from a thread with a running loop. The ORM work of a
browser test is plain synchronous work between two browser calls, so ``orm()``
allows it for the few lines that need it, and the browser is started after the
database fixtures and stopped before they flush. While the loop runs, Django's
connection handler (context-local) hands out a connection of its own, which
``orm()`` closes again so no session outlives the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = shutil.which("chromium")
SKIP_REASON = "install Debian's chromium (apt-get install chromium) to run the browser tests"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@contextmanager
def orm() -> Iterator[None]:
    """Allow Django ORM calls while Playwright's loop is running in this thread (see module doc)."""
    key = "DJANGO_ALLOW_ASYNC_UNSAFE"
    before = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        connections.close_all()
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


@pytest.fixture
def browser(transactional_db: None) -> Iterator[object]:
    """A Chromium for one test (after the database fixtures, so it stops before they flush)."""
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshot() -> Callable[..., None]:
    """Save a page's screenshot to docs/screenshots/<name>.png (used by the README)."""

    def save(page: object, name: str, *, full_page: bool = False) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)  # type: ignore[attr-defined]

    return save
