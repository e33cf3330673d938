"""LLMGatewayClient, in-process and against a real server."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from sparklio.exceptions import (
    GatewayConnectionError,
    InvalidRequestError,
    RouteNotFoundError,
)
from sparklio.services.clients.llm_client import LLMGatewayClient
from tests.conftest import token_for
from tests.schemas import Brief, CopySet
from tests.servers import free_port, serve_in_thread

PAYLOAD = {"brief": "Launch Dawon green tea for office workers", "product": "Dawon green tea"}


async def test_typed_call_returns_a_validated_model(llm: LLMGatewayClient) -> None:
    brief = await llm.generate(role="brief", task="analyze", payload=PAYLOAD, schema=Brief)
    assert isinstance(brief, Brief)
    assert brief.product == "Dawon green tea"


async def test_typed_result_keeps_the_response(llm: LLMGatewayClient) -> None:
    result = await llm.generate_result(
        role="copywriter", task="channel_copy", payload=PAYLOAD, schema=CopySet
    )
    assert isinstance(result.data, CopySet)
    assert result.response.provider == "mock"
    assert result.response.meta["attempts"][0]["outcome"] == "ok"


async def test_dict_schema_and_text_mode_return_the_response(llm: LLMGatewayClient) -> None:
    schema = {
        "type": "object",
        "properties": {"tagline": {"type": "string"}},
        "required": ["tagline"],
    }
    response = await llm.generate(role="brand", task="profile", payload=PAYLOAD, schema=schema)
    assert set(response.output) == {"tagline"}
    text = await llm.generate(role="brand", task="profile", payload=PAYLOAD, mode="text")
    assert "Dawon green tea" in text.output["text"]


async def test_errors_become_typed_exceptions(llm: LLMGatewayClient) -> None:
    with pytest.raises(RouteNotFoundError) as info:
        await llm.generate(role="copywriter", task="poem", payload=PAYLOAD, request_id="req-77")
    assert info.value.status == 404
    assert info.value.request_id == "req-77"
    assert "copywriter/poem" in info.value.message
    with pytest.raises(InvalidRequestError) as bad:
        await llm.generate(
            role="copywriter", task="channel_copy", payload=PAYLOAD, schema={"type": 5}
        )
    assert bad.value.status == 422
    assert "not a valid JSON Schema" in bad.value.message


async def test_typed_model_that_json_schema_cannot_express(llm: LLMGatewayClient) -> None:
    """Pydantic may be stricter than the JSON Schema it publishes: that is a clear error."""
    from pydantic import field_validator

    from sparklio.exceptions import OutputValidationError

    class Picky(BaseModel):
        product: str

        @field_validator("product")
        @classmethod
        def _never(cls, value: str) -> str:
            raise ValueError("no product is good enough")

    with pytest.raises(OutputValidationError, match="not a valid Picky"):
        await llm.generate(role="brief", task="analyze", payload=PAYLOAD, schema=Picky)


async def test_unreachable_gateway_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with LLMGatewayClient(base_url=url) as client:
        with pytest.raises(GatewayConnectionError) as info:
            await client.generate(role="brief", task="analyze", payload=PAYLOAD)
    assert url in info.value.message and "make run" in info.value.message


async def test_base_url_and_key_from_settings(
    monkeypatch: pytest.MonkeyPatch, app: FastAPI
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    monkeypatch.setenv("GATEWAY_BASE_URL", "http://studio-gpu:9000")
    monkeypatch.setenv("GATEWAY_API_KEY", "sk-test")
    async with LLMGatewayClient(transport=httpx.MockTransport(handler)) as client:
        assert await client.health() == {"status": "ok"}
    assert str(seen[0].url) == "http://studio-gpu:9000/health"
    assert seen[0].headers["authorization"] == "Bearer sk-test"


async def test_against_a_real_uvicorn_server(app: FastAPI) -> None:
    token = await token_for(app)
    with serve_in_thread(app) as url:
        async with LLMGatewayClient(base_url=url, api_key=token) as client:
            brief = await client.generate(
                role="brief", task="analyze", payload=PAYLOAD, schema=Brief
            )
            health = await client.health()
            with pytest.raises(RouteNotFoundError):
                await client.generate(role="brief", task="nope", payload=PAYLOAD)
    assert brief.product == "Dawon green tea"
    assert health["generator_mode"] == "mock"
