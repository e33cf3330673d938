"""Retries, fallbacks, JSON repair, the circuit breaker and the concurrency limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparklio.services.gateway.guard import CircuitBreaker
from tests.fakes import FakeOllama, FakeOpenAI, Held, Reply, Status, refused_url
from tests.live import CALL, GOOD_COPY, live_gateway, until

# the work order's copywriter rule: Ollama first, then OpenAI
COPY_ROUTES = """
default:
  - {provider: ollama, model: "qwen2.5:7b"}
rules:
  - role: copywriter
    task: "*"
    candidates:
      - {provider: ollama, model: "qwen2.5:14b", options: {temperature: 0.8}}
      - {provider: openai, model: gpt-4o-mini}
"""


ONE_OLLAMA = 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}'
#: A breaker cooldown short enough to wait out in a test (waiting longer is always fine).
COOLDOWN = 0.2
#: A cooldown for tests that need a call to land inside it.
CIRCUIT_COOLDOWN = 2.0


async def circuit(http: httpx.AsyncClient, endpoint: str = "ollama") -> str:
    """The endpoint's circuit state, as /health shows it."""
    state: str = (await http.get("/health")).json()["endpoints"][endpoint]["circuit"]
    return state


def outcomes(body: dict[str, Any]) -> list[str]:
    attempts = body["meta"]["attempts"] if "meta" in body else body["error"]["details"]["attempts"]
    return [f"{a['provider']}:{a['outcome']}" for a in attempts]


async def test_ollama_busy_twice_then_ok_succeeds_with_three_attempts(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.then(Status(503), Status(503), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, COPY_ROUTES, ollama_base_url=ollama.url,
                                openai_base_url=f"{openai.url}/v1",
                                openai_api_key="sk-test") as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "ollama" and body["model"] == "qwen2.5:14b"
    assert outcomes(body) == ["ollama:http_503", "ollama:http_503", "ollama:ok"]
    assert body["meta"]["fallback"] is False
    assert openai.calls == 0


async def test_refused_ollama_falls_back_to_openai_without_waiting(tmp_path: Path) -> None:
    async with FakeOpenAI() as openai:
        openai.then(Reply(GOOD_COPY))
        async with live_gateway(tmp_path, COPY_ROUTES, ollama_base_url=refused_url(),
                                openai_base_url=f"{openai.url}/v1", openai_api_key="sk-test",
                                # a retry would wait 5-10 s: the bound below would show it
                                llm_backoff_base=10.0,
                                llm_backoff_max=10.0) as (_, http):  # fmt: skip
            started = time.monotonic()
            response = await http.post("/api/v1/llm/generate", json=CALL)
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    # nobody listens: no retry of the refused candidate, straight to the next one
    assert outcomes(body) == ["ollama:connection_refused", "openai:ok"]
    assert body["provider"] == "openai" and body["output"] == GOOD_COPY
    assert body["meta"]["fallback"] is True
    assert elapsed < 5.0  # generous for a busy machine; a retry's backoff alone is 5-10 s


async def test_when_every_candidate_fails_the_502_names_each_failure(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.default = Status(503)
        openai.default = Status(500)
        async with live_gateway(tmp_path, COPY_ROUTES, ollama_base_url=ollama.url,
                                openai_base_url=f"{openai.url}/v1",
                                openai_api_key="sk-test") as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 502
    error = response.json()["error"]
    message = error["message"]
    assert "Every candidate for copywriter/channel_copy failed" in message
    assert "ollama/qwen2.5:14b: 3 attempts (http_503, http_503, http_503)" in message
    assert "server busy" in message
    assert "openai/gpt-4o-mini: 3 attempts (http_500, http_500, http_500)" in message
    assert [f["outcome"] for f in error["details"]["failures"]] == ["http_503", "http_500"]
    assert len(error["details"]["attempts"]) == 6


async def test_timeouts_everywhere_give_504(tmp_path: Path) -> None:
    async with FakeOllama() as ollama:
        ollama.default = Reply(GOOD_COPY, delay=2)
        async with live_gateway(tmp_path, 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}',
                                ollama_base_url=ollama.url, ollama_timeout=0.1,
                                llm_max_retries=1) as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["type"] == "upstream_timeout"
    assert outcomes(response.json()) == ["ollama:timeout", "ollama:timeout"]
    assert "did not answer within 0.1 s" in error["message"]


async def test_json_that_fails_its_schema_is_repaired_once(tmp_path: Path) -> None:
    async with FakeOllama() as ollama:
        ollama.then(Reply({"headline": "A headline that is far too long for the channel"}),
                    Reply(GOOD_COPY))  # fmt: skip
        async with live_gateway(tmp_path, 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}',
                                ollama_base_url=ollama.url) as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    body = response.json()
    assert body["output"] == GOOD_COPY
    assert outcomes(body) == ["ollama:schema_invalid", "ollama:ok"]
    assert body["meta"]["repaired"] is True
    repair = ollama.model_calls()[1].body["messages"][-1]["content"]
    assert "far too long for the channel" in repair  # the model sees its own answer...
    assert "is longer than 30 characters" in repair  # ...and what is wrong with it
    assert "body" in repair and "required" in repair


