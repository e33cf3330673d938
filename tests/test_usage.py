"""GET /api/v1/usage over known calls, in SQLite and PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from sparklio.api.deps import get_sessions
from sparklio.api.errors import install_error_handlers
from sparklio.api.v1.endpoints import usage
from sparklio.db.engine import make_engine, sessions
from sparklio.db.models import LLMCall
from tests.conftest import provide
from tests.pg import db_url, postgres

__all__ = ["db_url", "postgres"]  # fixtures, used by name

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=3)


def call(role: str, latency: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "user_id": None,
        "role": role,
        "task": "ad_copy",
        "generator_mode": "live",
        "provider": "ollama",
        "model": "small",
        "attempts": [],
        "outcome": "ok",
        "fallback": False,
        "status_code": 200,
        "latency_ms": latency,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "cache": None,
        "saved_tokens": 0,
        "saved_usd": 0.0,
        "created_at": NOW - timedelta(hours=1),
    } | fields


COPYWRITER_LATENCIES = [120.0, 80.0, 400.0, 95.0, 2000.0, 150.0, 310.0]
CALLS = [
    # copywriter: 7 calls; 2 errors; 2 fallbacks; 5 on openai (priced), 2 on ollama
    call("copywriter", 120.0, provider="openai", prompt_tokens=100, completion_tokens=50,
         cost_usd=0.00125, user_id="u1"),
    call("copywriter", 80.0, provider="openai", prompt_tokens=200, completion_tokens=80,
         cost_usd=0.0022, user_id="u1", fallback=True),
    call("copywriter", 400.0, provider="openai", outcome="timeout", status_code=504,
         user_id="u2"),
    call("copywriter", 95.0, provider="openai", prompt_tokens=50, completion_tokens=10,
         cost_usd=0.0004, user_id="u2", fallback=True),
    call("copywriter", 2000.0, provider="openai", outcome="http_503", status_code=502),
    call("copywriter", 150.0, prompt_tokens=30, completion_tokens=30),
    call("copywriter", 310.0, prompt_tokens=70, completion_tokens=20, user_id="u1"),
    # strategist: 3 calls, all ok, local; the second a response-cache hit (no tokens counted:
    # the first call's 20 + 5 and their price are what it saved), the third a miss
    call("strategist", 40.0, prompt_tokens=10, completion_tokens=5, user_id="u2"),
    call("strategist", 60.0, cache="hit", saved_tokens=25, saved_usd=0.0015, user_id="u2"),
    call("strategist", 50.0, prompt_tokens=30, completion_tokens=5, cache="miss"),
    # three days ago: outside the default window
    call("copywriter", 9999.0, provider="openai", prompt_tokens=1000, cost_usd=1.0,
         created_at=OLD),
]  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 by linear interpolation between ranks (PostgreSQL's percentile_cont)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3)}


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A small app with only the usage router, over a database holding CALLS."""
    engine = make_engine(db_url)
    async with engine.begin() as connection:
        await connection.execute(insert(LLMCall), CALLS)
    app = FastAPI()
    provide(app, get_sessions, sessions(engine))
    install_error_handlers(app)
    app.include_router(usage.router, prefix="/api/v1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sparklio") as client:
        yield client
    await engine.dispose()


async def test_usage_by_role_counts_sums_and_exact_percentiles(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/usage", params={"group_by": "role"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group_by"] == "role"
    assert datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"]) == timedelta(
        hours=24
    )
    copywriter, strategist = body["groups"]
    assert copywriter == {
        "key": "copywriter",
        "calls": 7,
        "errors": 2,
        "fallbacks": 2,
        "prompt_tokens": 450,
        "completion_tokens": 190,
        "total_tokens": 640,
        "cost_usd": pytest.approx(0.00385),
        "cache_hits": 0,
        "saved_tokens": 0,
        "saved_usd": 0.0,
        "latency_ms": percentiles(COPYWRITER_LATENCIES),
    }
    # sorted 80 95 120 150 310 400 2000: p50 is the 4th; p95 at rank 6.7: 400 + 0.7 * 1600
    assert copywriter["latency_ms"] == {"p50": 150.0, "p95": 1520.0}
    assert strategist == {
        "key": "strategist",
        "calls": 3,
        "errors": 0,
        "fallbacks": 0,
        "prompt_tokens": 40,
        "completion_tokens": 10,
        "total_tokens": 50,
        "cost_usd": 0.0,
        "cache_hits": 1,
        "saved_tokens": 25,
        "saved_usd": pytest.approx(0.0015),
        "latency_ms": {"p50": 50.0, "p95": 59.0},
    }
    assert body["total"] == {
        "calls": 10,
        "errors": 2,
        "fallbacks": 2,
        "prompt_tokens": 490,
        "completion_tokens": 200,
        "total_tokens": 690,
        "cost_usd": pytest.approx(0.00385),
        "cache_hits": 1,
        "saved_tokens": 25,
        "saved_usd": pytest.approx(0.0015),
        "latency_ms": percentiles([*COPYWRITER_LATENCIES, 40.0, 60.0, 50.0]),
    }


async def test_usage_by_provider_and_by_user(http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/v1/usage", params={"group_by": "provider"})).json()
    by_provider = {g["key"]: g for g in body["groups"]}
    assert set(by_provider) == {"openai", "ollama"}
    openai, ollama = by_provider["openai"], by_provider["ollama"]
    assert (openai["calls"], openai["errors"], openai["fallbacks"]) == (5, 2, 2)
    assert (openai["total_tokens"], openai["cost_usd"]) == (490, pytest.approx(0.00385))
    assert openai["latency_ms"] == percentiles([120.0, 80.0, 400.0, 95.0, 2000.0])
    assert (ollama["calls"], ollama["errors"], ollama["total_tokens"]) == (5, 0, 200)
    assert ollama["latency_ms"] == percentiles([150.0, 310.0, 40.0, 60.0, 50.0])

    body = (await http.get("/api/v1/usage", params={"group_by": "user"})).json()
    by_user = {g["key"]: g for g in body["groups"]}
    assert set(by_user) == {"u1", "u2", None}  # None: calls made without a user
    assert [by_user[k]["calls"] for k in ("u1", "u2", None)] == [3, 4, 3]
    assert by_user["u2"]["errors"] == 1
    assert by_user["u1"]["cost_usd"] == pytest.approx(0.00345)
    assert by_user[None]["latency_ms"] == percentiles([2000.0, 150.0, 50.0])
    assert body["groups"][0]["key"] == "u2"  # the busiest group first


async def test_a_window_includes_only_the_calls_in_it(http: httpx.AsyncClient) -> None:
    params = {
        "from": (OLD - timedelta(minutes=1)).isoformat(),
        "to": (OLD + timedelta(minutes=1)).isoformat(),
        "group_by": "model",
    }
    body = (await http.get("/api/v1/usage", params=params)).json()
    assert [(g["key"], g["calls"], g["cost_usd"]) for g in body["groups"]] == [("small", 1, 1.0)]
    assert body["total"]["latency_ms"] == {"p50": 9999.0, "p95": 9999.0}
    assert body["total"]["prompt_tokens"] == 1000

    # dates: from the start of one day through the end of another (UTC)
    day = OLD.date().isoformat()
    body = (await http.get("/api/v1/usage", params={"from": day, "to": day})).json()
    assert body["total"]["calls"] == 1
    assert body["from"] == f"{day}T00:00:00+00:00"
    # and a window with no calls in it
    params = {"from": "2001-01-01", "to": "2001-01-02T12:00:00Z", "group_by": "task"}
    body = (await http.get("/api/v1/usage", params=params)).json()
    assert body["groups"] == []
    assert body["total"]["calls"] == 0
    assert body["total"]["latency_ms"] == {"p50": None, "p95": None}


async def test_a_zone_offset_moves_the_window(http: httpx.AsyncClient) -> None:
    """The same instant written in another zone selects the same calls."""
    start = (NOW - timedelta(hours=2)).astimezone(timezone(timedelta(hours=9)))
    body = (await http.get("/api/v1/usage", params={"from": start.isoformat()})).json()
    assert body["total"]["calls"] == 10


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"group_by": "colour"}, ["group_by", "role, task, provider, model, user", "colour"]),
        ({"from": "yesterday"}, ["from", "ISO 8601", "yesterday"]),
        ({"to": "2024-13-01"}, ["to", "ISO 8601"]),
        ({"from": "2024-05-02", "to": "2024-05-01"}, ["from must be before to"]),
    ],
)
async def test_bad_parameters_are_422_naming_them(
    http: httpx.AsyncClient, params: dict[str, str], named: list[str]
) -> None:
    response = await http.get("/api/v1/usage", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    for text in named:
        assert text in error["message"]
