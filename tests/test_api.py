"""The HTTP API: every status code a user can meet, with the body they will read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparklio.main import close_app
from sparklio.services.llm.providers.base import LLMProvider, LLMProviderResponse, usage
from tests.conftest import app_with, client_for, make_settings
from tests.schemas import REALISTIC

COPY_SCHEMA = {
    "type": "object",
    "properties": {"headline": {"type": "string", "maxLength": 30}, "body": {"type": "string"}},
    "required": ["headline", "body"],
}
CALL = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {"product": "Dawon green tea"},
    "output_schema": COPY_SCHEMA,
}


class WrongShape(LLMProvider):
    """Answers, but never with what the schema asks for."""

    vendor = "wrong"  # type: ignore[assignment]

    async def generate(
        self, prompt: str, role: str, task: str, mode: Any, options: dict[str, Any]
    ) -> LLMProviderResponse:
        return LLMProviderResponse(
            provider="wrong", model=options["model"], usage=usage(1, 1), output={"headline": 42}
        )


class Sleepy(LLMProvider):
    """Takes longer than any timeout a test gives it."""

    vendor = "sleepy"  # type: ignore[assignment]

    async def generate(
        self, prompt: str, role: str, task: str, mode: Any, options: dict[str, Any]
    ) -> LLMProviderResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


class Crashing(LLMProvider):
    """Has a bug."""

    vendor = "crashing"  # type: ignore[assignment]

    async def generate(
        self, prompt: str, role: str, task: str, mode: Any, options: dict[str, Any]
    ) -> LLMProviderResponse:
        raise KeyError("choices")


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return dict(body["error"])


async def test_generate_returns_a_schema_valid_mock_answer(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "mock"
    assert set(body["output"]) >= {"headline", "body"}
    assert len(body["output"]["headline"]) <= 30
    meta = body["meta"]
    assert meta["generator_mode"] == "mock"
    assert meta["role"] == "copywriter" and meta["task"] == "channel_copy"
    assert meta["rule"] == "default"
    assert meta["request_id"] == response.headers["x-request-id"]
    assert [a["outcome"] for a in meta["attempts"]] == ["ok"]
    assert meta["attempts"][0]["provider"] == "mock"
    assert meta["template"] == "copywriter/channel_copy.j2"
    assert len(meta["prompt_hash"]) == 16
    assert meta["latency_ms"] >= meta["attempts"][0]["latency_ms"]


async def test_text_mode(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/llm/generate", json={**CALL, "mode": "text"})
    assert response.status_code == 200
    assert "Dawon green tea" in response.json()["output"]["text"]


async def test_request_id_is_taken_from_the_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/llm/generate", json=CALL, headers={"X-Request-ID": "campaign-42.step-3"}
    )
    assert response.headers["x-request-id"] == "campaign-42.step-3"
    assert response.json()["meta"]["request_id"] == "campaign-42.step-3"
    other = await http.get("/health")
    assert len(other.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"role": "copywriter", "task": ', 422, ["not valid JSON"]),
        ({"task": "channel_copy", "payload": {}}, 422, ["role: field required"]),
        ({**CALL, "mode": "yaml"}, 422, ["mode", "'json' or 'text'"]),
        ({**CALL, "payload": ["not", "an", "object"]}, 422, ["payload", "object"]),
        ({**CALL, "role": "Copy Writer"}, 422, ["role", "pattern"]),
        ({**CALL, "schema": COPY_SCHEMA}, 422, ["schema: unknown field"]),
        ({**CALL, "output_schema": {"type": "objekt"}}, 422, ["not a valid JSON Schema"]),
        ({**CALL, "output_schema": {"type": "string"}}, 422, ["must describe a JSON object"]),
        (
            {
                **CALL,
                "output_schema": {
                    "properties": {"a": {"$ref": "#/$defs/missing"}},
                    "required": ["a"],
                },
            },
            422,
            ["/$defs/missing", "does not exist"],
        ),
        ({**CALL, "options": {"model": "gpt-4o"}}, 422, ["options may not set model"]),
        ({**CALL, "task": "sonnet"}, 404, ["copywriter/sonnet", "copywriter/channel_copy"]),
        ({**CALL, "role": "intern"}, 404, ["intern/channel_copy", "brief/analyze"]),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    http: httpx.AsyncClient, body: Any, status: int, words: list[str]
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http.post(
        "/api/v1/llm/generate", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = error_of(response)
    for word in words:
        assert word in error["message"], error["message"]


async def test_ten_megabyte_payload_gets_413(http: httpx.AsyncClient) -> None:
    big = {**CALL, "payload": {"brief": "x" * 10_000_000}}
    response = await http.post("/api/v1/llm/generate", json=big)
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "payload_too_large"
    assert "MAX_REQUEST_BYTES" in error["message"]


async def test_chunked_body_over_the_limit_gets_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        yield b'{"role": "copywriter", "task": "channel_copy", "payload": {"brief": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}}'

    response = await http.post(
        "/api/v1/llm/generate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES" in error_of(response)["message"]


async def test_unknown_path_and_method(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/v1/llm/generat")
    assert missing.status_code == 404
    assert "/docs" in error_of(missing)["message"]
    wrong = await http.get("/api/v1/llm/generate")
    assert wrong.status_code == 405
    assert error_of(wrong)["type"] == "method_not_allowed"


@asynccontextmanager
async def _app(
    settings_kwargs: dict[str, Any],
    write_routing: Callable[[str], Path],
    candidate: str,
    **providers: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    path = write_routing(f"""
        version: 1
        modes:
          mock:
            default:
              - {candidate}
        """)
    app = app_with(make_settings(llm_routing_file=path, **settings_kwargs), **providers)
    try:
        async with await client_for(app) as http:
            yield http
    finally:
        await close_app(app)


async def test_output_that_fails_its_schema_is_repaired_once_then_502_with_the_errors(
    write_routing: Callable[[str], Path],
) -> None:
    async with _app({}, write_routing, "{provider: wrong, model: w1}", wrong=WrongShape) as http:
        response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 502
    error = error_of(response)
    assert error["type"] == "output_invalid"
    assert "wrong/w1" in error["message"]
    assert any('42 is not of type "string"' in e for e in error["details"]["errors"])
    assert any('"body" is a required property' in e for e in error["details"]["errors"])
    outcomes = [a["outcome"] for a in error["details"]["attempts"]]
    assert outcomes == ["schema_invalid", "schema_invalid"]  # the answer, then one repair


async def test_upstream_timeout_is_504_naming_provider_and_model(
    write_routing: Callable[[str], Path],
) -> None:
    async with _app(
        {}, write_routing, "{provider: sleepy, model: s1, options: {timeout: 0.05}}", sleepy=Sleepy
    ) as http:
        response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 504
    error = error_of(response)
    assert error["type"] == "upstream_timeout"
    assert "sleepy/s1 did not answer within 0.05 s" in error["message"]
    assert error["details"]["attempts"][0]["outcome"] == "timeout"


async def test_a_provider_bug_is_a_502_naming_it_not_a_500(
    write_routing: Callable[[str], Path],
) -> None:
    async with _app(
        {}, write_routing, "{provider: crashing, model: c1}", crashing=Crashing
    ) as http:
        response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 502
    error = error_of(response)
    assert "crashing/c1 failed: KeyError" in error["message"]


async def test_routes_show_the_effective_table(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/llm/routes")
    assert response.status_code == 200
    body = response.json()
    assert body["generator_mode"] == "mock"
    assert body["routes"][-1]["rule"] == "default"
    assert body["routes"][-1]["candidates"][0]["provider"] == "mock"
    assert "channel_copy" in body["tasks"]["copywriter"]


async def test_providers_lists_each_named_provider_with_health(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/llm/providers")
    assert response.status_code == 200
    providers = {p["name"]: p for p in response.json()["providers"]}
    assert providers["mock"]["available"] is True
    assert providers["mock"]["models"] == {"mock-v1": True}


async def test_health_and_docs(http: httpx.AsyncClient) -> None:
    health = await http.get("/health")
    assert health.json()["status"] == "ok"
    assert health.json()["generator_mode"] == "mock"
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await http.get("/openapi.json")).json()
    schema = spec["paths"]["/api/v1/llm/generate"]["post"]
    assert "requestBody" in schema and "502" in schema["responses"]


@pytest.mark.parametrize("name", sorted(REALISTIC))
async def test_realistic_schemas_round_trip_through_the_api(
    http: httpx.AsyncClient, name: str
) -> None:
    response = await http.post(
        "/api/v1/llm/generate", json={**CALL, "output_schema": REALISTIC[name]}
    )
    assert response.status_code == 200, response.text
