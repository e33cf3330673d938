"""The response cache: a deterministic call asked again is answered without the model, counts
no tokens, and the usage report shows what it saved; what changes the answer changes the key.

Upstreams are fake OpenAI servers (real HTTP servers: `fake.calls` counts what reached the
model); the Redis tests use the real Redis at 127.0.0.1:6379, or start one.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from sparklio.db.engine import make_engine
from sparklio.db.models import LLMCall
from sparklio.exceptions import ConfigError
from sparklio.main import close_app, create_app
from sparklio.services.calllog import CallLog
from sparklio.services.gateway.routing import load_routing_file
from sparklio.services.llm.cache import MemoryCache
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.media.providers.registry import MediaRegistry
from tests.conftest import client_for, make_settings
from tests.fakes import FakeOpenAI, Reply, Status
from tests.live import COPY_SCHEMA, FAST, GOOD_COPY, until
from tests.pg import db_url, postgres

__all__ = ["db_url", "postgres"]  # fixtures, used by name

GENERATE = "/api/v1/llm/generate"
#: gpt-4o-mini is priced, so a hit's saving shows in dollars; `analyst` calls route to gpt-4o,
#: `strategist` calls are never cached (cache_ttl: 0), `reviewer` ones for 60 s
ROUTES = """
version: 1
modes:
  live:
    default:
      - {provider: openai, model: gpt-4o-mini}
    rules:
      - role: analyst
        task: "*"
        candidates: [{provider: openai, model: gpt-4o}]
      - role: strategist
        task: "*"
        cache_ttl: 0
        candidates: [{provider: openai, model: gpt-4o-mini}]
      - role: reviewer
        task: "*"
        cache_ttl: 60
        candidates: [{provider: openai, model: gpt-4o-mini}]
prices:
  openai:
    gpt-4o-mini: {input: 150, output: 600}
"""
#: a text call at temperature 0: deterministic, so cached
TEXT: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "mode": "text",
    "payload": {"product": "Dawon green tea"},
    "options": {"temperature": 0},
}


@asynccontextmanager
async def gateway(
    tmp_path: Path, fake: FakeOpenAI, routes: str = ROUTES, name: str = "a", **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app in live mode on `fake`, with a logged-in client; closed afterwards."""
    path = tmp_path / f"routes-{name}.yaml"
    path.write_text(textwrap.dedent(routes).lstrip(), encoding="utf-8")
    app = create_app(make_settings(
        generator_mode="live", llm_routing_file=path, sparklio_home=tmp_path / f"home-{name}",
        openai_base_url=f"{fake.url}/v1", openai_api_key="sk-test", **{**FAST, **settings},
    ))  # fmt: skip
    try:
        async with await client_for(app) as http:
            yield app, http
    finally:
        await close_app(app)


