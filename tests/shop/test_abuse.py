"""Abuse from the internet: cross-site posts, rush for all, unlimited orders and password guesses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from queueing.models import Order, Outlet
from shop.models import Membership
from tests.shop.test_api_agents import MakeOutlet

pytestmark = pytest.mark.django_db

ORDER = {"kind": "takeaway", "outlet": "north", "lines": [{"item": "margherita"}],
         "customer": {"name": "Ann"}}  # fmt: skip


@pytest.fixture
def north(menu: None, make_outlet: MakeOutlet) -> tuple[Outlet, str]:
    return make_outlet("north")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_place__only_application_json_else_415(
    client: Client, north: Any, content_type: str
) -> None:
    answer = client.generic("POST", "/api/orders", json.dumps(ORDER), content_type=content_type)
    assert answer.status_code == 415
    assert answer.reason_phrase == "Unsupported Media Type"
    assert answer.json()["error"] == "unsupported_media_type"
    assert not Order.objects.exists()


def test_place__rush_from_an_anonymous_customer_is_403(client: Client, north: Any) -> None:
    answer = client.post("/api/orders", {**ORDER, "rush": True}, content_type="application/json")
    assert answer.status_code == 403
    assert answer.json()["field"] == "rush"
    assert not Order.objects.exists()


def test_place__rush_from_staff_or_an_agent_token_is_taken(client: Client, north: Any) -> None:
    _, token = north
    answer = client.post(
        "/api/orders",
        {**ORDER, "rush": True},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 202 and answer.json()["rush"] is True
    cook = User.objects.create_user("cook")
    Membership.objects.create(user=cook, outlet=north[0])
    client.force_login(cook)
    answer = client.post("/api/orders", {**ORDER, "rush": True}, content_type="application/json")
    assert answer.status_code == 202 and answer.json()["rush"] is True


def test_place__over_the_rate_limit_is_429_with_retry_after(
    client: Client, north: Any, settings: Any
) -> None:
    settings.HEARTH_ORDER_RATE_LIMIT = 3
    settings.HEARTH_ORDER_RATE_WINDOW = 600
    for _ in range(3):
        assert client.post("/api/orders", ORDER, content_type="application/json").status_code == 202
    answer = client.post("/api/orders", ORDER, content_type="application/json")
    assert answer.status_code == 429
    assert answer.reason_phrase == "Too Many Requests"
    assert answer.json()["error"] == "rate_limited"
    assert 0 < int(answer["Retry-After"]) <= 600
    assert Order.objects.count() == 3
    # another client is counted on its own
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert other.post("/api/orders", ORDER, content_type="application/json").status_code == 202


def test_order_form__over_the_rate_limit_is_429_with_retry_after(
    client: Client, north: Any, settings: Any
) -> None:
    settings.HEARTH_ORDER_RATE_LIMIT = 1
    form = {"kind": "takeaway", "outlet": "north", "name": "Ann", "qty_margherita": "1"}
    assert client.post("/order/", {**form, "form_id": "a" * 16}).status_code == 302
    answer = client.post("/order/", {**form, "form_id": "b" * 16})
    assert answer.status_code == 429 and int(answer["Retry-After"]) > 0
    assert "Too many orders" in answer.content.decode()


def test_login__after_5_wrong_passwords_429_with_retry_after_even_with_the_right_one() -> None:
    User.objects.create_user("cook", password="right-password-1")
    client = Client()
    for _ in range(5):
        answer = client.post("/accounts/login/", {"username": "cook", "password": "wrong"})
        assert answer.status_code in (200, 429)
    answer = client.post("/accounts/login/", {"username": "cook", "password": "right-password-1"})
    assert answer.status_code == 429
    assert int(answer["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_login__a_right_password_before_the_limit_signs_in() -> None:
    User.objects.create_user("cook", password="right-password-1")
    client = Client()
    client.post("/accounts/login/", {"username": "cook", "password": "wrong"})
    answer = client.post("/accounts/login/", {"username": "cook", "password": "right-password-1"})
    assert answer.status_code == 302


@pytest.mark.parametrize("path", ["/api/nowhere", "/api/orders/a/b/c", "/api/outlets/x/y"])
def test_api__unknown_paths_are_json_404(client: Client, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"


def test_pages__have_a_content_security_policy_without_inline_scripts(
    client: Client, north: Any
) -> None:
    for path in ("/", "/order/", "/api/docs/", "/accounts/login/"):
        answer = client.get(path)
        policy = answer["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        html = answer.content.decode()
        assert "<script>" not in html and "<style>" not in html and " style=" not in html, path