async def test_a_failed_repair_falls_back_to_the_next_candidate(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.default = Reply("Sure! Here is your copy: calm afternoons.")
        openai.then(Reply(GOOD_COPY))
        async with live_gateway(tmp_path, COPY_ROUTES, ollama_base_url=ollama.url,
                                openai_base_url=f"{openai.url}/v1",
                                openai_api_key="sk-test") as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    assert outcomes(response.json()) == ["ollama:invalid_json", "ollama:invalid_json", "openai:ok"]


async def test_at_most_max_concurrency_calls_reach_ollama_and_all_50_complete(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as ollama:
        ollama.default = Held(Reply(GOOD_COPY), gate)
        async with live_gateway(tmp_path, ONE_OLLAMA, ollama_base_url=ollama.url,
                                ollama_max_concurrency=2) as (app, http):  # fmt: skip
            calls = [asyncio.create_task(http.post("/api/v1/llm/generate", json=CALL))
                     for _ in range(50)]  # fmt: skip
            # the upstream holds every answer until all 50 calls are in: 2 sent, 48 in line
            guards = app.state.services.gateway.endpoints
            await until(lambda: guards.snapshot().get("ollama", {}).get("waiting") == 48)
            gate.set()
            responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 50
    assert ollama.max_in_flight == 2
    assert ollama.calls == 50
    waits = [r.json()["meta"]["queue_ms"] for r in responses]
    assert sum(w > 0 for w in waits) == 48  # all but the first two waited in line


async def test_a_full_queue_answers_503_with_retry_after_not_a_hang(tmp_path: Path) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as ollama:
        # The upstream holds its answers until every call is either let in or turned away:
        # the count cannot depend on how fast this machine delivers the 50 calls (a freed
        # slot before the last call arrived is how this test once counted 11).
        ollama.default = Held(Reply(GOOD_COPY), gate)
        async with live_gateway(tmp_path, ONE_OLLAMA, ollama_base_url=ollama.url,
                                ollama_max_concurrency=2,
                                llm_max_queue=8) as (app, http):  # fmt: skip
            calls = [asyncio.create_task(http.post("/api/v1/llm/generate", json=CALL))
                     for _ in range(50)]  # fmt: skip
            guards = app.state.services.gateway.endpoints

            def settled() -> bool:
                endpoint = guards.snapshot().get("ollama", {"in_flight": 0, "waiting": 0})
                admitted = int(endpoint["in_flight"]) + int(endpoint["waiting"])
                return admitted + sum(c.done() for c in calls) == 50

            await until(settled)
            turned_away = sum(c.done() for c in calls)
            gate.set()
            responses = await asyncio.gather(*calls)
    assert turned_away == 40  # at once, not after waiting for a slot
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10  # 2 in flight + 8 queued
    assert statuses.count(503) == 40
    assert ollama.max_in_flight == 2
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "service_unavailable"
    assert "busy" in busy.json()["error"]["message"]


async def test_circuit_opens_after_repeated_failures_then_one_probe_closes_it(
    tmp_path: Path,
) -> None:
    # the third call must come within the cooldown to be skipped: long enough for a busy
    # machine to make two calls in, short enough to wait out
    routes = """
    default:
      - {provider: ollama, model: "qwen2.5:7b"}
      - {provider: openai, model: gpt-4o-mini}
    """
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.default = Status(500)
        openai.default = Reply(GOOD_COPY)
        async with live_gateway(tmp_path, routes, ollama_base_url=ollama.url,
                                openai_base_url=f"{openai.url}/v1", openai_api_key="sk-test",
                                llm_max_retries=0, llm_breaker_failures=2,
                                llm_breaker_cooldown=CIRCUIT_COOLDOWN) as (_, http):  # fmt: skip
            first = [(await http.post("/api/v1/llm/generate", json=CALL)).json()
                     for _ in range(3)]  # fmt: skip
            assert ollama.calls == 2  # the third call skipped the open circuit
            assert outcomes(first[2]) == ["ollama:circuit_open", "openai:ok"]
            await asyncio.sleep(CIRCUIT_COOLDOWN * 1.1)
            ollama.default = Reply(GOOD_COPY)
            probe = (await http.post("/api/v1/llm/generate", json=CALL)).json()
            after = (await http.post("/api/v1/llm/generate", json=CALL)).json()
    assert outcomes(first[0]) == ["ollama:http_500", "openai:ok"]
    assert outcomes(probe) == ["ollama:ok"]  # the probe went through and closed the circuit
    assert outcomes(after) == ["ollama:ok"]


async def test_retry_after_over_the_cap_falls_back_at_once(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as openai:
        ollama.then(Status(503, headers={"Retry-After": "600"}))
        openai.then(Reply(GOOD_COPY))
        async with live_gateway(tmp_path, COPY_ROUTES, ollama_base_url=ollama.url,
                                openai_base_url=f"{openai.url}/v1",
                                openai_api_key="sk-test") as (_, http):  # fmt: skip
            started = time.monotonic()
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert outcomes(response.json()) == ["ollama:http_503", "openai:ok"]
    assert time.monotonic() - started < 5.0  # generous: waiting even the 10 s cap would show


async def test_the_call_deadline_bounds_all_tries(tmp_path: Path) -> None:
    async with FakeOllama() as ollama:
        ollama.default = Reply(GOOD_COPY, delay=5)
        async with live_gateway(tmp_path, 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}',
                                ollama_base_url=ollama.url, llm_deadline=0.3,
                                llm_max_retries=5) as (_, http):  # fmt: skip
            started = time.monotonic()
            response = await http.post("/api/v1/llm/generate", json=CALL)
            elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert elapsed < 3.0  # 10x the deadline; without it, 6 tries of 5 s each


async def test_a_cancelled_probe_is_given_back_and_the_next_call_probes(tmp_path: Path) -> None:
    gate = asyncio.Event()
    async with FakeOllama() as ollama:
        ollama.then(Status(500), Held(Reply(GOOD_COPY), gate))  # the probe hangs upstream
        ollama.default = Reply(GOOD_COPY)
        async with live_gateway(tmp_path, ONE_OLLAMA, ollama_base_url=ollama.url,
                                llm_max_retries=0, llm_breaker_failures=1,
                                llm_breaker_cooldown=COOLDOWN) as (_, http):  # fmt: skip
            failed = await http.post("/api/v1/llm/generate", json=CALL)
            assert outcomes(failed.json()) == ["ollama:http_500"]
            assert await circuit(http) == "open"
            await asyncio.sleep(COOLDOWN * 1.5)
            probe = asyncio.create_task(http.post("/api/v1/llm/generate", json=CALL))
            await until(lambda: ollama.calls == 2)
            assert await circuit(http) == "half_open"
            probe.cancel()  # e.g. the client hung up
            with pytest.raises(asyncio.CancelledError):
                await probe
            after_cancel = await circuit(http)
            after = await http.post("/api/v1/llm/generate", json=CALL)
            closed = await circuit(http)
            gate.set()
    assert after_cancel == "open"  # no verdict: still open, and no probe running
    assert after.status_code == 200, after.text
    assert outcomes(after.json()) == ["ollama:ok"]  # the next call became the probe
    assert closed == "closed"


def test_a_call_gives_back_only_the_probe_it_claimed() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0)
    breaker.failure()
    first, second = breaker.admit(), breaker.admit()
    assert first.__enter__() and breaker.state == "half_open"
    breaker.failure()  # the first probe's verdict; with no cooldown the next call probes
    assert second.__enter__() and breaker.state == "half_open"
    first.__exit__(None, None, None)  # the first call ends while the second one probes...
    assert breaker.state == "half_open"  # ...and leaves the second one's probe alone
    second.__exit__(None, None, None)  # the second ends without a verdict: given back
    assert breaker.state == "open"
    with breaker.admit() as third:
        breaker.success()
    assert third and breaker.state == "closed"
