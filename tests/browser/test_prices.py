"""The order form's live total, in Chromium under the site's CSP (no inline script)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import SKIP_REASON

# `shop` is the screens' fixture (menu, outlets, staff), shared rather than copied.
from tests.browser.test_screens import FAST, PHONE, expect, new_page, shop  # noqa: F401
from tests.processes import web_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason=SKIP_REASON),
    pytest.mark.django_db(transaction=True),
]


@pytest.mark.usefixtures("shop")
def test_order_form__total_follows_the_quantities_and_the_order_page_says_what_is_owed(
    tmp_path: Path, browser: Any
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        page = new_page(browser, PHONE)
        blocked: list[str] = []
        page.on(
            "console",
            lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{base}/order/")
        total = page.locator("#order-total")
        expect(total).to_be_visible()
        expect(total).to_have_text("£0.00")
        page.fill("#id_qty_margherita", "2")  # 8.50 each
        expect(total).to_have_text("£17.00")
        page.fill("#id_qty_water", "3")  # 1.50 each: 4.50, no float drift
        expect(total).to_have_text("£21.50")
        page.fill("#id_qty_margherita", "")
        expect(total).to_have_text("£4.50")

        page.check("input[name=kind][value=takeaway]")
        page.select_option("#id_outlet", "north")
        page.fill("#id_name", "Grace")
        page.click("button[type=submit]")
        page.wait_for_url("**/o/*/")
        expect(page.locator("#order-paid")).to_have_text("To pay: £4.50 (at the counter)")
        assert blocked == []
