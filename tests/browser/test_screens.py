"""The three screens in Chromium against real processes: Daphne, an outlet agent, the notifier.

Each test starts its own processes on the test database. Pages are never
reloaded by the tests: every change must reach them over their sockets. The
screenshots in docs/screenshots/ (used by the README) are taken here.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from queueing.models import Order, Outlet
from queueing.ring import HashRing
from queueing.services import (
    order_claim_next,
    outlet_create,
    outlet_mark_down,
    outlet_retire,
    stations_release,
)
from queueing.services.outlets import outlet_activate
from shop.models import Membership
from shop.ordering import order_place, order_request_parse
from shop.payments import order_bump_paid
from tests.browser.conftest import SKIP_REASON, orm
from tests.processes import Process, free_port, manage, process_env, wait_for, web_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason=SKIP_REASON),
    pytest.mark.django_db(transaction=True),
]

# Short timings so a dead outlet is noticed in seconds. A kitchen screen
# heartbeats at the web process's interval.
FAST = {
    "HEARTH_HEARTBEAT_INTERVAL": "1",
    "HEARTH_HEARTBEAT_TIMEOUT": "4",
    "HEARTH_NOTIFIER_TICK": "0.5",
    "HEARTH_FLAP_GUARD": "3",  # must exceed the interval: several heartbeats, never one
}
LIVE = 20_000  # ms: how long a pushed change may take to show (generous for a shared 2-core box)
PASSWORDS = {
    "cook-north": "north-pw-123",
    "cook-south": "south-pw-123",
    "manager": "manager-pw-123",
}
DESKTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Shop:
    north: Outlet
    south: Outlet
    tokens: dict[str, str]


@pytest.fixture
def shop(transactional_db: None) -> Shop:
    call_command("loaddata", "sample_menu", verbosity=0)
    north, north_token = outlet_create(slug="north", name="Hearth North")
    south, south_token = outlet_create(slug="south", name="Hearth South")
    for outlet in (north, south):  # a manager vouches for them: they take orders at once
        outlet_activate(outlet=outlet)
        outlet.refresh_from_db()
    for slug, outlet in (("north", north), ("south", south)):
        cook = User.objects.create_user(f"cook-{slug}", password=PASSWORDS[f"cook-{slug}"])
        Membership.objects.create(user=cook, outlet=outlet)
    manager = User.objects.create_user("manager", password=PASSWORDS["manager"])
    manager.user_permissions.add(Permission.objects.get(codename="manager"))
    return Shop(north=north, south=south, tokens={"north": north_token, "south": south_token})


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def new_page(browser: Any, viewport: dict[str, int] = DESKTOP, **options: Any) -> Any:
    page = browser.new_context(viewport=viewport, **options).new_page()
    page.set_default_timeout(LIVE)
    return page


def sign_in(page: Any, base: str, username: str, then: str) -> None:
    """Through the real login page, which sends the user on to ``then``."""
    page.goto(f"{base}/accounts/login/?next={then}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def open_kitchen(browser: Any, base: str, slug: str) -> Any:
    page = new_page(browser)
    sign_in(page, base, f"cook-{slug}", f"/kitchen/{slug}/")
    expect(page.locator("#conn-banner")).to_be_hidden()  # connected, replayed, heartbeating
    mark_no_reload(page)
    return page


def mark_no_reload(page: Any) -> None:
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def order_through_form(
    page: Any,
    base: str,
    *,
    items: dict[str, tuple[int, str]],
    name: str,
    outlet: str = "",
    zone: str = "",
    address: str = "",
    screenshot: Callable[..., None] | None = None,
) -> str:
    """Fill in /order/ as a customer would and submit; returns the order's number from its page."""
    page.goto(f"{base}/order/")
    for slug, (qty, note) in items.items():
        page.fill(f"#id_qty_{slug}", str(qty))
        if note:
            page.fill(f"#id_note_{slug}", note)
    if zone:
        page.check("input[name=kind][value=delivery]")
        page.fill("#id_zone", zone)
        page.fill("#id_address", address)
    else:
        page.check("input[name=kind][value=takeaway]")
        page.select_option("#id_outlet", outlet)
    page.fill("#id_name", name)
    if screenshot:
        screenshot(page, "order-form", full_page=True)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/o/[\w-]+/$"))
    mark_no_reload(page)
    number: str = page.locator(".order-number span").inner_text()
    return number


