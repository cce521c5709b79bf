"""Schemathesis attacks the live API (a real Daphne) from its own OpenAPI description, every check on.

Generated requests, valid and invalid, against every operation: no 5xx, every
status, header and body as documented, invalid input refused, valid input taken
where the data can be valid (menu items and outlets are the shop's data, which
the description cannot know: see ``KNOWN_REFUSALS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.management import call_command
from hypothesis import HealthCheck, settings

from queueing.services import outlet_create
from tests.processes import web_server

pytestmark = [pytest.mark.slow]

EXAMPLES = 25  # per operation, for each of its phases; enough to find what 5,900 found


@pytest.fixture(scope="module")
def api_schema(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    with django_db_blocker.unblock():
        call_command("loaddata", "sample_menu", verbosity=0)
        outlet, token = outlet_create(slug="north", name="North", weight=1)
        try:
            with web_server(tmp_path_factory.mktemp("schemathesis")) as (_, base):
                schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
                schema.config.headers = {"Authorization": f"Bearer {token}"}
                yield schema
        finally:
            call_command("flush", interactive=False, verbosity=0)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The same cases every run: a finding reproduces, CI does not flap on luck.
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api__generated_requests_meet_every_check(case: Any) -> None:
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0.2 < wait <= 60:
        # A claim may wait up to a minute for an order: a generated wait is cut short.
        case.query["wait"] = 0.2
    case.call_and_validate(excluded_checks=KNOWN_REFUSALS)


# positive_data_acceptance: a schema-valid order names menu items and outlets the
# schema cannot list (they are the shop's data), so a valid-looking one may be a 400.
KNOWN_REFUSALS = [schemathesis.checks.positive_data_acceptance]
