"""Endpoints in the routing file: several servers of one kind, calls spread over the ones
that serve a model, failover when one stops, keys by environment variable, and the listing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.exceptions import ConfigError
from sparklio.main import close_app, create_app
from sparklio.services.gateway.routing import load_routing_file
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.media.providers.registry import MediaRegistry
from tests.conftest import client_for, make_settings
from tests.fakes import FakeOllama, FakeOpenAI, Held, Reply, refused_url
from tests.live import CALL, FAST, GOOD_COPY, until

MODEL = "qwen2.5:14b"


def two_ollamas(desktop: str, mini: str, limit: int = 8) -> str:
    return f"""version: 1
providers:
  ollama-desktop: {{kind: ollama, base_url: "{desktop}", max_concurrency: {limit}}}
  ollama-mini: {{kind: ollama, base_url: "{mini}", max_concurrency: {limit}}}
modes:
  live:
    default:
      - {{model: "{MODEL}", endpoints: [ollama-desktop, ollama-mini]}}
"""


@asynccontextmanager
async def gateway(
    tmp_path: Path, routing: str, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    path = tmp_path / "routing.yaml"
    path.write_text(routing, encoding="utf-8")
    app = create_app(make_settings(generator_mode="live", llm_routing_file=path,
                                   **{**FAST, **settings}))  # fmt: skip
    try:
        async with await client_for(app) as http:
            yield app, http
    finally:
        await close_app(app)


async def calls(http: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    return list(
        await asyncio.gather(*(http.post("/api/v1/llm/generate", json=CALL) for _ in range(count)))
    )


def answered_by(responses: list[httpx.Response]) -> dict[str, int]:
    found: dict[str, int] = {}
    for response in responses:
        assert response.status_code == 200, response.text
        found[response.json()["provider"]] = found.get(response.json()["provider"], 0) + 1
    return found


async def test_calls_for_one_model_spread_over_the_endpoints_that_serve_it(
    tmp_path: Path,
) -> None:
    async with FakeOllama() as desktop, FakeOllama() as mini:
        for fake in (desktop, mini):
            fake.default = Reply(GOOD_COPY, delay=0.05)
        async with gateway(tmp_path, two_ollamas(desktop.url, mini.url)) as (_, http):
            responses = await calls(http, 100)
    counts = answered_by(responses)
    assert counts.keys() == {"ollama-desktop", "ollama-mini"}
    assert min(counts.values()) >= 30, counts  # spread, not all on the first
    assert desktop.calls + mini.calls == 100  # no call was sent twice
    assert max(desktop.max_in_flight, mini.max_in_flight) <= 8  # each endpoint's own limit
    first = responses[0].json()
    assert first["model"] == MODEL and first["meta"]["fallback"] is False


async def test_stopping_one_endpoint_sends_everything_to_the_other_with_no_failed_call(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as desktop:
        desktop.default = Held(Reply(GOOD_COPY), gate)  # answers once the other is stopped
        mini = FakeOllama()
        await mini.__aenter__()
        mini.default = Reply(GOOD_COPY, delay=60)  # answers nothing before it is stopped
        routing = two_ollamas(desktop.url, mini.url, limit=100)
        async with gateway(tmp_path, routing) as (_, http):
            running = asyncio.gather(*(http.post("/api/v1/llm/generate", json=CALL)
                                       for _ in range(100)))  # fmt: skip
            await until(lambda: desktop.calls + mini.calls == 100)  # every call is in flight
            on_mini = mini.calls
            await mini.__aexit__(None, None, None)  # stopped, mid-answer
            gate.set()
            during = list(await running)
            after = await calls(http, 100)  # and calls that start after it stopped
            health = (await http.get("/health")).json()["endpoints"]
    assert on_mini >= 30  # it had its share of the calls when it stopped
    assert answered_by(during) == {"ollama-desktop": 100}
    assert answered_by(after) == {"ollama-desktop": 100}
    cut = [a for r in during for a in r.json()["meta"]["attempts"] if a["outcome"] != "ok"]
    assert len(cut) >= on_mini and {a["provider"] for a in cut} == {"ollama-mini"}
    assert {a["outcome"] for a in cut} <= {"stream_error", "connection_refused"}
    # after five failures in a row the stopped endpoint is skipped without a try
    assert health["ollama-mini"]["circuit"] == "open"
    late = after[-1].json()["meta"]["attempts"]
    assert [a["outcome"] for a in late] == ["ok"] and late[0]["provider"] == "ollama-desktop"


async def test_a_fallback_goes_to_a_second_server_of_the_same_kind(tmp_path: Path) -> None:
    routing = f"""version: 1
providers:
  ollama-desktop: {{kind: ollama, base_url: "{refused_url()}"}}
  ollama-mini: {{kind: ollama, base_url: "%s"}}
modes:
  live:
    default:
      - {{provider: ollama-desktop, model: "{MODEL}"}}
      - {{provider: ollama-mini, model: "qwen2.5:7b"}}