async def ask(http: httpx.AsyncClient, call: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(GENERATE, json=call)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def options(**extra: Any) -> dict[str, Any]:
    return {**TEXT, "options": {**TEXT["options"], **extra}}


# -- hits and misses -------------------------------------------------------------------------


async def test_a_second_identical_call_is_a_hit_that_counts_no_tokens_and_shows_the_saving(
    tmp_path: Path, db_url: str
) -> None:
    async with FakeOpenAI() as fake, gateway(tmp_path, fake, database_url=db_url) as (app, http):
        first = await ask(http, TEXT)
        second = await ask(http, TEXT)
        assert fake.calls == 1  # the second never reached the model
        await app.state.services.call_log.flush()
        report = (await http.get("/api/v1/usage", params={"group_by": "model"})).json()

    assert first["meta"]["cache"] == "miss"
    assert second["meta"]["cache"] == "hit"
    assert second["output"] == first["output"] == {"text": "Hello from the fake."}
    assert (second["provider"], second["model"]) == ("openai", "gpt-4o-mini")
    assert second["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert second["meta"]["cached_usage"] == first["usage"]
    assert first["usage"]["total_tokens"] == 20
    assert [a["outcome"] for a in second["meta"]["attempts"]] == ["cache_hit"]
    assert second["meta"]["request_id"] != first["meta"]["request_id"]
    assert second["meta"]["latency_ms"] < first["meta"]["latency_ms"]
    # 12 prompt tokens at $150/M and 8 completion tokens at $600/M, paid once
    cost = (12 * 150 + 8 * 600) / 1_000_000
    (group,) = report["groups"]
    for row in (group, report["total"]):
        assert row["calls"] == 2
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 8)
        assert row["cost_usd"] == pytest.approx(cost)
        assert row["cache_hits"] == 1
        assert row["saved_tokens"] == 20
        assert row["saved_usd"] == pytest.approx(cost)


async def test_the_call_log_says_hit_miss_or_nothing(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, gateway(tmp_path, fake) as (app, http):
        await ask(http, TEXT)
        await ask(http, TEXT)
        off = await ask(http, options(temperature=0.7))
        await app.state.services.call_log.flush()
        async with app.state.services.db_sessions() as session:
            rows = (await session.execute(
                select(LLMCall.cache, LLMCall.prompt_tokens, LLMCall.saved_tokens)
                .order_by(LLMCall.created_at)
            )).all()  # fmt: skip
    assert off["meta"]["cache"] == "off"
    assert [tuple(r) for r in rows] == [("miss", 12, 0), ("hit", 0, 20), (None, 12, 0)]


async def test_what_changes_the_answer_is_a_miss_and_what_does_not_is_a_hit(
    tmp_path: Path,
) -> None:
    json_call: dict[str, Any] = {
        **TEXT, "mode": "json", "output_schema": COPY_SCHEMA, "options": {"seed": 7},
    }  # fmt: skip
    wider = {**COPY_SCHEMA, "properties": {**COPY_SCHEMA["properties"], "cta": {"type": "string"}}}
    misses = [
        options(max_tokens=50),  # an option
        options(stop=["###"]),
        {**TEXT, "payload": {"product": "Dawon black tea"}},  # the prompt
        {**TEXT, "role": "analyst"},  # the route: another model
        {**TEXT, "mode": "json"},  # the mode
        json_call,
        {**json_call, "output_schema": wider},  # the schema
    ]
    async with FakeOpenAI(models=["gpt-4o-mini", "gpt-4o"]) as fake:
        fake.default = Reply(GOOD_COPY)
        async with gateway(tmp_path, fake) as (_, http):
            assert (await ask(http, TEXT))["meta"]["cache"] == "miss"
            for call in misses:
                assert (await ask(http, call))["meta"]["cache"] == "miss", call
            assert fake.calls == 1 + len(misses)
            # asked again, each is a hit; a timeout of its own does not change the answer
            for call in [TEXT, *misses, options(timeout=30)]:
                assert (await ask(http, call))["meta"]["cache"] == "hit", call
            assert fake.calls == 1 + len(misses)


async def test_options_cache_false_bypasses_the_cache_and_is_not_sent(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, gateway(tmp_path, fake) as (_, http):
        assert (await ask(http, TEXT))["meta"]["cache"] == "miss"
        bypass = await ask(http, options(cache=False))
        assert (await ask(http, options(cache=True)))["meta"]["cache"] == "hit"
        refused = await http.post(GENERATE, json=options(cache="no"))
    assert bypass["meta"]["cache"] == "off"
    assert fake.calls == 2
    assert all("cache" not in call.body for call in fake.model_calls())
    assert refused.status_code == 422
    assert "options.cache must be true or false" in refused.json()["error"]["message"]


async def test_only_deterministic_calls_are_cached(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, gateway(tmp_path, fake) as (_, http):
        warm = [await ask(http, options(temperature=0.7)) for _ in range(2)]
        plain = [await ask(http, {**TEXT, "options": {}}) for _ in range(2)]
        assert fake.calls == 4
        seeded = [await ask(http, options(temperature=0.7, seed=42)) for _ in range(2)]
        assert fake.calls == 5
    assert [b["meta"]["cache"] for b in warm + plain] == ["off"] * 4
    assert [b["meta"]["cache"] for b in seeded] == ["miss", "hit"]


async def test_errors_and_cut_off_answers_are_never_stored(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, gateway(tmp_path, fake, llm_max_retries=0) as (_, http):
        fake.then(Status(500), Reply(finish="length"))
        failed = await http.post(GENERATE, json=TEXT)
        cut = await ask(http, TEXT)
        whole = await ask(http, TEXT)
        again = await ask(http, TEXT)
    assert failed.status_code == 502
    assert cut["meta"]["truncated"] is True and cut["meta"]["cache"] == "miss"
    assert whole["meta"]["cache"] == "miss"  # the cut-off answer was not kept
    assert again["meta"]["cache"] == "hit" and "truncated" not in again["meta"]
    assert fake.calls == 3


# -- time to live ----------------------------------------------------------------------------


async def test_an_entry_expires_after_its_ttl(tmp_path: Path) -> None:
    now = [1000.0]
    async with FakeOpenAI() as fake, gateway(tmp_path, fake, cache_ttl=30) as (app, http):
        # the in-memory cache on a clock the test moves (the gateway takes any ResponseCache)
        app.state.services.gateway.cache = MemoryCache(100, clock=lambda: now[0])
        await ask(http, TEXT)
        reviewer = {**TEXT, "role": "reviewer"}  # its route keeps answers 60 s
        await ask(http, reviewer)
        now[0] += 29.9
        assert (await ask(http, TEXT))["meta"]["cache"] == "hit"
        now[0] += 0.1
        assert (await ask(http, TEXT))["meta"]["cache"] == "miss"  # CACHE_TTL is over
        assert (await ask(http, reviewer))["meta"]["cache"] == "hit"  # 60 s is not
        now[0] += 30
        assert (await ask(http, reviewer))["meta"]["cache"] == "miss"
    assert fake.calls == 4


async def test_cache_ttl_zero_turns_the_cache_off_for_a_route_or_everywhere(
    tmp_path: Path,
) -> None:
    strategist = {**TEXT, "role": "strategist"}  # cache_ttl: 0
    reviewer = {**TEXT, "role": "reviewer"}  # cache_ttl: 60
    async with FakeOpenAI() as fake:
        async with gateway(tmp_path, fake) as (_, http):
            assert [(await ask(http, strategist))["meta"]["cache"] for _ in range(2)] == [
                "off", "off"
            ]  # fmt: skip
        async with gateway(tmp_path, fake, name="b", cache_ttl=0) as (_, http):
            assert [(await ask(http, TEXT))["meta"]["cache"] for _ in range(2)] == ["off", "off"]
            # a route's own cache_ttl beats CACHE_TTL
            assert [(await ask(http, reviewer))["meta"]["cache"] for _ in range(2)] == [
                "miss", "hit"
            ]  # fmt: skip


async def test_a_modes_cache_ttl_covers_its_rules_without_one(tmp_path: Path) -> None:
    routes = """
    version: 1
    modes:
      live:
        cache_ttl: 0
        default: [{provider: openai, model: gpt-4o-mini}]
        rules:
          - {role: reviewer, task: "*", cache_ttl: 5, candidates: [{provider: openai, model: m}]}
          - {role: analyst, task: "*", candidates: [{provider: openai, model: m}]}
    """
    async with (
        FakeOpenAI(models=["gpt-4o-mini", "m"]) as fake,
        gateway(tmp_path, fake, routes) as (_, http),
    ):
        seen = {
            role: [(await ask(http, {**TEXT, "role": role}))["meta"]["cache"] for _ in "12"]
            for role in ("copywriter", "reviewer", "analyst")
        }
    assert seen == {"copywriter": ["off", "off"], "reviewer": ["miss", "hit"],
                    "analyst": ["off", "off"]}  # fmt: skip


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            """
            version: 1
            modes:
              mock:
                default: [{provider: mock, model: m}]
                rules:
                  - {role: copywriter, task: "*", cache_ttl: -5, candidates: [{provider: mock, model: m}]}
            """,  # noqa: E501
            "line 6, key modes.mock.rules.0.cache_ttl: Input should be greater than or equal "
            "to 0 (got -5)",
        ),
        (
            """
            version: 1
            modes:
              mock:
                cache_ttl: soon
                default: [{provider: mock, model: m}]
            """,
            "line 4, key modes.mock.cache_ttl: Input should be a valid number",
        ),
        (
            """
            version: 1
            modes:
              mock:
                default: [{provider: mock, model: m}]
            media:
              modes:
                mock:
                  cache_ttl: 60
                  default: [{provider: mock, model: x}]
            """,
            "line 8, key media.modes.mock.cache_ttl: cache_ttl applies to model calls only",
        ),
    ],
)
def test_a_bad_cache_ttl_is_refused_at_start_with_its_line(
    tmp_path: Path, routes: str, message: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(routes).lstrip(), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_routing_file(path, ProviderRegistry().names(), MediaRegistry().names())
    assert message in str(caught.value)


# -- the in-memory cache ---------------------------------------------------------------------


async def test_the_in_memory_cache_keeps_the_most_recently_used_entries() -> None:
    cache = MemoryCache(2)
    await cache.put("a", b"1", 60)
    await cache.put("b", b"2", 60)
    assert await cache.get("a") == b"1"  # a is now the most recent
    await cache.put("c", b"3", 60)
    assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (b"1", None, b"3")
    assert cache.stats()["entries"] == 2


async def test_mock_mode_answers_a_repeated_call_from_the_cache(tmp_path: Path) -> None:
    app = create_app(make_settings(sparklio_home=tmp_path / "home"))
    try:
        async with await client_for(app) as http:
            call = {**TEXT, "mode": "json", "output_schema": COPY_SCHEMA}
            first, second = await ask(http, call), await ask(http, call)
            health = (await http.get("/health")).json()
    finally:
        await close_app(app)
    assert (first["meta"]["cache"], second["meta"]["cache"]) == ("miss", "hit")
    assert second["output"] == first["output"]
    assert health["cache"] == {"backend": "memory", "status": "ok", "entries": 1,
                               "max_entries": 10_000}  # fmt: skip


# -- the call log's spill file ---------------------------------------------------------------


async def test_spilled_records_keep_their_cache_columns_and_old_ones_replay_too(
    tmp_path: Path, db_url: str
) -> None:
    spill = tmp_path / "calllog" / "calls.jsonl"
    spill.parent.mkdir(parents=True)
    base = {"request_id": "r", "role": "copywriter", "task": "t", "generator_mode": "live",
            "provider": "openai", "model": "gpt-4o-mini", "outcome": "ok", "status_code": 200,
            "latency_ms": 0.4, "created_at": "2026-12-01T10:00:00+00:00"}  # fmt: skip
    hit = {**base, "id": "hit", "cache": "hit", "saved_tokens": 20, "saved_usd": 0.0066}
    old = {**base, "id": "old", "prompt_tokens": 12}  # spilled by a gateway before 0002
    spill.write_bytes(orjson.dumps(hit) + b"\n" + orjson.dumps(old) + b"\n")
    engine = make_engine(db_url)
    log = CallLog(engine, spill, buffer_size=10, flush_interval=0.05)
    try:
        await log.start()
        await until(lambda: log.stats()["written"] == 2)
        async with engine.connect() as connection:
            rows = (await connection.execute(
                select(LLMCall.id, LLMCall.cache, LLMCall.saved_tokens, LLMCall.saved_usd,
                       LLMCall.prompt_tokens).order_by(LLMCall.id)
            )).all()  # fmt: skip
    finally:
        await log.aclose()
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("hit", "hit", 20, 0.0066, 0), ("old", None, 0, 0.0, 12)]


# -- Redis -----------------------------------------------------------------------------------


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The Redis at 127.0.0.1:6379, or one started for the session when none answers."""
    if _answers(6379):
        yield 6379
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no Redis answers at 127.0.0.1:6379 and redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def redis_prefix(redis_port: int) -> AsyncIterator[tuple[str, str, Redis]]:
    """(REDIS_URL, a key prefix of this test's own, a client); the test's keys are deleted."""
    url = f"redis://127.0.0.1:{redis_port}/0"
    prefix = f"sparklio-test:{uuid.uuid4().hex}:"
    client = Redis.from_url(url)
    try:
        yield url, prefix, client
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_two_gateways_on_one_redis_share_their_answers(
    tmp_path: Path, redis_prefix: tuple[str, str, Redis]
) -> None:
    url, prefix, client = redis_prefix
    shared = {"redis_url": url, "cache_prefix": prefix}
    async with (
        FakeOpenAI() as fake,
        gateway(tmp_path, fake, name="a", **shared) as (_, a),
        gateway(tmp_path, fake, name="b", **shared) as (_, b),
    ):
        first = await ask(a, TEXT)
        second = await ask(b, TEXT)
        health = (await a.get("/health")).json()
    assert (first["meta"]["cache"], second["meta"]["cache"]) == ("miss", "hit")
    assert second["output"] == first["output"]
    assert fake.calls == 1
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    assert len(keys) == 1
    ttl = await client.pttl(keys[0])
    assert 3_500_000 < ttl <= 3_600_000  # CACHE_TTL's hour
    assert health["cache"]["backend"] == "redis" and health["cache"]["status"] == "ok"


async def test_a_redis_entry_expires_with_its_routes_ttl(
    tmp_path: Path, redis_prefix: tuple[str, str, Redis]
) -> None:
    url, prefix, client = redis_prefix
    routes = ROUTES.replace("cache_ttl: 60", "cache_ttl: 0.2")
    reviewer = {**TEXT, "role": "reviewer"}
    async with (
        FakeOpenAI() as fake,
        gateway(tmp_path, fake, routes, redis_url=url, cache_prefix=prefix) as (_, http),
    ):
        assert (await ask(http, reviewer))["meta"]["cache"] == "miss"
        (key,) = [key async for key in client.scan_iter(match=prefix + "*")]
        # Redis expires it on its own clock: wait for that, not for a time of the test's own
        while await client.exists(key):  # noqa: ASYNC110 - nothing to wait on but Redis
            await asyncio.sleep(0.02)
        assert (await ask(http, reviewer))["meta"]["cache"] == "miss"
    assert fake.calls == 2


async def test_a_redis_that_is_down_leaves_calls_answered_as_misses_quickly(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with FakeOpenAI() as fake:
        down = {"redis_url": f"redis://127.0.0.1:{port}/0"}
        async with gateway(tmp_path, fake, **down) as (_, http):
            started = time.perf_counter()
            answers = [await ask(http, TEXT) for _ in range(5)]
            took = time.perf_counter() - started
            health = (await http.get("/health")).json()
    assert [a["meta"]["cache"] for a in answers] == ["miss"] * 5
    assert fake.calls == 5
    assert took < 5  # REDIS_TIMEOUT is 0.1 s, and Redis is then left alone for 5 s
    assert health["status"] == "ok"  # calls are served: only the cache is away
    assert health["cache"]["status"] == "unreachable"
    assert "Connection" in health["cache"]["last_error"]
