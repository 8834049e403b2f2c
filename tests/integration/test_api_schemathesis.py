"""Every operation of the hub's OpenAPI document, fuzzed by schemathesis on a real hub with the
admin token: valid and invalid input alike, the hub answers with a 4xx that explains, never a 5xx,
and what it answers matches the document. New routes are fuzzed as soon as they are in the app.

Bounded: a few examples per operation (``SIPAS_FUZZ_EXAMPLES``, default 8), the whole file well
under a minute; the endless streams (Server-Sent Events) are left out: they never end a response.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from hub.api.app import create_app
from hub.db import make_engine
from hub.service import HubService
from tests.fixtures.hub import make_settings

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SIPAS_FUZZ_EXAMPLES", "8"))
# The firmware upload takes a tar.gz body: random bytes, like any binary body.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubService]:
    hub = HubService(make_settings(tmp_path_factory.mktemp("fuzz") / "hub"))
    hub.start()
    token = {"Authorization": f"Bearer {hub.settings.api_token}"}
    with httpx.Client(base_url=hub.api_url, headers=token) as api:  # a little real data to hit
        api.post("/desks", json={"id": "quay-1", "name": "Quầy 1"}).raise_for_status()
        api.post("/officials", json={"id": "an", "name": "Nguyễn Văn An"}).raise_for_status()
        api.post("/duty/check-in", json={"desk_id": "quay-1", "official_id": "an"})
        api.post("/cases", json={"code": "HS-1", "desk_id": "quay-1"}).raise_for_status()
    yield hub
    hub.stop()


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation, read from the app itself at collection time
    (an in-memory database suffices to build it), so each one is its own test."""
    app = create_app(make_engine("sqlite://"), token="collection-only-token")
    doc = app.openapi()
    return sorted(
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if not path.endswith("/stream")  # an endless response: nothing to fuzz
    )


@pytest.fixture(scope="module")
def api_schema(fuzzed_hub: HubService) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(httpx.get(f"{fuzzed_hub.api_url}/openapi.json").json())


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_on_any_input(
    method: str, path: str, api_schema: schemathesis.BaseSchema, fuzzed_hub: HubService
) -> None:
    op = api_schema[path][method]
    base = fuzzed_hub.api_url.removesuffix("/api/v1")
    auth = {"Authorization": f"Bearer {fuzzed_hub.settings.api_token}"}
    answered: list[int] = []

    def seen(_ctx: object, response: schemathesis.Response, _case: object) -> None:
        answered.append(response.status_code)

    cases = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same inputs on every run: a failure here is not luck
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base,
            headers=auth,
            checks=[not_a_server_error, response_schema_conformance, seen],
            timeout=10,
        )

    fuzz()
    assert answered, "schemathesis sent nothing"
    print(method, path, sorted(set(answered)), len(answered))