"""
    async with FakeOllama() as mini:
        mini.default = Reply(GOOD_COPY)
        async with gateway(tmp_path, routing % mini.url) as (_, http):
            response = await http.post("/api/v1/llm/generate", json=CALL)
    body = response.json()
    assert response.status_code == 200, body
    assert body["provider"] == "ollama-mini" and body["model"] == "qwen2.5:7b"
    assert [(a["provider"], a["outcome"]) for a in body["meta"]["attempts"]] == [
        ("ollama-desktop", "connection_refused"),
        ("ollama-mini", "ok"),
    ]
    assert body["meta"]["fallback"] is True


async def test_an_endpoint_key_comes_from_the_environment_variable_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKLIO_TEST_VLLM_KEY", "sk-vllm-test")
    routing = """version: 1
providers:
  vllm: {kind: openai, base_url: "%s/v1", api_key_env: SPARKLIO_TEST_VLLM_KEY, timeout: 7}
  openai-nokey: {kind: openai, base_url: "https://api.openai.com/v1",
                 api_key_env: SPARKLIO_TEST_UNSET_KEY}
modes:
  live:
    default:
      - {provider: openai-nokey, model: gpt-4o-mini}
      - {provider: vllm, model: gpt-4o-mini}
"""
    monkeypatch.delenv("SPARKLIO_TEST_UNSET_KEY", raising=False)
    async with FakeOpenAI(api_key="sk-vllm-test") as fake:
        fake.default = Reply(GOOD_COPY)
        async with gateway(tmp_path, routing % fake.url) as (_, http):
            response = await http.post("/api/v1/llm/generate", json=CALL)
            listing = (await http.get("/api/v1/llm/providers")).json()["providers"]
    body = response.json()
    assert response.status_code == 200, body
    assert body["provider"] == "vllm"
    outcomes = [(a["provider"], a["outcome"]) for a in body["meta"]["attempts"]]
    assert outcomes == [("openai-nokey", "unavailable"), ("vllm", "ok")]
    assert fake.model_calls()[0].headers["authorization"] == "Bearer sk-vllm-test"
    rows = {row["name"]: row for row in listing}
    assert rows["openai-nokey"]["available"] is False
    assert "SPARKLIO_TEST_UNSET_KEY is not set" in rows["openai-nokey"]["message"]
    assert rows["vllm"]["kind"] == "openai" and rows["vllm"]["base_url"] == f"{fake.url}/v1"
    assert "sk-vllm-test" not in json.dumps(listing)


async def test_the_providers_listing_shows_each_endpoint_with_health_and_load(
    tmp_path: Path,
) -> None:
    async with FakeOllama() as desktop:
        routing = two_ollamas(desktop.url, refused_url(), limit=2)
        async with gateway(tmp_path, routing) as (_, http):
            listing = (await http.get("/api/v1/llm/providers")).json()["providers"]
    rows = {row["name"]: row for row in listing}
    assert {"ollama-desktop", "ollama-mini"} <= rows.keys()
    desktop_row, mini_row = rows["ollama-desktop"], rows["ollama-mini"]
    assert desktop_row["kind"] == "ollama" and desktop_row["base_url"] == desktop.url
    assert desktop_row["available"] is True and desktop_row["models_named"] == [MODEL]
    assert desktop_row["circuit"] == "closed"
    assert (desktop_row["in_flight"], desktop_row["max_concurrency"]) == (0, 2)
    assert mini_row["available"] is False and "connection refused" in mini_row["message"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("gpu2: {base_url: 'http://gpu2:11434'}", "endpoint 'gpu2' needs a kind"),
        ("gpu2: {kind: olama}", "unknown provider kind 'olama'"),
        ("gpu2: {kind: openai, api_key: sk-123}", "a key never goes in the routing file"),
        ("gpu2: {kind: ollama, base_url: 'desktop:11434'}", "key providers.gpu2.base_url"),
        ("GPU2: {kind: ollama}", "endpoint names are lowercase"),
        ("llamacpp: {models: {m: {nope: 1}}}", "llamacpp settings are invalid"),
    ],
)
def test_a_bad_endpoint_entry_stops_the_start_and_says_why(
    tmp_path: Path, entry: str, expected: str
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        f"version: 1\nproviders:\n  {entry}\nmodes:\n  mock:\n    default:\n"
        "      - {provider: mock, model: m}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=expected):
        create_app(make_settings(llm_routing_file=path))


def test_a_candidate_names_a_declared_endpoint_or_a_kind(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        """version: 1
providers:
  gpu1: {kind: comfyui, base_url: "http://gpu1:8188"}
modes:
  mock:
    default:
      - {provider: ollama, model: m}
      - {endpoints: [ollama, gpu1], model: m}
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_routing_file(path, ProviderRegistry().names(), MediaRegistry().names())
    # an image endpoint cannot serve model calls, and the message says where it is named
    assert "line 8, key modes.mock.default.1.endpoints: unknown provider 'gpu1'" in str(
        caught.value
    )
