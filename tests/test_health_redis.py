"""GET /health says whether the Redis that processes share state through (guards, limits,
revocations, job progress) answers: ok, or down with the error, never the URL's password."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from sparklio.main import create_app
from tests.conftest import make_settings, serving
from tests.servers import free_port
from tests.test_budgets import TEXT
from tests.test_shared_guard import REDIS, prefix

__all__ = ["prefix"]


async def redis_health(http: httpx.AsyncClient) -> dict[str, Any]:
    """/health once its Redis entry says what the first PING found."""
    while True:
        health: dict[str, Any] = (await http.get("/health")).json()
        if health["redis"]["status"] != "unknown":
            return health
        await asyncio.sleep(0.05)  # the test's timeout is the backstop


async def test_health_shows_the_shared_redis_answering(tmp_path: Path, prefix: str) -> None:
    settings = make_settings(sparklio_home=tmp_path / "home", redis_url=REDIS,
                             guard_prefix=prefix, budget_prefix=prefix)  # fmt: skip
    async with serving(create_app(settings)) as http:
        health = await redis_health(http)
    assert health["status"] == "ok"
    assert health["redis"]["status"] == "ok"
    assert health["redis"]["url"] == REDIS and health["redis"]["error"] is None


async def test_health_shows_a_redis_that_is_down_with_its_error_and_no_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there: connections are refused
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    settings = make_settings(sparklio_home=tmp_path / "home", redis_url=url)
    async with serving(create_app(settings)) as http:
        health = await redis_health(http)
        text = (await http.get("/health")).text
        # calls are still answered, each process keeping its guards and limits on its own
        call = await http.post("/api/v1/llm/generate", json=TEXT)
    assert health["redis"]["status"] == "down"
    assert f"127.0.0.1:{port}" in health["redis"]["error"]
    assert health["redis"]["error"].startswith("ConnectionError")
    assert health["redis"]["url"] == f"redis://***@127.0.0.1:{port}/0"
    assert "hunter2" not in text
    assert health["status"] == "ok" and call.status_code == 200


async def test_health_without_redis_says_it_is_off(tmp_path: Path) -> None:
    async with serving(create_app(make_settings(sparklio_home=tmp_path / "home"))) as http:
        health = (await http.get("/health")).json()
    assert health["redis"] == {"status": "off"}