def step_now(page: Any) -> Any:
    return page.locator(".step--now .label")


def place_directly(
    *,
    outlet: str = "",
    name: str,
    items: list[tuple[str, int, str]],
    zone: str = "",
    rush: bool = False,
) -> Order:
    """An order placed by another process's path (the API's service), not through this browser.

    Takeaway at ``outlet``, or delivery to ``zone`` when one is given.
    """
    payload: dict[str, Any] = {
        "kind": "delivery" if zone else "takeaway",
        "lines": [{"item": i, "qty": q, "note": n} for i, q, n in items],
        "customer": {"name": name, "address": "1 Analytical St"},
        "rush": rush,
    }
    payload.update({"zone": zone} if zone else {"outlet": outlet})
    with orm():
        return order_place(request=order_request_parse(payload))[0]


def handed_over_paid(*, outlet: Outlet, items: list[tuple[str, int, str]], method: str) -> Order:
    """A takeaway order at ``outlet``, made, handed over and paid (as its kitchen's bump does)."""
    order = place_directly(outlet=outlet.slug, name="Paid Customer", items=items)
    with orm():
        [ticket] = order_claim_next(outlet=outlet, station="counter")
        order_bump_paid(
            token=ticket.token,
            fence=ticket.fence,
            outlet=outlet,
            data={"paid": True, "method": method},
            by="cook",
        )
    return order


def boxes_outside(page: Any, container: str, parts: str) -> list[str]:
    """Parts (a selector) whose box is not wholly inside their container's box, or clipped."""
    problems: list[str] = page.evaluate(
        """([container, parts]) => {
            const problems = [];
            for (const box of document.querySelectorAll(container)) {
                const outer = box.getBoundingClientRect();
                for (const part of box.querySelectorAll(parts)) {
                    const r = part.getBoundingClientRect();
                    const inside = r.left >= outer.left - 0.5 && r.right <= outer.right + 0.5
                        && r.top >= outer.top - 0.5 && r.bottom <= outer.bottom + 0.5;
                    const whole = part.scrollWidth <= part.clientWidth + 1 || part.clientWidth === 0;
                    if (!inside || !whole) {
                        problems.push(`${part.className} "${part.textContent.trim()}" of `
                            + `${box.dataset.number || box.dataset.outlet || ""}: `
                            + `${Math.round(r.left)}..${Math.round(r.right)} in `
                            + `${Math.round(outer.left)}..${Math.round(outer.right)}`);
                    }
                }
            }
            return problems;
        }""",
        [container, parts],
    )
    return problems


def overlaps(page: Any, container: str, first: str, second: str) -> list[str]:
    """Containers in which an element of ``first`` overlaps one of ``second``."""
    found: list[str] = page.evaluate(
        """([container, first, second]) => {
            const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
            const found = [];
            for (const box of document.querySelectorAll(container)) {
                for (const a of box.querySelectorAll(first)) {
                    for (const b of box.querySelectorAll(second)) {
                        if (hit(a.getBoundingClientRect(), b.getBoundingClientRect())) {
                            found.push(`${a.textContent.trim()} / ${b.textContent.trim()}`);
                        }
                    }
                }
            }
            return found;
        }""",
        [container, first, second],
    )
    return found


