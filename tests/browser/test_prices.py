"""The order form's live total, in Chromium under the site's CSP (no inline script)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from shop.models import Payment
from tests.browser.conftest import SKIP_REASON, orm
from tests.browser.test_accessibility import violations

# `shop` is the screens' fixture (menu, outlets, staff), shared rather than copied.
from tests.browser.test_screens import (  # noqa: F401
    FAST,
    PHONE,
    Shop,
    assert_not_reloaded,
    expect,
    handed_over_paid,
    mark_no_reload,
    new_page,
    open_kitchen,
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


@pytest.mark.usefixtures("shop")
def test_kitchen__paid_bump_records_the_payment_and_the_customer_sees_it(
    tmp_path: Path, browser: Any
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        kitchen = open_kitchen(browser, base, "north")
        order = place_directly(outlet="north", name="Grace", items=[("pepperoni", 1, "")])
        customer = new_page(browser, PHONE)
        customer.goto(f"{base}/o/{order.token}/")
        expect(customer.locator("#order-paid")).to_have_text("To pay: £10.00 (at the counter)")
        ticket = kitchen.locator(f'.ticket[data-number="{order.pk}"]')
        expect(ticket).to_contain_text("£10.00")
        ticket.locator("button[data-action=start]").click()
        ticket.locator("button[data-action=ready]").click()
        expect(ticket).to_have_attribute("data-state", "ready")
        assert violations(kitchen) == []  # the paid buttons are named within their group
        assert violations(customer) == []
        ticket.locator("button[data-paid=card]").click()
        expect(ticket).to_have_count(0)

        expect(customer.locator("#order-paid")).to_contain_text("Paid at the counter (card")
        with orm():
            payment = Payment.objects.get(order_id=order.pk)
        assert (str(payment.amount), payment.method) == ("10.00", "card")


def test_ops__takings_per_outlet_and_the_chains_follow_a_paid_bump_live(
    tmp_path: Path,
    shop: Shop,  # noqa: F811 - before the browser, whose loop forbids the fixture's ORM calls
    browser: Any,
) -> None:
    handed_over_paid(outlet=shop.south, items=[("margherita", 2, "")], method="cash")  # 17.00
    with web_server(tmp_path, **FAST) as (_, base):
        ops = new_page(browser, {"width": 1280, "height": 900})
        sign_in(ops, base, "manager", "/ops/")
        expect(ops.locator("#live-pill")).to_have_text("live")
        mark_no_reload(ops)
        north = ops.locator('.health tr[data-outlet="north"] .takings')
        south = ops.locator('.health tr[data-outlet="south"] .takings')
        chain = ops.locator(".health .chain-row .takings")
        expect(north).to_have_text("taken last hour £0.00 today £0.00")
        expect(south).to_have_text("taken last hour £17.00 today £17.00")
        expect(chain).to_have_text("taken last hour £17.00 today £17.00")

        kitchen = open_kitchen(browser, base, "north")
        order = place_directly(outlet="north", name="Grace", items=[("pepperoni", 1, "")])
        ticket = kitchen.locator(f'.ticket[data-number="{order.pk}"]')
        ticket.locator("button[data-action=start]").click()
        ticket.locator("button[data-action=ready]").click()
        expect(ticket).to_have_attribute("data-state", "ready")
        ticket.locator("button[data-paid=cash]").click()
        expect(ticket).to_have_count(0)

        expect(north).to_have_text("taken last hour £10.00 today £10.00")
        expect(chain).to_have_text("taken last hour £27.00 today £27.00")
        expect(south).to_have_text("taken last hour £17.00 today £17.00")
        assert_not_reloaded(ops)
