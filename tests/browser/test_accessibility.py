"""axe-core (WCAG 2 A and AA) finds nothing on any screen, in Chromium, with live data on it."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.browser.conftest import SKIP_REASON
from tests.browser.test_screens import (  # noqa: F401 (shop is a fixture)
    DESKTOP,
    PHONE,
    Shop,
    expect,
    new_page,
    place_directly,
    shop,
    sign_in,
)
from tests.processes import web_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason=SKIP_REASON),
    pytest.mark.django_db(transaction=True),
]

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def violations(page: Any) -> list[str]:
    """axe-core's findings on the page as it is now, one line each (empty when none)."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page, options=WCAG).response["violations"]
    return [
        f"{v['impact']} {v['id']}: {v['help']} at "
        + ", ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in found
    ]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_axe__every_screen_has_no_wcag_a_or_aa_violation(
    shop: Shop,  # noqa: F811 (the fixture imported above; before browser, see conftest)
    browser: Any,
    tmp_path: Any,
    viewport: dict[str, int],
) -> None:
    order = place_directly(outlet="north", name="Ada", items=[("margherita", 1, "no basil")])
    place_directly(zone="N1", name="Grace", items=[("cola", 2, "")], rush=True)
    found: dict[str, list[str]] = {}
    with web_server(tmp_path) as (_, base):
        customer = new_page(browser, viewport)
        for path in ("/", "/order/", f"/o/{order.token}/", "/api/docs/", "/accounts/login/"):
            customer.goto(f"{base}{path}")
            found[path] = violations(customer)

        cook = new_page(browser, viewport)
        sign_in(cook, base, "cook-north", "/kitchen/north/")
        expect(cook.locator("#conn-banner")).to_be_hidden()
        expect(cook.locator(".ticket").first).to_be_visible()
        found["/kitchen/north/"] = violations(cook)

        manager = new_page(browser, viewport)
        sign_in(manager, base, "manager", "/ops/")
        expect(manager.locator("[data-outlet=north]").first).to_be_visible()
        found["/ops/"] = violations(manager)

    assert {path: v for path, v in found.items() if v} == {}
