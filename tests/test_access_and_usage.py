"""The whole app with its database: keys guard the gateway, every call is counted, and a
database outage costs no call and no record. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.db.engine import migrate
from sparklio.main import close_app, create_app
from tests.conftest import make_settings
from tests.pg import PostgresCluster, db_url, postgres

__all__ = ["db_url", "postgres"]  # fixtures, used by name

CALL = {"role": "copywriter", "task": "channel_copy", "payload": {"product": "Dawon tea"}}


@pytest.fixture
async def app(db_url: str, tmp_path: Any) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(database_url=db_url, sparklio_home=tmp_path / "home"))
    yield app
    await close_app(app)


def client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                             headers=headers)  # fmt: skip


async def test_keys_guard_the_gateway(app: FastAPI) -> None:
    [admin, member] = await app.state.services.auth.ensure_test_users()  # what make run does
    async with client(app) as anonymous:
        for path in ("/api/v1/llm/generate", "/api/v1/media/generate"):
            refused = await anonymous.post(path, json=CALL)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "create-test-users" in refused.json()["error"]["message"]
        assert (await anonymous.get("/health")).status_code == 200  # liveness stays open
    async with client(app, member.api_key) as http:
        assert (await http.post("/api/v1/llm/generate", json=CALL)).status_code == 200
        keys = (await http.get("/api/v1/auth/api-keys")).json()["api_keys"]
        revoked = await http.delete(f"/api/v1/auth/api-keys/{keys[0]['id']}")
        assert revoked.status_code == 200
        again = await http.post("/api/v1/llm/generate", json=CALL)
    assert again.status_code == 403
    assert "revoked" in again.json()["error"]["message"]
    async with client(app, member.api_key) as http:
        assert (await http.get("/api/v1/usage")).status_code == 403  # usage is for admins
    async with client(app, admin.api_key) as http:
        assert (await http.get("/api/v1/usage")).status_code == 200


async def test_a_thousand_calls_are_all_counted_by_role(app: FastAPI) -> None:
    [admin, _] = await app.state.services.auth.ensure_test_users()
    async with client(app, admin.api_key) as http:
        roles = ["copywriter", "brief", "reviewer", "strategist"]
        tasks = {"copywriter": "channel_copy", "brief": "analyze", "reviewer": "review",
                 "strategist": "plan"}  # fmt: skip
        for start in range(0, 1000, 100):
            answers = await asyncio.gather(*(
                http.post("/api/v1/llm/generate", json={
                    "role": roles[i % 4], "task": tasks[roles[i % 4]], "payload": {"n": i}})
                for i in range(start, start + 100)
            ))  # fmt: skip
            assert {a.status_code for a in answers} == {200}
        failed = await http.post("/api/v1/llm/generate",
                                 json={**CALL, "output_schema": {"type": "objekt"}})  # fmt: skip
        assert failed.status_code == 422  # a failed call: counted as an error
        await app.state.services.call_log.flush()
        usage = (await http.get("/api/v1/usage?group_by=role")).json()
    counts = {g["key"]: g["calls"] for g in usage["groups"]}
    assert counts == {"copywriter": 251, "brief": 250, "reviewer": 250, "strategist": 250}
    assert usage["total"]["calls"] == 1001
    assert usage["total"]["errors"] == 1
    assert usage["total"]["total_tokens"] > 0
    async with client(app, admin.api_key) as http:
        by_user = (await http.get("/api/v1/usage?group_by=user")).json()
    assert by_user["groups"][0]["calls"] == 1001


async def test_a_database_outage_costs_no_call_and_no_record(
    postgres: PostgresCluster, tmp_path: Any
) -> None:
    url = postgres.create_database()
    migrate(url)
    app = create_app(make_settings(database_url=url, sparklio_home=tmp_path / "home"))
    try:
        [admin, _] = await app.state.services.auth.ensure_test_users()
        async with client(app, admin.api_key) as http:
            before = [await http.post("/api/v1/llm/generate", json=CALL) for _ in range(20)]
            await app.state.services.call_log.flush()
            postgres.stop()
            try:
                during = [await http.post("/api/v1/llm/generate", json=CALL) for _ in range(30)]
                await asyncio.sleep(1.0)  # the writer finds the database gone
                health = (await http.get("/health")).json()
            finally:
                postgres.start()
            for _ in range(100):  # the writer's back-off is at most 10 s
                await asyncio.sleep(0.2)
                if app.state.services.call_log.stats()["spilled"] == 0:
                    break
            await app.state.services.call_log.flush()
            usage = (await http.get("/api/v1/usage")).json()
    finally:
        await close_app(app)
    assert {r.status_code for r in before + during} == {200}
    assert health["status"] == "degraded"
    assert health["call_log"]["database"] == "unreachable"
    assert usage["total"]["calls"] == 50  # every record arrived, each once
