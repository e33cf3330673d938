"""Limits and budgets across processes (issue 14): two real `sparklio serve` processes on one
PostgreSQL and one Redis hold an API key to one daily budget and one requests-per-minute
limit between them, as a user sees it (the answers, and the call log's usage report); and a
campaign under `sparklio serve --workers 2` runs each of its steps once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparklio.db.engine import migrate
from tests.pg import PostgresCluster, postgres
from tests.test_budgets import PRICED, TEXT, bearer, concurrent_calls, message, new_key
from tests.test_campaigns import BRIEF, parse_events
from tests.test_shared_guard import REDIS, keys_of, prefix, serve_two, serve_workers, worker_pids
from tests.test_workers import executors

__all__ = ["postgres", "prefix"]

pytestmark = pytest.mark.timeout(300)  # processes start slowly on a busy 2-core machine

CALLS = 50


def shared(prefix: str) -> dict[str, str]:
    """Settings of processes that share one Redis under this test's own key prefix."""
    return {"REDIS_URL": REDIS, "GENERATOR_MODE": "mock", "BUDGET_PREFIX": f"{prefix}budget:",
            "GUARD_PREFIX": f"{prefix}guard:", "REDIS_AUTH_PREFIX": f"{prefix}auth:",
            "REDIS_MEDIA_PREFIX": f"{prefix}media:", "CACHE_PREFIX": f"{prefix}cache:"}  # fmt: skip


def client(port: int, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                             headers=bearer(key))  # fmt: skip


