"""The demo: a menu, three outlets with staff and a manager, and a trickle of orders over the API."""

from __future__ import annotations

import logging
import random
import secrets
import threading

import httpx
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction

from queueing.models import Outlet, OutletState
from queueing.services import outlet_create, outlet_rotate_token
from shop.access import managers_group_ensure
from shop.models import Membership, MenuItem

log = logging.getLogger("hearth.demo")

DEMO_OUTLETS = (
    ("north", "Hearth North", 1),
    ("centre", "Hearth Centre", 2),
    ("south", "Hearth South", 1),
)
DEMO_ZONES = ("N1", "N2", "E1", "E2", "C1", "C2", "S1", "S2", "W1", "W2")


def demo_seed() -> tuple[dict[str, str], dict[str, str]]:
    """Menu, outlets and users; returns (agent token per outlet, password per user). Tokens and passwords are new each run."""
    call_command("loaddata", "sample_menu", verbosity=0)
    tokens: dict[str, str] = {}
    passwords: dict[str, str] = {}
    with transaction.atomic():
        for slug, name, weight in DEMO_OUTLETS:
            outlet = Outlet.objects.filter(slug=slug).first()
            if outlet is None:
                outlet, tokens[slug] = outlet_create(slug=slug, name=name, weight=weight)
            else:
                if outlet.state != OutletState.RETIRED:
                    tokens[slug] = outlet_rotate_token(outlet=outlet)
        manager, _ = User.objects.get_or_create(username="manager", defaults={"is_staff": True})
        manager.groups.add(managers_group_ensure())
        passwords["manager"] = secrets.token_urlsafe(9)
        manager.set_password(passwords["manager"])
        manager.save()
        for slug, _, _ in DEMO_OUTLETS:
            cook, _ = User.objects.get_or_create(username=f"cook-{slug}")
            passwords[cook.username] = secrets.token_urlsafe(9)
            cook.set_password(passwords[cook.username])
            cook.save()
            Membership.objects.get_or_create(user=cook, outlet=Outlet.objects.get(slug=slug))
    return tokens, passwords


class OrderTrickle(threading.Thread):
    """Places a random order through the public API every ``interval`` seconds, as customers would."""

    def __init__(self, *, server: str, interval: float = 3.0) -> None:
        super().__init__(name="demo-orders", daemon=True)
        self.server = server.rstrip("/")
        self.interval = interval
        self.stopped = threading.Event()
        self.items = list(MenuItem.objects.filter(available=True).values_list("slug", flat=True))
        self.outlets = [slug for slug, _, _ in DEMO_OUTLETS]

    def order(self, rng: random.Random) -> dict[str, object]:
        lines = [
            {
                "item": item,
                "qty": rng.randint(1, 3),
                "note": rng.choice(["", "", "extra crispy", "no basil"]),
            }
            for item in rng.sample(self.items, rng.randint(1, 3))
        ]
        customer = {"name": rng.choice(["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret"])}
        if rng.random() < 0.6:
            return {
                "kind": "delivery",
                "zone": rng.choice(DEMO_ZONES),
                "lines": lines,
                "customer": {**customer, "address": f"{rng.randint(1, 99)} Demo Street"},
            }
        return {
            "kind": "takeaway",
            "outlet": rng.choice(self.outlets),
            "lines": lines,
            "customer": customer,
        }

    def run(self) -> None:
        rng = random.Random()
        with httpx.Client(base_url=self.server, timeout=10) as client:
            while not self.stopped.wait(self.interval * rng.uniform(0.5, 1.5)):
                try:
                    answer = client.post("/api/orders", json=self.order(rng))
                    if answer.status_code == 202:
                        log.info("demo customer placed %s", answer.json()["message"])
                except httpx.HTTPError:
                    pass  # the web server is starting or restarting

    def stop(self) -> None:
        self.stopped.set()
