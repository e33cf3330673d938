"""The API from its own OpenAPI document: what it documents is what it does, and nothing a
caller sends makes it answer 5xx.

schemathesis generates requests for every operation (valid ones, and ones that break the
documented schema), sends them with a real API key to the app served by uvicorn on
127.0.0.1, and checks each answer: not a 5xx, a documented status, the documented content
type and body schema, and the documented headers. Derandomised and bounded, so every run
sends the same few hundred requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.internal.conjecture import providers
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sortedcontainers import SortedSet

from sparklio.core.config import Settings
from sparklio.db.engine import database_url, make_engine, sessions
from sparklio.main import create_app
from sparklio.services.auth import AuthService
from tests.conftest import make_settings
from tests.pg import PostgresCluster, find_bin_dir, postgres
from tests.servers import serve_in_thread

__all__ = ["postgres"]  # a fixture, used by name

#: Requests per operation and generation mode: about 780 in all (operations without
#: parameters or a body get no invalid requests).
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}
# Not negative_data_rejection: it wants a 4xx for a request with an undocumented query
# parameter (FastAPI ignores those, as most HTTP APIs do) or without the Authorization header
# that this test's session always sends.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


#: A routed (role, task) or model per generate operation: random names only get a 404, so valid
#: requests use these, and the rest of the body (payload, output_schema, options, sizes) goes
#: all the way through the gateway to the mock provider. Invalid requests keep random names.
ROUTED = {
    "POST /api/v1/llm/generate": {"role": "copywriter", "task": "channel_copy"},
    "POST /api/v1/media/generate": {"role": "vision_generator", "task": "image"},
    "POST /v1/chat/completions": {"model": "copywriter/channel_copy"},
}


#: what anyone may call: the liveness check, and logging in and out
PUBLIC = {
    ("get", "/health"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/session"),
    ("delete", "/api/v1/auth/session"),
}  # fmt: skip


def admin_key(settings: Settings) -> str:
    """An admin's API key, made through an engine of its own (the served app's engine
    belongs to uvicorn's event loop)."""

    async def make() -> str:
        engine = make_engine(database_url(settings))
        try:
            auth = AuthService(settings, sessions(engine))
            user = await auth.create_user("fuzz@example.com", "a long enough password", "admin")
            key, _ = await auth.create_api_key(user.id, "fuzz")
            return key
        finally:
            await engine.dispose()

    return asyncio.run(make())


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of the app in mock mode under uvicorn, on PostgreSQL as in
    production (it refuses what SQLite takes, e.g. a NUL character), else on SQLite."""
    url = None
    if find_bin_dir() is not None:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = cluster.create_database()
    settings = make_settings(sparklio_home=tmp_path / "home", database_url=url)
    app = create_app(settings)  # migrates the database
    key = admin_key(settings)
    with serve_in_thread(app) as url:
        yield url, key


def modes_for(operation: Any) -> list[GenerationMode]:
    """Valid requests for every operation; invalid ones too where there is something to get
    wrong (an operation with no parameters and no body has no invalid request)."""
    raw = operation.definition.raw
    if raw.get("parameters") or raw.get("requestBody"):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def generate(operation: Any, mode: GenerationMode) -> list[schemathesis.Case]:
    """`operation`'s requests in `mode`, the same every run: generated before any is sent,
    as schemathesis would otherwise feed values from the server's answers (random ids) into
    the requests it makes next."""
    cases: list[schemathesis.Case] = []

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,  # a busy CI machine is slow; that is not what this test is about
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report what failed as sent
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def collect(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body.update(ROUTED.get(operation.label, {}))
        cases.append(case)

    collect()
    return cases


@pytest.fixture
def no_local_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis also draws constants it finds in the project's loaded modules, so which test
    files ran before would change the requests; without them every run sends the same."""
    empty = providers.Constants(
        integers=SortedSet(),
        floats=SortedSet(key=providers.float_to_int),
        bytes=SortedSet(),
        strings=SortedSet(),
    )
    monkeypatch.setattr(providers, "_get_local_constants", lambda: empty)
    providers.CONSTANTS_CACHE.cache.clear()


@pytest.mark.timeout(300)  # about 800 requests; ~30 s on a busy 2-core machine
@pytest.mark.usefixtures("no_local_constants")
def test_every_operation_answers_as_documented_and_never_5xx(served: tuple[str, str]) -> None:
    url, key = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16  # every operation of the app, none left out
    planned = [
        (operation.label, mode, case)
        for operation in operations
        for mode in modes_for(operation)
        for case in generate(operation, mode)
    ]
    failures: list[str] = []
    sent: dict[str, int] = {}
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {key}"
        for label, mode, case in planned:
            response = case.call(base_url=url, session=http, timeout=30)
            sent[label] = sent.get(label, 0) + 1
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except (AssertionError, BaseExceptionGroup) as exc:  # what failed, a curl to replay
                failures.append(f"{mode.value} {label}: {exc}")
    assert len(sent) == len(operations) and sum(sent.values()) >= 500, sent
    assert not failures, f"{len(failures)} failing requests:\n\n" + "\n\n".join(failures)


async def test_the_document_shows_the_credentials_and_the_error_body_it_uses(
    http: httpx.AsyncClient,
) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert "HTTPValidationError" not in str(document)  # a body the server never sends
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error", "request_id"]
    paths = document["paths"]
    generate = paths["/api/v1/llm/generate"]["post"]
    assert generate["security"] == [{"bearer": []}]
    for status in ("401", "403", "413", "422", "500", "502", "503", "504"):
        assert generate["responses"][status]["content"] == error_body, status
    assert "Retry-After" in generate["responses"]["503"]["headers"]
    login = paths["/api/v1/auth/login"]["post"]
    assert "security" not in login  # open: it is how a token is got
    assert set(login["responses"]) >= {"200", "401", "413", "422", "429", "503"}
    assert "Retry-After" in login["responses"]["429"]["headers"]
    session = paths["/api/v1/auth/session"]
    assert "security" not in session["post"] and "security" not in session["delete"]
    assert set(session["post"]["responses"]) >= {"200", "401", "413", "422", "429", "503"}
    assert set(session["delete"]["responses"]) >= {"204", "403", "503"}
    assert "security" not in paths["/health"]["get"]
    job = paths["/api/v1/media/jobs/{job_id}"]["delete"]
    assert set(job["responses"]) >= {"200", "401", "403", "404", "422", "503"}
    asset = paths["/api/v1/media/assets/{asset_id}"]["get"]["responses"]["200"]["content"]
    assert set(asset) == {"image/png", "image/jpeg", "image/webp", "image/gif"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            if (method, path) not in PUBLIC:
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)


async def test_every_operation_it_secures_refuses_a_caller_without_credentials(
    app: FastAPI,
) -> None:
    ids = {"{job_id}": "0" * 32, "{asset_id}": "0" * 64, "{key_id}": "0" * 32}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
        answers = {}
        for path, operations in document["paths"].items():
            url = path
            for name, value in ids.items():
                url = url.replace(name, value)
            for method, operation in operations.items():
                body = {} if "requestBody" in operation else None
                answers[method, path, "security" in operation] = await anonymous.request(
                    method, url, json=body
                )
    assert len(answers) >= 16
    for (method, path, secured), response in answers.items():
        if secured:
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
        else:  # /health, login and logout: open to anyone (logout without a session: 204)
            assert response.status_code in (200, 204, 422), (method, path)
