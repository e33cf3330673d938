"""Limits and budgets per API key and per user: requests per minute, and a USD budget that 50
concurrent calls cannot overspend by more than one call's cost, in one process and across
two gateways sharing Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from sparklio.core.config import Settings
from sparklio.main import close_app, create_app
from tests.conftest import client_for, make_settings

REDIS = "redis://127.0.0.1:6379/0"

#: the mock model, priced: every call costs the same for the same payload
PRICED = """
version: 1
tasks:
  copywriter: [channel_copy]
modes:
  mock:
    default:
      - {provider: mock, model: mock-v1}
prices:
  mock:
    mock-v1: {input: 1000, output: 3000}
"""

TEXT: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "mode": "text",
    "payload": {"product": "Dawon green tea"},
}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def message(response: httpx.Response) -> str:
    text: str = response.json()["error"]["message"]
    return text


async def new_key(http: httpx.AsyncClient, name: str, **limits: Any) -> str:
    response = await http.post("/api/v1/auth/api-keys", json={"name": name, "limits": limits})
    assert response.status_code == 201, response.text
    assert response.json()["limits"] == {"rpm": None, "tpm": None, "usd_per_day": None,
                                         "usd_per_month": None, **limits}  # fmt: skip
    key: str = response.json()["key"]
    return key


@pytest.fixture
def priced(tmp_path: Path, write_routing: Callable[[str], Path]) -> Settings:
    return make_settings(sparklio_home=tmp_path / "home", llm_routing_file=write_routing(PRICED))


@pytest.fixture
async def http(priced: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(priced)
    try:
        async with await client_for(app) as client:
            yield client
    finally:
        await close_app(app)


async def one_call_cost(
    http: httpx.AsyncClient, max_tokens: int | None = None
) -> tuple[float, int]:
    """What one call costs, and its completion tokens (the local user has no limits)."""
    body = {**TEXT, "options": {"max_tokens": max_tokens}} if max_tokens else TEXT
    response = await http.post("/api/v1/llm/generate", json=body)
    assert response.status_code == 200, response.text
    cost: float = response.json()["meta"]["cost_usd"]
    assert cost > 0
    return cost, response.json()["usage"]["completion_tokens"]


async def test_the_call_past_a_keys_requests_per_minute_is_429_naming_the_limit(
    http: httpx.AsyncClient,
) -> None:
    key = await new_key(http, "ci", rpm=3)
    for _ in range(3):
        response = await http.post("/api/v1/llm/generate", json=TEXT, headers=bearer(key))
        assert response.status_code == 200, response.text
    refused = await http.post("/api/v1/llm/generate", json=TEXT, headers=bearer(key))
    assert refused.status_code == 429
    assert "Limit of 3 requests per minute for key 'ci' is reached" in message(refused)
    # the bucket refills 3 a minute: one more in about 20 s
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    # the OpenAI-compatible API is held to the same limit
    chat = {"model": "copywriter/channel_copy", "messages": [{"role": "user", "content": "hi"}]}
    response = await http.post("/v1/chat/completions", json=chat, headers=bearer(key))
    assert response.status_code == 429
    # another key of the same user is not
    other = await new_key(http, "other")
    response = await http.post("/api/v1/llm/generate", json=TEXT, headers=bearer(other))
    assert response.status_code == 200


async def test_limits_that_make_no_sense_are_422_naming_the_field(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/auth/api-keys",
                               json={"name": "x", "limits": {"rpm": 0}})  # fmt: skip
    assert response.status_code == 422
    assert "rpm" in response.text
    response = await http.put("/api/v1/auth/users/nobody/limits", json={"usd_per_day": -1})
    assert response.status_code == 422
    assert "usd_per_day" in response.text
    response = await http.put("/api/v1/auth/users/nobody/limits", json={"usd_per_day": 1})
    assert response.status_code == 404


async def concurrent_calls(
    clients: list[httpx.AsyncClient], key: str, n: int, max_tokens: int
) -> tuple[list[float], list[httpx.Response]]:
    """`n` calls at once spread over `clients`: the costs of those answered, and the refused."""
    body = {**TEXT, "options": {"max_tokens": max_tokens}}
    responses = await asyncio.gather(*(
        clients[i % len(clients)].post("/api/v1/llm/generate", json=body, headers=bearer(key))
        for i in range(n)
    ))  # fmt: skip
    costs = [r.json()["meta"]["cost_usd"] for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 429 for r in refused), [r.text for r in refused]
    return costs, refused


async def test_fifty_concurrent_calls_overspend_a_daily_budget_by_at_most_one_call(
    http: httpx.AsyncClient,
) -> None:
    cost, completion = await one_call_cost(http)
    budget = round(cost * 10, 9)  # allows 10 calls
    key = await new_key(http, "ci", usd_per_day=budget)
    costs, refused = await concurrent_calls([http], key, 50, max_tokens=completion)
    assert 1 <= len(costs) <= 11
    assert sum(costs) <= budget + cost + 1e-9
    assert refused and all("Daily budget of" in message(r) for r in refused)
    # once the calls in flight have settled, the rest of the budget is spent by later calls
    while True:
        more, refused = await concurrent_calls([http], key, 1, max_tokens=completion)
        costs += more
        if refused:
            break
    assert budget - 1e-9 <= sum(costs) <= budget + cost + 1e-9
    assert "is spent; resets at 00:00 UTC" in message(refused[0])
    assert int(refused[0].headers["Retry-After"]) <= 86_400
    # what /me says: used, nothing remaining
    me = (await http.get("/api/v1/auth/me", headers=bearer(key))).json()
    (scope,) = me["limits"]
    assert scope["name"] == "key 'ci'"
    assert scope["usd_per_day"]["limit"] == budget
    assert scope["usd_per_day"]["used"] == pytest.approx(sum(costs), abs=1e-6)
    assert scope["usd_per_day"]["remaining"] == 0


async def test_me_shows_a_users_limits_used_and_remaining(http: httpx.AsyncClient) -> None:
    me = (await http.get("/api/v1/auth/me")).json()
    assert me["limits"] == []  # nothing configured: nothing shown, nothing held
    response = await http.put(f"/api/v1/auth/users/{me['id']}/limits",
                              json={"rpm": 5, "tpm": 100_000})  # fmt: skip
    assert response.status_code == 200, response.text
    for _ in range(2):
        assert (await http.post("/api/v1/llm/generate", json=TEXT)).status_code == 200
    (scope,) = (await http.get("/api/v1/auth/me")).json()["limits"]
    assert scope["scope"] == f"user:{me['id']}"
    assert scope["rpm"]["limit"] == 5
    assert scope["rpm"]["used"] == 2 and scope["rpm"]["remaining"] == 3
    assert 0 < scope["tpm"]["used"] < 100_000


async def test_the_usage_report_by_user_shows_each_users_limits(priced: Settings) -> None:
    app = create_app(priced)
    try:
        async with await client_for(app) as http:
            me = (await http.get("/api/v1/auth/me")).json()
            await http.put(f"/api/v1/auth/users/{me['id']}/limits", json={"rpm": 5})
            for _ in range(2):
                assert (await http.post("/api/v1/llm/generate", json=TEXT)).status_code == 200
            await app.state.services.call_log.flush()  # the report reads the database
            usage = (await http.get("/api/v1/usage", params={"group_by": "user"})).json()
    finally:
        await close_app(app)
    (mine,) = [g for g in usage["groups"] if g["key"] == me["id"]]
    assert mine["calls"] == 2
    (scope,) = mine["limits"]
    assert scope["scope"] == f"user:{me['id']}"
    assert scope["rpm"]["limit"] == 5 and scope["rpm"]["used"] == 2


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the local Redis, removed afterwards."""
    prefix = f"test-budgets-{uuid.uuid4().hex}:"
    yield prefix
    redis = Redis.from_url(REDIS)
    try:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_two_gateways_on_one_redis_share_the_budget(
    priced: Settings, redis_prefix: str
) -> None:
    settings = priced.model_copy(update={"redis_url": REDIS, "budget_prefix": redis_prefix})
    apps: list[FastAPI] = [create_app(settings), create_app(settings)]
    try:
        first, second = [await client_for(app) for app in apps]
        async with first, second:
            cost, completion = await one_call_cost(first)
            budget = round(cost * 10, 9)
            key = await new_key(first, "shared", usd_per_day=budget)
            costs, refused = await concurrent_calls([first, second], key, 50, completion)
            assert 1 <= len(costs) <= 11 and refused
            assert sum(costs) <= budget + cost + 1e-9
            # the counters are in Redis, not in either process
            redis = Redis.from_url(REDIS)
            try:
                assert [k async for k in redis.scan_iter(match=redis_prefix + "*")]
            finally:
                await redis.aclose()
            me = (await second.get("/api/v1/auth/me", headers=bearer(key))).json()
            assert me["limits"][0]["usd_per_day"]["used"] == pytest.approx(sum(costs), abs=1e-6)
    finally:
        for app in apps:
            await close_app(app)