def test_order__from_the_form_to_the_kitchen_to_done(
    tmp_path: Path, shop: Shop, browser: Any, screenshot: Callable[..., None]
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        kitchen = open_kitchen(browser, base, "south")
        place_directly(outlet="south", name="Grace", items=[("pepperoni", 1, ""), ("cola", 2, "")])
        place_directly(
            outlet="south", name="Linus", items=[("quattro-formaggi", 1, "extra crispy")]
        )
        expect(kitchen.locator(".ticket")).to_have_count(2)  # pushed, not reloaded

        customer = new_page(browser, {"width": 1100, "height": 900})
        number = order_through_form(
            customer,
            base,
            items={"margherita": (2, "no basil"), "garlic-bread": (1, "")},
            outlet="south",
            name="Ada",
            screenshot=screenshot,
        )
        expect(step_now(customer)).to_have_text("Received")
        expect(customer.locator("#order-outlet")).to_have_text("Hearth South")
        expect(customer.locator("#order-estimate")).to_be_visible()
        # Status, outlet and estimate: three equal cards on one row.
        cards = customer.evaluate(
            "[...document.querySelectorAll('.facts > div')].map(d => {"
            " const r = d.getBoundingClientRect(); return {y: r.top, width: r.width}; })"
        )
        assert len(cards) == 3 and len({round(c["y"]) for c in cards}) == 1, cards
        assert max(c["width"] for c in cards) - min(c["width"] for c in cards) < 2, cards

        ticket = kitchen.locator(f'.ticket[data-number="{number}"]')
        expect(ticket).to_contain_text("2× Margherita")
        expect(ticket).to_contain_text("no basil")
        expect(kitchen.locator(".allday")).to_contain_text("2 Margherita")

        ticket.locator("button[data-action=start]").click()
        expect(ticket).to_have_attribute("data-state", "preparing")
        expect(ticket).to_contain_text("COOKING · cook-south·")
        expect(step_now(customer)).to_have_text("In the kitchen")
        expect(customer.locator("#order-state")).to_have_text("Being made now")
        screenshot(kitchen, "kitchen")

        phone = new_page(browser, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        phone.goto(customer.url)
        expect(step_now(phone)).to_have_text("In the kitchen")
        screenshot(phone, "order", full_page=True)

        # The bump bar: the started ticket is selected; R ready, B bump, U recall.
        expect(ticket).to_have_class(re.compile(r"\bis-selected\b"))
        kitchen.keyboard.press("r")
        expect(ticket).to_have_attribute("data-state", "ready")
        expect(step_now(customer)).to_have_text("Ready for pickup")
        kitchen.keyboard.press("b")
        expect(ticket).to_have_count(0)
        expect(customer.locator("#order-state")).to_have_text("Done — enjoy!")
        expect(customer.locator(".step--done")).to_have_count(4)

        kitchen.keyboard.press("u")  # recall the last bumped ticket
        expect(ticket).to_have_attribute("data-state", "ready")
        expect(customer.locator("#order-state")).to_have_text("Ready for pickup")
        kitchen.keyboard.press("b")
        expect(ticket).to_have_count(0)
        expect(customer.locator("#order-state")).to_have_text("Done — enjoy!")
        assert_not_reloaded(kitchen)
        assert_not_reloaded(customer)


def north_zone() -> str:
    """A delivery zone the ring of north and south gives to north (the ring is deterministic)."""
    ring = HashRing({"north": 1, "south": 1})
    return next(z for z in (f"N{i}" for i in range(1, 100)) if ring.owner(z) == "north")


def test_dead_outlet__the_customer_is_told_it_moved_and_the_other_kitchen_shows_it(
    tmp_path: Path, shop: Shop, browser: Any, screenshot: Callable[..., None]
) -> None:
    handed_over_paid(outlet=shop.south, items=[("quattro-formaggi", 2, "")], method="cash")
    with web_server(tmp_path, **FAST) as (_, base):
        # North is a headless agent cooking slowly (a margherita takes 7 minutes);
        # south is only a kitchen screen, which heartbeats for it.
        agent = Process(
            manage(
                "outlet_agent",
                "--outlet",
                "north",
                "--server",
                base,
                "--pace",
                "1",
                "--stations",
                "1",
            ),
            env=process_env(HEARTH_OUTLET_TOKEN=shop.tokens["north"], **FAST),
            log_path=tmp_path / "agent-north.log",
        )
        notifier: Process | None = None
        try:
            kitchen = open_kitchen(browser, base, "south")

            def both_heartbeating() -> bool:
                with orm():
                    return Outlet.objects.filter(last_heartbeat_at__isnull=False).count() == 2

            wait_for(
                both_heartbeating,
                timeout=20,
                message="north's agent and south's screen heartbeating",
            )
            # Started only now, so that it never sees south before its screen opened.
            notifier = Process(
                manage("notifier"), env=process_env(**FAST), log_path=tmp_path / "notifier.log"
            )

            customer = new_page(browser, PHONE, is_mobile=True, has_touch=True)
            number = order_through_form(
                customer,
                base,
                items={"margherita": (1, "cut in 8")},
                zone=north_zone(),
                address="1 Analytical St",
                name="Ada",
            )
            expect(customer.locator("#order-outlet")).to_have_text("Hearth North")
            expect(step_now(customer)).to_have_text("In the kitchen")  # north's agent took it

            agent.signal(signal.SIGKILL)  # the outlet goes dark

            notice = customer.locator("#order-notice")
            expect(notice).to_contain_text("Your order moved to Hearth South", timeout=40_000)
            expect(notice).to_contain_text("Hearth North could not make it")
            expect(customer.locator("#order-outlet")).to_have_text("Hearth South")
            expect(step_now(customer)).to_have_text("Received")
            expect(customer.locator("#order-estimate")).to_be_visible()  # the new estimate

            ticket = kitchen.locator(f'.ticket[data-number="{number}"]')
            expect(ticket).to_contain_text("moved here from Hearth North")
            expect(ticket).to_contain_text("cut in 8")
            assert_not_reloaded(kitchen)
            assert_not_reloaded(customer)

            ops = new_page(browser, {"width": 1280, "height": 900})
            sign_in(ops, base, "manager", "/ops/")
            expect(ops.locator("#live-pill")).to_have_text("live")
            expect(ops.locator('tr[data-outlet="north"] .badge')).to_have_text("down")
            expect(ops.locator(".events")).to_contain_text(
                f"Order {number} moved from Hearth North to Hearth South"
            )
            screenshot(ops, "ops", full_page=True)
        finally:
            if notifier is not None:
                notifier.stop()
            agent.stop()


def test_web_restart__the_banner_shows_and_clears_and_the_screens_catch_up(
    tmp_path: Path, shop: Shop, browser: Any
) -> None:
    port = free_port()
    with web_server(tmp_path, port=port, **FAST) as (_, base):
        kitchen = open_kitchen(browser, base, "south")
        customer = new_page(browser, PHONE, is_mobile=True)
        number = order_through_form(
            customer, base, items={"pepperoni": (1, "")}, outlet="south", name="Ada"
        )
        expect(kitchen.locator(f'.ticket[data-number="{number}"]')).to_have_attribute(
            "data-state", "queued"
        )
        expect(step_now(customer)).to_have_text("Received")

    # The web process is gone: the kitchen must say so, loudly.
    banner = kitchen.locator("#conn-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("CONNECTION LOST")
    expect(kitchen.locator("body")).to_have_class(re.compile(r"\bis-offline\b"))
    expect(customer.locator("#conn-banner")).to_be_visible()

    # Meanwhile the queue moves on without any web process.
    later = place_directly(outlet="south", name="Grace", items=[("marinara", 1, "no garlic")])
    with orm():
        claimed = order_claim_next(outlet=shop.south, station="oven-2")
    assert [t.number for t in claimed] == [int(number)]

    with web_server(tmp_path, port=port, **FAST):
        expect(banner).to_be_hidden(timeout=40_000)
        expect(kitchen.locator(f'.ticket[data-number="{later.pk}"]')).to_contain_text("no garlic")
        first = kitchen.locator(f'.ticket[data-number="{number}"]')
        expect(first).to_have_attribute("data-state", "preparing")
        expect(first).to_contain_text("COOKING · oven-2")
        expect(customer.locator("#conn-banner")).to_be_hidden(timeout=40_000)
        expect(step_now(customer)).to_have_text("In the kitchen")
        assert_not_reloaded(kitchen)
        assert_not_reloaded(customer)


# Kitchen screens seen in the wild: a small laptop, a laptop, a bigger one, a wall TV, a phone.
KITCHEN_WIDTHS = (1024, 1280, 1366, 1920, 390)


def test_kitchen__every_timer_and_rush_badge_shows_whole_at_common_widths(
    tmp_path: Path, shop: Shop, browser: Any, screenshot: Callable[..., None]
) -> None:
    with orm(), connection.cursor() as cursor:  # five-digit numbers, as a busy chain has
        cursor.execute("SELECT setval(pg_get_serial_sequence('queueing_order', 'id'), 99990)")
        outlet_mark_down(outlet=shop.north)  # every delivery order goes to south
    long_note = "well done please, and cut into squares"
    placed = [
        place_directly(
            zone="S2",
            name="Rush Customer",
            items=[("quattro-formaggi", 12, long_note)],
            rush=True,
        ),
        place_directly(
            outlet="south", name="Rush Takeaway", items=[("garlic-bread", 3, "")], rush=True
        ),
        place_directly(outlet="south", name="Linus", items=[("marinara", 2, "no basil")]),
        place_directly(zone="S1", name="Ada", items=[("margherita", 1, "")]),
    ]
    with orm():  # the first two have waited over an hour: the widest timer, "65:00"
        Order.objects.filter(pk__in=[o.pk for o in placed[:2]]).update(
            created_at=timezone.now() - timedelta(minutes=65)
        )
    with web_server(tmp_path, **FAST) as (_, base):
        kitchen = open_kitchen(browser, base, "south")
        expect(kitchen.locator(".ticket")).to_have_count(4)
        expect(kitchen.locator(".ticket-rush")).to_have_count(2)
        expect(kitchen.locator(".ticket-age").first).to_have_text(re.compile(r"^6\d:\d\d$"))
        for width in KITCHEN_WIDTHS:
            kitchen.set_viewport_size({"width": width, "height": 900 if width > 500 else 844})
            parts = ".ticket-age, .ticket-rush, .ticket-kind, .ticket-num"
            assert boxes_outside(kitchen, ".ticket", parts) == [], width
            assert overlaps(kitchen, ".ticket", ".ticket-age", ".ticket-id > *") == [], width
            if width == 1920:
                screenshot(kitchen, "kitchen-wide")
            if width == 1280:
                screenshot(kitchen, "kitchen-1280")
        assert_not_reloaded(kitchen)


def test_ops__a_rows_actions_share_one_line_and_retired_outlets_stay_folded(
    tmp_path: Path, shop: Shop, browser: Any
) -> None:
    with orm():
        outlet_activate(outlet=outlet_create(slug="centre", name="Hearth Centre", weight=2)[0])
        old, _ = outlet_create(slug="old", name="Hearth Old Town")
        outlet_mark_down(outlet=old)
        outlet_retire(outlet=old)
        outlet_mark_down(outlet=shop.north)  # a down outlet has Retire and Reactivate
    with web_server(tmp_path, **FAST) as (_, base):
        ops = new_page(browser, {"width": 1280, "height": 900})
        sign_in(ops, base, "manager", "/ops/")
        expect(ops.locator("#live-pill")).to_have_text("live")
        expect(ops.locator('.health tr[data-outlet="old"]')).to_have_count(0)
        rows = ops.locator(".health tbody tr")
        expect(rows).to_have_count(3)
        # Read in one go: the overview is replaced every few seconds.
        lines, fits = ops.evaluate(
            """() => [
                [...document.querySelectorAll('.health tbody tr')].map(row =>
                    new Set([...row.querySelectorAll('.actions a')]
                        .map(a => Math.round(a.getBoundingClientRect().top))).size),
                (w => w.scrollWidth <= w.clientWidth)(document.querySelector('.table-wrap')),
            ]"""
        )
        assert lines == [1, 1, 1], "lines of action buttons per row"
        assert fits, "the outlets table is wider than its card"

        retired = ops.locator("#retired-outlets")
        expect(retired).not_to_have_attribute("open", "")
        retired.locator("summary").click()
        expect(retired).to_contain_text("Hearth Old Town")
        # The overview is fetched again every few seconds; the fold stays open.
        ops.evaluate("document.querySelector('.ops-snapshot').dataset.old = 'yes'")
        expect(ops.locator(".ops-snapshot[data-old]")).to_have_count(0)
        expect(ops.locator("#retired-outlets")).to_have_attribute("open", "")

        # A search, then a state: each keeps to its outlets while the overview refreshes.
        ops.fill("#ops-q", "centre")
        ops.locator(".ops-filter button").click()
        expect(ops).to_have_url(re.compile(r"/ops/\?q=centre"))
        expect(ops.locator("#live-pill")).to_have_text("live")
        expect(rows).to_have_count(1)
        expect(ops.locator('.health tr[data-outlet="centre"]')).to_have_count(1)
        ops.evaluate("document.querySelector('.ops-snapshot').dataset.old = 'yes'")
        expect(ops.locator(".ops-snapshot[data-old]")).to_have_count(0)
        expect(rows).to_have_count(1)
        ops.fill("#ops-q", "")
        ops.select_option("#ops-state", "down")
        ops.locator(".ops-filter button").click()
        expect(ops.locator(".health tbody tr[data-outlet]")).to_have_count(1)
        expect(ops.locator('.health tr[data-outlet="north"]')).to_have_count(1)


# Everything on a phone that must be reachable without scrolling sideways, and where it ends.
OVERFLOW = """sel => {
    const width = document.documentElement.clientWidth;
    const out = [...document.querySelectorAll(sel)]
        .filter(el => el.getClientRects().length)
        .map(el => [el.textContent.trim().slice(0, 30), el.getBoundingClientRect()])
        .filter(([, r]) => r.left < 0 || r.right > width + 0.5)
        .map(([text, r]) => `${text}: ${Math.round(r.left)}..${Math.round(r.right)}`);
    return [document.documentElement.scrollWidth - width, out];
}"""


def test_ops__on_a_phone_every_action_and_count_fits_and_so_do_the_api_docs(
    tmp_path: Path, shop: Shop, browser: Any, screenshot: Callable[..., None]
) -> None:
    handed_over_paid(
        outlet=shop.south, items=[("pepperoni", 50, ""), ("cola", 50, "")], method="card"
    )
    with orm():
        outlet_mark_down(outlet=shop.north)  # a down outlet has Retire and Reactivate
    place_directly(outlet="south", name="Ada", items=[("margherita", 2, "")])
    with web_server(tmp_path, **FAST) as (_, base):
        phone = new_page(browser, PHONE, is_mobile=True, has_touch=True)
        sign_in(phone, base, "manager", "/ops/")
        expect(phone.locator("#live-pill")).to_have_text("live")
        expect(phone.locator('.health tr[data-outlet="north"] .actions a')).to_have_count(2)
        expect(phone.locator('.health tr[data-outlet="south"] .takings')).to_contain_text(
            "today £600.00"
        )
        expect(phone.locator(".health .chain-row .takings")).to_contain_text("today £600.00")
        wider, outside = phone.evaluate(
            OVERFLOW,
            ".ops-head a, .health .actions a, .health td, .health th, .spark, .takings span",
        )
        assert outside == [], "outside a 390 px screen"
        assert wider <= 0, f"the ops page is {wider} px wider than the phone"
        screenshot(phone, "ops-phone", full_page=True)

        phone.goto(f"{base}/api/docs/")
        wider, outside = phone.evaluate(OVERFLOW, "h1, h2, .op")
        assert wider <= 0, f"the API docs are {wider} px wider than the phone"
        assert outside == []


def test_ops__a_lost_session_shows_a_banner_with_a_sign_in_link_never_the_login_page(
    tmp_path: Path, shop: Shop, browser: Any
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        ops = new_page(browser, {"width": 1280, "height": 900})
        sign_in(ops, base, "manager", "/ops/")
        expect(ops.locator("#live-pill")).to_have_text("live")
        mark_no_reload(ops)
        ops.context.clear_cookies()  # the session ends (signed out elsewhere, or expired)
        banner = ops.locator("#conn-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Signed out")
        expect(banner.locator("a")).to_have_attribute("href", "/accounts/login/?next=%2Fops%2F")
        expect(ops.locator("#live-pill")).to_have_text("signed out")
        expect(ops.locator("#ops-live #id_username")).to_have_count(0)  # no login form inside
        expect(ops.locator("#ops-live .health")).to_have_count(1)  # the last figures stay
        assert_not_reloaded(ops)
        banner.locator("a").click()
        ops.fill("#id_username", "manager")
        ops.fill("#id_password", PASSWORDS["manager"])
        ops.click("button[type=submit]")
        ops.wait_for_url(f"{base}/ops/")
        expect(ops.locator("#live-pill")).to_have_text("live")
        expect(ops.locator("#conn-banner")).to_be_hidden()


def test_customer__every_form_error_at_once_and_a_cancelled_order_says_what_to_do(
    tmp_path: Path, shop: Shop, browser: Any, screenshot: Callable[..., None]
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        customer = new_page(browser, {"width": 1280, "height": 900})
        customer.goto(f"{base}/order/")
        qty_width = customer.locator("td.qty").first.bounding_box()["width"]
        customer.fill("#id_qty_margherita", "51")
        customer.check("input[name=kind][value=delivery]")
        customer.click("button[type=submit]")
        errors = customer.locator(".field-error")
        expect(errors).to_have_count(4)  # quantity, zone, name, address: all at once
        expect(customer.locator(".menu-error")).to_contain_text("Margherita: Enter a number from 0")
        assert customer.locator("td.qty").first.bounding_box()["width"] == qty_width
        expect(customer.locator("#id_qty_margherita")).to_be_focused()
        screenshot(customer, "order-form-errors", full_page=True)

        order_through_form(
            customer, base, items={"pepperoni": (1, "")}, outlet="north", name="Grace"
        )
        expect(step_now(customer)).to_have_text("Received")
        with orm():
            outlet_mark_down(outlet=shop.north)  # a planned outage: takeaway orders are cancelled
        notice = customer.locator("#order-notice")
        expect(notice).to_contain_text("Hearth North has closed for now")
        expect(notice).not_to_contain_text("unexpectedly")  # the manager planned it
        expect(notice.locator("a")).to_have_attribute("href", "/order/")
        expect(customer.locator(".stepper")).to_have_count(0)
        expect(customer.locator("#order-outlet")).to_have_count(0)
        assert_not_reloaded(customer)
        screenshot(customer, "order-cancelled")


def test_kitchen__a_ticket_taken_from_the_screen_says_where_it_went_and_why(
    tmp_path: Path, shop: Shop, browser: Any
) -> None:
    with web_server(tmp_path, **FAST) as (_, base):
        kitchen = open_kitchen(browser, base, "north")
        station = kitchen.locator("#station-name").inner_text()
        mine = place_directly(outlet="north", name="Grace", items=[("pepperoni", 1, "")])
        moving = place_directly(zone=north_zone(), name="Ada", items=[("margherita", 1, "")])
        for order in (mine, moving):
            ticket = kitchen.locator(f'.ticket[data-number="{order.pk}"]')
            ticket.locator("button[data-action=start]").click()
            expect(ticket).to_have_attribute("data-state", "preparing")
        notes = kitchen.locator("#taken-notes")

        # Its station restarted elsewhere (as an agent's does): handed back to the queue.
        with orm():
            stations_release(outlet=shop.north, stations=[station], reason="its station restarted")
        expect(notes).to_contain_text(
            f"Order {mine.pk} was taken from this station: its station restarted; "
            "it waits to be made again."
        )
        # A manager takes the outlet down: the delivery goes to south.
        with orm():
            outlet_mark_down(outlet=shop.north)
        expect(notes).to_contain_text(f"Order {moving.pk} was moved to south")
        expect(kitchen.locator(f'.ticket[data-number="{moving.pk}"]')).to_have_count(0)
        assert_not_reloaded(kitchen)