@asynccontextmanager
async def two_servers(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> AsyncIterator[tuple[list[httpx.AsyncClient], httpx.AsyncClient]]:
    """Two `sparklio serve` (mock mode, the model priced) on one PostgreSQL and one Redis:
    a member's client on each, and an admin's on the first."""
    servers, member = await asyncio.to_thread(serve_two, tmp_path, postgres, PRICED,
                                              **shared(prefix))  # fmt: skip
    clients = [client(s.port, member) for s in servers]
    admin = client(servers[0].port, keys_of(tmp_path)["admin"])
    try:
        yield clients, admin
    finally:
        for each in [*clients, admin]:
            await each.aclose()
        for server in servers:
            await asyncio.to_thread(server.stop)


async def one_call(admin: httpx.AsyncClient) -> tuple[float, int]:
    """What one call costs, and its completion tokens (the admin has no limits)."""
    response = await admin.post("/api/v1/llm/generate", json=TEXT)
    assert response.status_code == 200, response.text
    cost: float = response.json()["meta"]["cost_usd"]
    assert cost > 0
    return cost, response.json()["usage"]["completion_tokens"]


async def recorded(admin: httpx.AsyncClient, user_id: str, answered: int) -> dict[str, Any]:
    """The user's line of the usage report (the call log in PostgreSQL) once it holds the
    `answered` calls both processes answered (each writes its log in the background)."""
    while True:
        usage = (await admin.get("/api/v1/usage", params={"group_by": "user"})).json()
        mine = [g for g in usage["groups"] if g["key"] == user_id]
        if mine and mine[0]["calls"] - mine[0]["errors"] >= answered:
            found: dict[str, Any] = mine[0]
            return found
        await asyncio.sleep(0.2)  # the test's timeout is the backstop


def refusal(response: httpx.Response) -> dict[str, Any]:
    """What a refused call tells its caller: 429, when to retry, and which limit."""
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    details: dict[str, Any] = response.json()["error"]["details"]
    return details


async def test_two_serve_processes_hold_a_key_to_one_daily_budget(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    async with two_servers(tmp_path, postgres, prefix) as ((a, b), admin):
        cost, completion = await one_call(admin)
        budget = round(cost * 10, 9)  # allows 10 calls
        key = await new_key(a, "ci", usd_per_day=budget)
        costs, refused = await concurrent_calls([a, b], key, CALLS, max_tokens=completion)
        assert 1 <= len(costs) <= 11 and len(costs) + len(refused) == CALLS
        for response in refused:
            details = refusal(response)
            assert details["limit"] == "usd_per_day" and details["value"] == budget
            assert details["scope"].startswith("key:")
            assert "Daily budget of $" in message(response)
            assert "for key 'ci'" in message(response)
        # once the calls in flight have settled, later calls on either process spend the rest
        for turn in range(20):
            more, last = await concurrent_calls([(a, b)[turn % 2]], key, 1, completion)
            costs += more
            if last:
                break
        (spent,) = last
        assert refusal(spent)["limit"] == "usd_per_day"
        assert "is spent; resets at 00:00 UTC" in message(spent)
        assert int(spent.headers["Retry-After"]) <= 86_400

        # what the call log recorded in the database, not what the limits counted
        member = (await a.get("/api/v1/auth/me")).json()["id"]
        usage = await recorded(admin, member, len(costs))
    assert usage["calls"] - usage["errors"] == len(costs)  # no call answered twice, none lost
    assert usage["cost_usd"] == pytest.approx(sum(costs), abs=1e-9)
    # spent: at least the budget, over it by at most one call's cost
    assert budget - 1e-9 <= usage["cost_usd"] <= budget + cost + 1e-9


async def test_two_serve_processes_hold_a_key_to_one_requests_per_minute_limit(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    limit = 10
    async with two_servers(tmp_path, postgres, prefix) as ((a, b), admin):
        key = await new_key(b, "rpm", rpm=limit)
        started = time.monotonic()
        answered, refused = await concurrent_calls([a, b], key, CALLS, max_tokens=64)
        took = time.monotonic() - started
        member = (await a.get("/api/v1/auth/me")).json()["id"]
        usage = await recorded(admin, member, len(answered))
    # the bucket holds `limit` and refills `limit` a minute: what the burst's time let in
    assert limit <= len(answered) <= limit + int(took * limit / 60)
    assert len(answered) + len(refused) == CALLS
    for response in refused:
        assert refusal(response)["limit"] == "rpm"
        assert "Limit of 10 requests per minute for key 'rpm' is reached" in message(response)
        assert int(response.headers["Retry-After"]) <= 60 // limit  # one request's refill
    assert usage["calls"] - usage["errors"] == len(answered)


@pytest.mark.timeout(420)
async def test_a_campaign_under_two_granian_workers_runs_each_step_once(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    url = postgres.create_database()
    await asyncio.to_thread(migrate, url)
    server, member = await asyncio.to_thread(serve_workers, tmp_path, None, 2, DATABASE_URL=url,
                                             **shared(prefix))  # fmt: skip
    try:
        assert len(worker_pids(server.pid)) == 2
        async with client(server.port, member) as http:
            # a few at once, so both workers have some to take from the queue
            posted = await asyncio.gather(
                *(http.post("/api/v1/campaigns", json={"brief": BRIEF}) for _ in range(4))
            )
            assert [r.status_code for r in posted] == [202] * 4, [r.text for r in posted]
            ids = [r.json()["id"] for r in posted]
            followed = {}
            for campaign_id in ids:  # each followed to its end, on whichever worker answers
                events = await http.get(f"/api/v1/campaigns/{campaign_id}/events", timeout=None)
                assert events.status_code == 200
                followed[campaign_id] = parse_events(events.text)
            campaigns = [(await http.get(f"/api/v1/campaigns/{i}")).json() for i in ids]
    finally:
        await asyncio.to_thread(server.stop)
    for campaign in campaigns:
        events = followed[campaign["id"]]
        kinds = [e["event"] for e in events]
        assert kinds.count("started") == 1 and kinds[-1] == "done", kinds
        finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]
        assert len(finished) == len(set(finished)), finished  # no step ran twice
        for step in finished:
            marks = [e["event"] for e in events if e["data"]["step"] == step]
            assert marks == ["step_started", "step_finished"], (step, marks)
        assert campaign["status"] == "succeeded", campaign["error"]
        assert campaign["result"]["status"] == "approved"
        assert sorted(s["step"] for s in campaign["steps"]) == sorted(finished)
        assert all(s["status"] == "succeeded" for s in campaign["steps"])
    ran = await asyncio.to_thread(executors, url)
    assert set(ran) == set(ids) and {status for status, _ in ran.values()} == {"SUCCESS"}