async def test_a_redis_that_does_not_answer_leaves_limits_per_process(
    priced: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # nothing listens on port 9: each command fails fast, this process counts on its own
    settings = priced.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    app = create_app(settings)
    try:
        async with await client_for(app) as http:
            key = await new_key(http, "ci", rpm=2)
            codes = [
                (
                    await http.post("/api/v1/llm/generate", json=TEXT, headers=bearer(key))
                ).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]
    finally:
        await close_app(app)
    assert "Redis did not answer for the limits and budgets" in caplog.text


async def test_a_streamed_call_gives_back_what_it_reserved_beyond_its_tokens(
    http: httpx.AsyncClient,
) -> None:
    key = await new_key(http, "stream", rpm=5, tpm=6000)
    body = {**TEXT, "stream": True}
    async with http.stream("POST", "/api/v1/llm/generate", json=body,
                           headers=bearer(key)) as response:  # fmt: skip
        assert response.status_code == 200
        text = "".join([part async for part in response.aiter_text()])
    assert "event: done" in text or '"usage"' in text
    (scope,) = (await http.get("/api/v1/auth/me", headers=bearer(key))).json()["limits"]
    assert scope["rpm"]["used"] == 1
    # reserved at the prompt + BUDGET_MAX_TOKENS (1024); the mock's answer is far shorter
    assert scope["tpm"]["used"] < 1024


async def test_default_limits_from_settings_hold_for_a_user_without_its_own(
    priced: Settings,
) -> None:
    app = create_app(priced.model_copy(update={"default_rpm": 1}))
    try:
        async with await client_for(app) as http:
            assert (await http.post("/api/v1/llm/generate", json=TEXT)).status_code == 200
            refused = await http.post("/api/v1/llm/generate", json=TEXT)
            assert refused.status_code == 429
            assert "Limit of 1 requests per minute for user " in message(refused)
            assert int(refused.headers["Retry-After"]) >= 1
            # a user's own limit beats the default
            me = (await http.get("/api/v1/auth/me")).json()
            assert me["limits"][0]["rpm"]["limit"] == 1
            response = await http.put(f"/api/v1/auth/users/{me['id']}/limits", json={"rpm": 50})
            assert response.status_code == 200
            assert (await http.post("/api/v1/llm/generate", json=TEXT)).status_code == 200
    finally:
        await close_app(app)
