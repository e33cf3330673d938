"""With REDIS_URL, an endpoint's concurrency limit and circuit breaker hold across every
gateway process on that Redis: two gateways in one test process (each with its own Redis
connection and guards, as two workers have), and two real `sparklio serve` processes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from sparklio.db.engine import migrate
from tests.fakes import FakeOllama, FakeOpenAI, Held, Reply, Status
from tests.gateway_process import ROOT, Process, Server, health
from tests.live import CALL, GOOD_COPY, live_gateway, until
from tests.pg import PostgresCluster, postgres
from tests.servers import free_port

__all__ = ["postgres"]

REDIS = "redis://127.0.0.1:6379/0"
ONE_OLLAMA = 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}'
OLLAMA_THEN_OPENAI = """
default:
  - {provider: ollama, model: "qwen2.5:7b"}
  - {provider: openai, model: gpt-4o-mini}
"""

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test:{uuid.uuid4().hex}:"
    yield name
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(match=f"{name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def until_true(check: Callable[[], Awaitable[bool]]) -> None:
    """`tests.live.until` for a condition that asks a server (the test's timeout is the
    backstop)."""
    while not await check():  # noqa: ASYNC110 - a server's state has no event to wait on
        await asyncio.sleep(0.01)


def made(path: Path) -> Path:
    path.mkdir()
    return path


def outcomes(body: dict[str, Any]) -> list[str]:
    return [f"{a['provider']}:{a['outcome']}" for a in body["meta"]["attempts"]]


def endpoint(health: dict[str, Any], name: str = "ollama") -> dict[str, Any]:
    state: dict[str, Any] = health["endpoints"].get(name, {"in_flight": 0, "waiting": 0})
    return state


async def test_two_gateways_on_one_redis_never_exceed_the_limit_together(
    tmp_path: Path, prefix: str
) -> None:
    gate = asyncio.Event()
    shared = {"redis_url": REDIS, "guard_prefix": prefix, "ollama_max_concurrency": 2}
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        settings = {**shared, "ollama_base_url": ollama.url}
        async with (
            live_gateway(made(tmp_path / "a"), ONE_OLLAMA, **settings) as (app_a, http_a),
            live_gateway(made(tmp_path / "b"), ONE_OLLAMA, **settings) as (app_b, http_b),
        ):
            calls = [asyncio.create_task((http_a, http_b)[i % 2].post(
                "/api/v1/llm/generate", json=CALL)) for i in range(50)]  # fmt: skip
            guards = [app.state.services.gateway.endpoints for app in (app_a, app_b)]

            def waiting() -> int:
                return sum(int(g.snapshot().get("ollama", {}).get("waiting", 0)) for g in guards)

            # every answer is held until all 50 calls are sent or in line: 2 sent, 48 in line
            await until(lambda: waiting() + ollama.calls == 50)
            assert ollama.max_in_flight == 2
            gate.set()
            responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 50
    assert ollama.max_in_flight == 2
    assert ollama.calls == 50


async def test_the_shared_line_is_bounded_and_turns_the_rest_away(
    tmp_path: Path, prefix: str
) -> None:
    gate = asyncio.Event()
    settings = {"redis_url": REDIS, "guard_prefix": prefix, "ollama_max_concurrency": 1,
                "llm_max_queue": 3}  # fmt: skip
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        settings["ollama_base_url"] = ollama.url
        async with (
            live_gateway(made(tmp_path / "a"), ONE_OLLAMA, **settings) as (_, http_a),
            live_gateway(made(tmp_path / "b"), ONE_OLLAMA, **settings) as (_, http_b),
        ):
            calls = [asyncio.create_task((http_a, http_b)[i % 2].post(
                "/api/v1/llm/generate", json=CALL)) for i in range(10)]  # fmt: skip
            # 1 in flight and 3 in the one line both gateways share: the other 6 are refused
            await until(lambda: sum(c.done() for c in calls) == 6)
            gate.set()
            responses = await asyncio.gather(*calls)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 4 and statuses.count(503) == 6
    assert ollama.max_in_flight == 1


async def test_a_circuit_opened_on_one_gateway_is_skipped_by_the_other(
    tmp_path: Path, prefix: str
) -> None:
    settings: dict[str, Any] = {"redis_url": REDIS, "guard_prefix": prefix,
                                "llm_breaker_failures": 2, "llm_breaker_cooldown": 60,
                                "llm_max_retries": 0, "openai_api_key": "sk-test"}  # fmt: skip
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.then(Reply(GOOD_COPY))  # b's first call: b has used the endpoint
        ollama.default = Status(500)
        openai.default = Reply(GOOD_COPY)
        settings |= {"ollama_base_url": ollama.url, "openai_base_url": f"{openai.url}/v1"}
        async with (
            live_gateway(made(tmp_path / "a"), OLLAMA_THEN_OPENAI, **settings) as (_, http_a),
            live_gateway(made(tmp_path / "b"), OLLAMA_THEN_OPENAI, **settings) as (_, http_b),
        ):
            first = await http_b.post("/api/v1/llm/generate", json=CALL)
            assert outcomes(first.json()) == ["ollama:ok"]
            for _ in range(2):  # two failures in a row on a: its circuit opens
                answer = await http_a.post("/api/v1/llm/generate", json=CALL)
                assert outcomes(answer.json()) == ["ollama:http_500", "openai:ok"]
            assert endpoint((await http_a.get("/health")).json())["circuit"] == "open"
            called = ollama.calls

            async def b_sees_it_open() -> bool:
                return endpoint((await http_b.get("/health")).json())["circuit"] == "open"

            await until_true(b_sees_it_open)
            answer = await http_b.post("/api/v1/llm/generate", json=CALL)
    assert answer.status_code == 200
    assert outcomes(answer.json()) == ["ollama:circuit_open", "openai:ok"]
    assert ollama.calls == called  # b never called the endpoint a found broken


async def test_a_redis_that_does_not_answer_leaves_each_gateway_its_own_limit(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        async with live_gateway(tmp_path, ONE_OLLAMA, redis_url=nowhere, guard_prefix=prefix,
                                ollama_base_url=ollama.url,
                                ollama_max_concurrency=2) as (app, http):  # fmt: skip
            calls = [asyncio.create_task(http.post("/api/v1/llm/generate", json=CALL))
                     for _ in range(10)]  # fmt: skip
            guards = app.state.services.gateway.endpoints
            await until(lambda: guards.snapshot().get("ollama", {}).get("waiting") == 8)
            gate.set()
            responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 10
    assert ollama.max_in_flight == 2
    warnings = [r.message for r in caplog.records if "Redis does not answer" in r.message]
    assert len(warnings) == 1  # once, not per call


async def test_a_redis_that_never_answers_costs_a_bounded_wait_not_a_hang(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # a port that takes connections (the listen backlog) and never answers a command
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    nowhere = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    try:
        async with FakeOllama() as ollama:
            ollama.default = Reply(GOOD_COPY)
            async with live_gateway(tmp_path, ONE_OLLAMA, redis_url=nowhere, guard_prefix=prefix,
                                    guard_timeout=0.2, ollama_base_url=ollama.url,
                                    ollama_max_concurrency=2) as (_, http):  # fmt: skip
                responses = await asyncio.gather(
                    *(http.post("/api/v1/llm/generate", json=CALL) for _ in range(5))
                )
    finally:
        silent.close()
    assert [r.status_code for r in responses] == [200] * 5
    assert ollama.max_in_flight <= 2
    warnings = [r.message for r in caplog.records if "Redis does not answer" in r.message]
    assert len(warnings) == 1 and "TimeoutError" in warnings[0]


async def test_slots_held_by_a_process_that_died_come_back_when_their_leases_lapse(
    tmp_path: Path, prefix: str
) -> None:
    async with FakeOllama() as ollama:
        ollama.default = Reply(GOOD_COPY)
        async with live_gateway(tmp_path, ONE_OLLAMA, redis_url=REDIS, guard_prefix=prefix,
                                ollama_base_url=ollama.url,
                                ollama_max_concurrency=2) as (_, http):  # fmt: skip
            # the slots are taken once the gateway is up (its start took longer than a short
            # lease on a busy machine), by a process that died holding both: nobody gives
            # them back
            redis = aioredis.Redis.from_url(REDIS)
            seconds, micros = await redis.time()
            lapse = seconds * 1000 + micros // 1000 + 1000  # Redis's clock, as leases use
            await redis.zadd(f"{prefix}ollama:holders", {"dead-1": lapse, "dead-2": lapse})
            await redis.aclose()
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    assert response.json()["meta"]["queue_ms"] > 0  # it waited for the leases, then ran


# -- two real `sparklio serve` processes ---------------------------------------------------


def serve_two(
    tmp_path: Path, postgres: PostgresCluster, routes: str, **settings: str
) -> tuple[list[Server], str]:
    """Two `sparklio serve` processes on one PostgreSQL (a new database) and one Redis, and
    the member's API key (the admin's: `keys_of(tmp_path)`). In live mode unless
    `GENERATOR_MODE` says otherwise."""
    url = postgres.create_database()
    migrate(url)
    settings = {**settings, "DATABASE_URL": url}
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "routes.yaml"
    path.write_text(routes, encoding="utf-8")
    env = {"GENERATOR_MODE": "live", **settings, "LLM_ROUTING_FILE": str(path)}
    made = subprocess.run([sys.executable, "-m", "sparklio.cli", "create-test-users"],
                          cwd=ROOT, env={**_environ(home), **env}, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    servers: list[Server] = []
    for _ in range(2):
        servers.append(Server(home, **env))
    return servers, keys_of(tmp_path)["member"]


def keys_of(tmp_path: Path) -> dict[str, str]:
    """The API key of each test user `serve_two` or `serve_workers` made, by role."""
    users = json.loads((tmp_path / "home" / "test-users.json").read_text())
    return {user["role"]: user["api_key"] for user in users}


def _environ(home: Path) -> dict[str, str]:
    from tests.gateway_process import sparklio_env

    return sparklio_env(home)


def live_routes(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return f"version: 1\nmodes:\n  live:\n{indented}\n"


async def test_two_serve_processes_share_the_limit_of_2_under_50_calls(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        servers, key = await asyncio.to_thread(
            serve_two, tmp_path, postgres, live_routes(ONE_OLLAMA), REDIS_URL=REDIS,
            GUARD_PREFIX=prefix,
            OLLAMA_BASE_URL=ollama.url, OLLAMA_MAX_CONCURRENCY="2", LLM_MAX_QUEUE="64",
        )  # fmt: skip
        try:
            clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=120,
                                         headers={"Authorization": f"Bearer {key}"})
                       for s in servers]  # fmt: skip
            calls = [asyncio.create_task(clients[i % 2].post("/api/v1/llm/generate", json=CALL))
                     for i in range(50)]  # fmt: skip

            async def waiting() -> int:
                states = [endpoint((await c.get("/health")).json()) for c in clients]
                return sum(int(s["waiting"]) for s in states)

            # every answer is held until all 50 calls are sent or in line
            async def all_in() -> bool:
                return ollama.calls + await waiting() == 50

            await until_true(all_in)
            gate.set()
            responses = await asyncio.gather(*calls)
            for client in clients:
                await client.aclose()
        finally:
            for server in servers:
                await asyncio.to_thread(server.stop)
    assert [r.status_code for r in responses] == [200] * 50, responses[0].text
    assert ollama.max_in_flight == 2  # the upstream's own count
    assert ollama.calls == 50


async def test_a_circuit_opened_through_one_serve_process_is_skipped_by_the_other(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.then(Reply(GOOD_COPY))  # B's first call: B has used the endpoint
        ollama.default = Status(500)
        openai.default = Reply(GOOD_COPY)
        servers, key = await asyncio.to_thread(
            serve_two, tmp_path, postgres, live_routes(OLLAMA_THEN_OPENAI), REDIS_URL=REDIS,
            GUARD_PREFIX=prefix, OLLAMA_BASE_URL=ollama.url, OPENAI_BASE_URL=f"{openai.url}/v1",
            OPENAI_API_KEY="sk-test", LLM_BREAKER_FAILURES="2", LLM_BREAKER_COOLDOWN="60",
            LLM_MAX_RETRIES="0",
        )  # fmt: skip
        try:
            a, b = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=120,
                                      headers={"Authorization": f"Bearer {key}"})
                    for s in servers)  # fmt: skip
            first = await b.post("/api/v1/llm/generate", json=CALL)
            assert outcomes(first.json()) == ["ollama:ok"]
            for _ in range(2):
                answer = await a.post("/api/v1/llm/generate", json=CALL)
                assert outcomes(answer.json()) == ["ollama:http_500", "openai:ok"]
            called = ollama.calls

            async def b_sees_it_open() -> bool:
                return endpoint((await b.get("/health")).json())["circuit"] == "open"

            await until_true(b_sees_it_open)
            answer = await b.post("/api/v1/llm/generate", json=CALL)
            await a.aclose()
            await b.aclose()
        finally:
            for server in servers:
                await asyncio.to_thread(server.stop)
    assert answer.status_code == 200
    assert outcomes(answer.json()) == ["ollama:circuit_open", "openai:ok"]
    assert ollama.calls == called


async def test_two_workers_of_one_serve_share_the_limit(tmp_path: Path, prefix: str) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        server, key = await asyncio.to_thread(
            serve_workers, tmp_path, live_routes(ONE_OLLAMA), 2, REDIS_URL=REDIS,
            GUARD_PREFIX=prefix, OLLAMA_BASE_URL=ollama.url, OLLAMA_MAX_CONCURRENCY="2",
            LLM_MAX_QUEUE="64",
        )  # fmt: skip
        redis = aioredis.Redis.from_url(REDIS)
        try:
            assert len(worker_pids(server.pid)) == 2
            # 50 connections at once: the kernel hands them to both workers
            url, auth = f"http://127.0.0.1:{server.port}", {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=url, timeout=120, headers=auth) as http:
                calls = [asyncio.create_task(http.post("/api/v1/llm/generate", json=CALL))
                         for _ in range(50)]  # fmt: skip

                async def all_in() -> bool:
                    # the line is in Redis, whichever worker each call reached
                    waiting = await redis.zcard(f"{prefix}ollama:waiting")
                    return ollama.calls + waiting == 50 or ollama.calls > 2  # (a broken limit)

                await until_true(all_in)
                gate.set()
                responses = await asyncio.gather(*calls)
        finally:
            await redis.aclose()
            await asyncio.to_thread(server.stop)
    assert [r.status_code for r in responses] == [200] * 50, responses[0].text
    assert ollama.max_in_flight == 2  # the upstream's own count
    assert ollama.calls == 50


class Served(Process):
    """`sparklio serve --workers N` in a subprocess."""

    def __init__(self, home: Path, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        args = ["serve", "--port", str(self.port), "--workers", str(workers)]
        log = home.parent / f"serve-{self.port}.log"
        super().__init__(args, {**_environ(home), **env}, log)
        self.wait_until(
            lambda: health(self.port) == 200 and len(worker_pids(self.pid)) >= workers,
            f"sparklio serve --workers {workers}",
        )


def serve_workers(
    tmp_path: Path, routes: str | None, workers: int, **settings: str
) -> tuple[Served, str]:
    """`sparklio serve --workers N`, and the member's API key. In live mode on `routes`
    unless `GENERATOR_MODE` says otherwise; `routes` None: the packaged routing file."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"GENERATOR_MODE": "live", **settings}
    if routes is not None:
        path = tmp_path / "routes.yaml"
        path.write_text(routes, encoding="utf-8")
        env["LLM_ROUTING_FILE"] = str(path)
    made = subprocess.run([sys.executable, "-m", "sparklio.cli", "create-test-users"],
                          cwd=ROOT, env={**_environ(home), **env}, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return Served(home, workers, env), keys_of(tmp_path)["member"]


def worker_pids(parent: int) -> list[int]:
    """The processes `parent` started (granian's workers)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []
