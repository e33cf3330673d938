"""An image job running on one process shows its live progress on another (REDIS_URL).

Process B is an app in-process with a slow test media provider; process A is a real
`sparklio serve` on the same PostgreSQL and Redis (the test's own key prefix), which never
runs the job: what it shows of the job's progress came through Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sparklio.db.engine import migrate
from sparklio.main import close_app, create_app
from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse, Progress
from sparklio.services.media.providers.registry import MediaRegistry
from tests.conftest import client_for, make_settings
from tests.gateway_process import MARGIN, Server
from tests.pg import PostgresCluster, postgres

__all__ = ["postgres"]  # a fixture, used by name
# each starts `sparklio serve` processes: 25 s each on a busy 2-core machine
pytestmark = pytest.mark.timeout(180)

REDIS = "redis://127.0.0.1:6379/0"
SECRET = "p" * 48
IMAGE = {"prompt": "a red bicycle", "role": "designer", "task": "poster"}


class SlowImages(MediaProvider):
    """Reports progress step by step, for longer than the test looks."""

    @property
    def vendor(self) -> str:
        return "slow"

    async def generate(
        self, prompt: str, role: str, task: str, options: dict[str, Any], progress: Progress
    ) -> MediaProviderResponse:
        for step in range(1000):
            progress(step / 1000, f"step {step}")
            await asyncio.sleep(0.05)
        raise AssertionError("never finishes in a test")


@pytest.fixture
def shared(postgres: PostgresCluster, tmp_path: Path) -> Iterator[tuple[dict[str, str], Server]]:
    """The settings both processes share, and process A."""
    client = redis.Redis.from_url(REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis at {REDIS} ({exc})")
    prefix = f"test:{uuid.uuid4().hex}:media:"
    url = postgres.create_database()
    migrate(url)
    env = {"DATABASE_URL": url, "REDIS_URL": REDIS, "REDIS_MEDIA_PREFIX": prefix,
           "JWT_SECRET": SECRET}  # fmt: skip
    a = Server(tmp_path / "a", **env)
    try:
        yield env, a
    finally:
        a.stop()
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


async def test_a_job_running_on_b_shows_its_live_progress_on_a(
    shared: tuple[dict[str, str], Server], tmp_path: Path
) -> None:
    env, a = shared
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default: [{provider: slow, model: x}]\n"
    )
    registry = MediaRegistry()
    registry.register("slow", SlowImages)
    settings = make_settings(
        llm_routing_file=routes, sparklio_home=tmp_path / "b", database_url=env["DATABASE_URL"],
        redis_url=REDIS, redis_media_prefix=env["REDIS_MEDIA_PREFIX"], jwt_secret=SECRET,
    )  # fmt: skip
    b = create_app(settings, media_registry=registry)
    try:
        async with await client_for(b, "http://b") as on_b:
            job = (await on_b.post("/api/v1/media/generate?wait=0", json=IMAGE)).json()
            path = f"/api/v1/media/jobs/{job['job_id']}"
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{a.port}", headers=dict(on_b.headers), timeout=10
            ) as on_a:
                seen: list[dict[str, Any]] = []
                async with asyncio.timeout(MARGIN):  # a backstop, not a sync
                    while len({s["progress"] for s in seen if s["progress"] > 0}) < 2:
                        answer = await on_a.get(path)
                        assert answer.status_code == 200, answer.text
                        seen.append(answer.json())
                        await asyncio.sleep(0.1)
                local = (await on_b.get(path)).json()
            await on_b.delete(path)  # stop it
    finally:
        await close_app(b)
    moving = [s for s in seen if s["progress"] > 0]
    assert all(s["status"] == "running" for s in moving)
    assert moving[0]["progress"] < moving[-1]["progress"] < 1  # it moves, as it runs on B
    assert moving[-1]["message"].startswith("step ")
    assert local["progress"] >= moving[-1]["progress"]  # A is never ahead of B
