"""The gateway clients when something else answers: a body that is not JSON, or JSON of the
wrong shape, is a typed GatewayResponseError, never orjson's or pydantic's exception."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from sparklio.exceptions import GatewayError, GatewayResponseError, InvalidRequestError
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient

CALL = {"role": "copywriter", "task": "channel_copy", "payload": {"product": "tea"}}
PROXY_PAGE = b"<html><body><h1>Welcome to nginx!</h1></body></html>"


def answering(status: int, body: bytes, content_type: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [200, 202])
async def test_a_success_whose_body_is_not_json_is_a_gateway_response_error(status: int) -> None:
    transport = answering(status, PROXY_PAGE, "text/html")
    async with LLMGatewayClient(base_url="http://gw", api_key="k", transport=transport) as llm:
        with pytest.raises(GatewayResponseError) as info:
            await llm.generate(**CALL)
    error = info.value
    assert isinstance(error, GatewayError) and error.status == 502
    assert "POST /api/v1/llm/generate" in error.message
    assert "text/html" in error.message and "Welcome to nginx" in error.message
    assert "GATEWAY_BASE_URL" in error.message


async def test_routes_and_health_that_are_not_json_too() -> None:
    transport = answering(200, b"OK", "text/plain")
    async with LLMGatewayClient(base_url="http://gw", api_key="k", transport=transport) as llm:
        for call in (llm.routes, llm.providers, llm.health):
            with pytest.raises(GatewayResponseError):
                await call()


async def test_json_of_the_wrong_shape_is_a_gateway_response_error() -> None:
    transport = answering(200, b'{"hello": "world"}', "application/json")
    async with LLMGatewayClient(base_url="http://gw", api_key="k", transport=transport) as llm:
        with pytest.raises(GatewayResponseError) as info:
            await llm.generate(**CALL)
    assert "not a LLMProviderResponse" in info.value.message


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (lambda m: m.submit(role="a", task="b", prompt="c"), PROXY_PAGE),
        (lambda m: m.job("0" * 32), b"[]"),
        (lambda m: m.cancel("0" * 32), b"\xff\xfe not even text"),
    ],
)
async def test_the_media_client_too(
    call: Callable[[MediaGatewayClient], object], body: bytes
) -> None:
    transport = answering(200, body, "text/html")
    async with MediaGatewayClient(base_url="http://gw", api_key="k", transport=transport) as media:
        with pytest.raises(GatewayResponseError):
            await call(media)  # type: ignore[misc]


async def test_an_integer_beyond_64_bits_is_refused_before_sending() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    transport = httpx.MockTransport(handler)
    async with LLMGatewayClient(base_url="http://gw", api_key="k", transport=transport) as llm:
        with pytest.raises(InvalidRequestError) as info:
            await llm.generate(**{**CALL, "payload": {"n": [10**30]}})
    assert info.value.message.startswith("payload.n[0]: integer 1000000000000000000000000000000")
    assert sent == []
