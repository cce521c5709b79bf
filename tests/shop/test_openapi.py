"""The OpenAPI description: valid 3.1, complete for every API route, true to the real answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from queueing.models import Outlet
from shop.api import openapi
from shop.api.openapi import OPENAPI

pytestmark = pytest.mark.django_db


def api_routes() -> set[str]:
    """Every route under /api/ as an OpenAPI path (``<str:token>`` → ``{token}``)."""
    routes: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                routes.add("/" + prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r) for r in routes if r.startswith("/api/")}


def conforms(instance: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": OPENAPI["components"]}
    OAS31Validator(schema).validate(instance)


def test_openapi__is_valid_openapi_3_1() -> None:
    validate(OPENAPI)
    assert OPENAPI["openapi"].startswith("3.1")


def test_openapi__describes_every_api_route_and_nothing_else() -> None:
    assert set(OPENAPI["paths"]) == api_routes()


def test_openapi__every_operation_lists_its_errors() -> None:
    for path, methods in OPENAPI["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            assert "405" in codes, (method, path)
            if method == "post":
                assert {"400", "413"} <= codes, (method, path)
            if op.get("security"):
                assert {"401", "403"} <= codes, (method, path)
            if "{token}" in path:
                assert "404" in codes, (method, path)
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)


def test_openapi_json__served_as_json(client: Client) -> None:
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads(json.dumps(OPENAPI))


def test_real_answers__match_their_schemas(
    client: Client, menu: None, make_outlet: Callable[..., tuple[Outlet, str]]
) -> None:
    _, token = make_outlet("north")
    auth = {"Authorization": f"Bearer {token}"}

    def post(path: str, body: Any, **headers: str) -> Any:
        return client.post(path, json.dumps(body), content_type="application/json", headers=headers)

    placed = post(
        "/api/orders",
        {
            "kind": "takeaway",
            "outlet": "north",
            "lines": [{"item": "cola"}],
            "customer": {"name": "A"},
        },
    )
    conforms(placed.json(), "PlacedOrder")
    order_token = placed.json()["token"]
    conforms(post("/api/outlets/north/heartbeat", {"seq": 1}, **auth).json(), "Heartbeat")
    claim = post("/api/outlets/north/claim", {}, **auth).json()
    conforms(claim, "Claim")
    fence = {"fence": claim["fence"]}
    conforms(post(f"/api/orders/{order_token}/renew", fence, **auth).json(), "Renewed")
    conforms(post(f"/api/orders/{order_token}/ready", fence, **auth).json(), "Acknowledged")
    conforms(post(f"/api/orders/{order_token}/complete", fence, **auth).json(), "Acknowledged")
    conforms(client.get(f"/api/orders/{order_token}").json(), "OrderWithTimeline")
    batch = post(
        "/api/outlets/north/complete", {"claims": [{"token": order_token, **fence}]}, **auth
    )
    conforms(batch.json(), "CompleteBatch")
    post(
        "/api/orders",
        {
            "kind": "takeaway",
            "outlet": "north",
            "lines": [{"item": "cola"}],
            "customer": {"name": "A"},
        },
    )
    conforms(post("/api/outlets/north/claim", {"limit": 5}, **auth).json(), "ClaimBatch")
    for refusal in (
        post("/api/orders", {"kind": "takeaway"}),
        post(f"/api/orders/{order_token}/complete", {"fence": claim["fence"] - 1}, **auth),
        client.get("/api/orders/nope"),
        client.delete("/api/orders"),
        post("/api/outlets/north/claim", {}),
    ):
        assert refusal.status_code >= 400
        conforms(refusal.json(), "Error")


def test_docs_page__lists_every_operation_with_its_answers(client: Client) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for path, methods in OPENAPI["paths"].items():
        for method, op in methods.items():
            assert f"{method.upper()} {path}" in page
            assert f'id="{op["operationId"]}"' in page
    for name in OPENAPI["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_docs_page__loads_nothing_from_elsewhere(client: Client) -> None:
    page = client.get("/api/docs/").content.decode()

    assert "<script" not in page
    # The site's own stylesheet and icon only (the page has the site's header).
    assert all('href="/static/hearth/' in link for link in re.findall(r"<link [^>]*>", page))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_docs_page__escapes_what_the_description_says(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = "<script>alert('x')</script>"
    op = OPENAPI["paths"]["/api/orders"]["post"]
    monkeypatch.setitem(op, "description", evil)
    monkeypatch.setitem(OPENAPI["components"]["schemas"]["Error"], "description", evil)
    monkeypatch.setitem(op["parameters"][0], "description", evil)

    page = client.get("/api/docs/").content.decode()

    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert openapi.docs_context()["operations"][0]["description"] == evil
