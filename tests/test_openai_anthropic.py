"""The OpenAI and Anthropic providers against faithful fakes, through the HTTP API: what the
gateway sends upstream, and what a caller gets back (answers, usage, attempts and errors)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import Cut, FakeAnthropic, FakeOpenAI, Reply, Status
from tests.live import CALL, COPY_SCHEMA, GOOD_COPY, live_gateway

GENERATE = "/api/v1/llm/generate"
PROVIDERS = "/api/v1/llm/providers"

#: COPY_SCHEMA closed and fully required: what OpenAI's strict mode accepts.
STRICT_SCHEMA: dict[str, Any] = {**COPY_SCHEMA, "additionalProperties": False}

OPENAI_ROUTES = """
default:
  - {provider: openai, model: gpt-4o-mini}
"""
#: copywriter calls fall back from gpt-4o-mini to gpt-4o; everything else has no fallback.
OPENAI_FALLBACK_ROUTES = """
default:
  - {provider: openai, model: gpt-4o-mini}
rules:
  - role: copywriter
    task: "*"
    candidates:
      - {provider: openai, model: gpt-4o-mini}
      - {provider: openai, model: gpt-4o}
"""
ANTHROPIC_ROUTES = """
default:
  - {provider: anthropic, model: claude-sonnet-4-5}
"""


def openai_at(fake: FakeOpenAI, key: str = "sk-test") -> dict[str, Any]:
    return {"openai_base_url": f"{fake.url}/v1", "openai_api_key": key}


def anthropic_at(fake: FakeAnthropic) -> dict[str, Any]:
    return {"anthropic_base_url": fake.url, "anthropic_api_key": "sk-ant-test"}


def outcomes(response: httpx.Response) -> list[str]:
    """The outcome of every attempt, from a success's meta or an error's details."""
    body = response.json()
    attempts = body["meta"]["attempts"] if "meta" in body else body["error"]["details"]["attempts"]
    return [a["outcome"] for a in attempts]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The `error` of an error body, after checking the body's shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    assert {"type", "message", "details"} <= set(error)
    return error


# -- OpenAI ---------------------------------------------------------------------------------


async def test_openai_json_mode_sends_strict_schema_auth_and_merged_options(
    tmp_path: Path,
) -> None:
    routes = """
    default:
      - provider: openai
        model: gpt-4o-mini
        options: {temperature: 0.2, max_tokens: 300, seed: 1}
    """
    async with FakeOpenAI(api_key="sk-live-123") as fake:
        fake.then(Reply(GOOD_COPY, prompt_tokens=31, completion_tokens=17), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, routes, **openai_at(fake, "sk-live-123")) as (_, http):
            strict = await http.post(GENERATE, json={
                **CALL, "output_schema": STRICT_SCHEMA,
                "options": {"temperature": 0.7, "seed": 42}})  # fmt: skip
            loose = await http.post(GENERATE, json=CALL)
    assert strict.status_code == 200, strict.text
    assert loose.status_code == 200, loose.text
    first, second = fake.model_calls()
    assert first.headers["authorization"] == "Bearer sk-live-123"
    sent = first.body
    assert sent["model"] == "gpt-4o-mini"  # from the routing file
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": sent["response_format"]["json_schema"]["name"],
                        "schema": STRICT_SCHEMA, "strict": True},
    }  # fmt: skip
    # ref §3: the name is required, a-zA-Z0-9_- and at most 64 characters
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", sent["response_format"]["json_schema"]["name"])
    # the caller's options beat the route's; the route's max_tokens still applies
    assert (sent["temperature"], sent["seed"], sent["max_tokens"]) == (0.7, 42, 300)
    assert sent["messages"][-1]["role"] == "user"
    assert "Dawon green tea" in sent["messages"][-1]["content"]
    # COPY_SCHEMA is not closed (no additionalProperties: false): strict mode would reject it
    assert second.body["response_format"]["json_schema"]["schema"] == COPY_SCHEMA
    assert second.body["response_format"]["json_schema"]["strict"] is False
    assert (second.body["temperature"], second.body["seed"]) == (0.2, 1)  # route options only

    body = strict.json()
    assert body["provider"] == "openai" and body["model"] == "gpt-4o-mini"
    assert body["output"] == GOOD_COPY
    assert body["usage"] == {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}
    assert outcomes(strict) == ["ok"]
    assert body["meta"]["finish_reason"] == "stop"


@pytest.mark.parametrize("status", [400, 422, 500])  # OpenAI-style, FastAPI, llama-cpp-python
async def test_openai_server_without_json_schema_falls_back_to_json_object_once(
    tmp_path: Path, status: int
) -> None:
    async with FakeOpenAI(supports_json_schema=False, json_schema_status=status) as fake:
        fake.then(Reply(GOOD_COPY), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            first = await http.post(GENERATE, json=CALL)
            calls_after_first = fake.calls
            second = await http.post(GENERATE, json=CALL)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["output"] == second.json()["output"] == GOOD_COPY
    # the refusal is the provider's business, inside one attempt: no retry spent on it
    assert outcomes(first) == outcomes(second) == ["ok"]
    formats = [c.body["response_format"] for c in fake.model_calls()]
    assert calls_after_first == 2
    assert [f["type"] for f in formats] == ["json_schema", "json_object", "json_object"]
    # json_object still carries the schema: llama.cpp's servers constrain the answer to it
    assert formats[1]["schema"] == formats[2]["schema"] == COPY_SCHEMA
    assert first.json()["meta"]["response_format"] == "json_object"  # and said so


async def test_openai_server_without_either_schema_format_falls_to_plain_json_object(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI(supports_json_schema=False, supports_object_schema=False) as fake:
        fake.then(Reply(GOOD_COPY), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            first = await http.post(GENERATE, json=CALL)
            second = await http.post(GENERATE, json=CALL)
    assert outcomes(first) == outcomes(second) == ["ok"]
    formats = [c.body["response_format"] for c in fake.model_calls()]
    assert formats == [
        {"type": "json_schema", "json_schema": {"name": "answer", "schema": COPY_SCHEMA,
                                                "strict": False}},
        {"type": "json_object", "schema": COPY_SCHEMA},
        {"type": "json_object"},
        {"type": "json_object"},  # the second call goes straight to what works
    ]  # fmt: skip


async def test_an_invalid_schema_refusal_is_not_remembered_for_the_model(tmp_path: Path) -> None:
    """OpenAI's "Invalid schema for response_format" is about that schema, not the server."""
    async with FakeOpenAI() as fake:
        invalid = "Invalid schema for response_format 'answer': 'format' is not permitted."
        fake.then(Status(400, message=invalid), Reply(GOOD_COPY), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            first = await http.post(GENERATE, json=CALL)
            second = await http.post(GENERATE, json=CALL)
    assert outcomes(first) == outcomes(second) == ["ok"]
    types = [c.body["response_format"]["type"] for c in fake.model_calls()]
    assert types == ["json_schema", "json_object", "json_schema"]


async def test_openai_429_retry_after_is_honoured(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Status(429, headers={"Retry-After": "1"}), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            started = time.perf_counter()
            response = await http.post(GENERATE, json=CALL)
            elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["output"] == GOOD_COPY
    assert outcomes(response) == ["http_429", "ok"]
    assert elapsed >= 0.95  # waited as told, not the (10-50 ms) backoff of the test settings


async def test_openai_429_retry_after_above_the_cap_falls_back_at_once(tmp_path: Path) -> None:
    async with FakeOpenAI(models=["gpt-4o-mini", "gpt-4o"]) as fake:
        fake.then(Status(429, headers={"Retry-After": "120"}), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_FALLBACK_ROUTES, **openai_at(fake)) as (_, http):
            started = time.perf_counter()
            response = await http.post(GENERATE, json=CALL)
            elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(a["model"], a["outcome"]) for a in body["meta"]["attempts"]] == [
        ("gpt-4o-mini", "http_429"),
        ("gpt-4o", "ok"),
    ]
    assert body["model"] == "gpt-4o" and body["meta"]["fallback"] is True
    assert [c.body["model"] for c in fake.model_calls()] == ["gpt-4o-mini", "gpt-4o"]
    assert elapsed < 5.0  # did not wait 120 s, nor the 10 s cap (generous for a busy machine)


async def test_openai_insufficient_quota_429_is_not_retried(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Status(429, error_type="insufficient_quota"), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    error = error_of(response, 502)
    assert error["type"] == "provider_error"
    assert error["details"]["outcome"] == "http_429"
    assert "quota" in error["message"]
    assert outcomes(response) == ["http_429"]
    assert fake.calls == 1  # waiting does not buy credit


async def test_openai_bad_key_is_a_502_that_names_the_key_and_is_not_retried(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI(api_key="sk-right") as fake:
        wrong_key = openai_at(fake, key="sk-wrong")
        async with live_gateway(tmp_path, OPENAI_ROUTES, **wrong_key) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    error = error_of(response, 502)
    assert error["type"] == "provider_error"
    message = error["message"]
    assert "openai" in message and "gpt-4o-mini" in message
    assert "OPENAI_API_KEY" in message
    assert error["details"]["provider"] == "openai"
    assert error["details"]["model"] == "gpt-4o-mini"
    assert error["details"]["outcome"] == "http_401"
    assert outcomes(response) == ["http_401"]
    assert fake.calls == 1
    assert fake.model_calls()[0].headers["authorization"] == "Bearer sk-wrong"
    assert "sk-wrong" not in response.text  # the key itself is not echoed back


async def test_openai_without_a_key_is_unavailable_and_skipped(tmp_path: Path) -> None:
    routes = """
    default:
      - {provider: openai, model: gpt-4o-mini}
      - {provider: anthropic, model: claude-sonnet-4-5}
    """
    async with FakeAnthropic() as claude:
        claude.then(Reply(GOOD_COPY))
        # no OPENAI_API_KEY, and OPENAI_BASE_URL left at api.openai.com
        async with live_gateway(tmp_path, routes, **anthropic_at(claude)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
            providers = await http.get(PROVIDERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "anthropic" and body["output"] == GOOD_COPY
    assert [(a["provider"], a["outcome"]) for a in body["meta"]["attempts"]] == [
        ("openai", "unavailable"),
        ("anthropic", "ok"),
    ]
    assert body["meta"]["fallback"] is True
    listed = {p["name"]: p for p in providers.json()["providers"]}
    assert listed["openai"]["available"] is False
    assert "OPENAI_API_KEY" in listed["openai"]["message"]
    assert listed["anthropic"]["available"] is True


async def test_openai_key_for_api_openai_com_is_refused_by_the_spend_guard(
    tmp_path: Path,
) -> None:
    # conftest sets ALLOW_REMOTE_CALLS=false; the key makes the provider available
    async with live_gateway(tmp_path, OPENAI_ROUTES, openai_api_key="sk-real") as (app, http):
        response = await http.post(GENERATE, json=CALL)
        provider = app.state.services.gateway.endpoints.get("openai").provider
        # no connection was opened: the guard runs before the HTTP session is even made
        assert provider._session is None
    error = error_of(response, 502)
    assert error["details"]["outcome"] == "spend_guard"
    assert outcomes(response) == ["spend_guard"]  # not retried
    assert "api.openai.com" in error["message"]
    assert "ALLOW_REMOTE_CALLS" in error["message"]


async def test_openai_connection_cut_mid_answer_is_retried(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Cut(), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == GOOD_COPY
    assert outcomes(response) == ["stream_error", "ok"]
    assert fake.calls == 2


async def test_openai_finish_length_is_truncated_in_json_and_flagged_in_text(
    tmp_path: Path,
) -> None:
    cut = Reply('{"headline": "Calm', finish="length")
    async with FakeOpenAI(models=["gpt-4o-mini", "gpt-4o"]) as fake:
        fake.then(
            cut, Reply(GOOD_COPY),  # copywriter: truncated, then the fallback answers
            cut,  # brief: no fallback, so an error
            Reply("A calm cup for", finish="length"),  # text mode
        )  # fmt: skip
        async with live_gateway(tmp_path, OPENAI_FALLBACK_ROUTES, **openai_at(fake)) as (_, http):
            fell_back = await http.post(GENERATE, json=CALL)
            failed = await http.post(GENERATE, json={
                "role": "brief", "task": "analyze", "payload": {"brief": "tea"},
                "output_schema": COPY_SCHEMA})  # fmt: skip
            text = await http.post(GENERATE, json={**CALL, "mode": "text"})
    assert fell_back.status_code == 200, fell_back.text
    assert [(a["model"], a["outcome"]) for a in fell_back.json()["meta"]["attempts"]] == [
        ("gpt-4o-mini", "truncated"),
        ("gpt-4o", "ok"),
    ]
    assert fell_back.json()["output"] == GOOD_COPY

    error = error_of(failed, 502)
    assert error["details"]["outcome"] == "truncated"
    assert "finish_reason: length" in error["message"]
    assert outcomes(failed) == ["truncated"]  # neither retried nor "repaired"

    assert text.status_code == 200, text.text
    assert text.json()["output"] == {"text": "A calm cup for"}
    assert text.json()["meta"]["truncated"] is True
    assert "response_format" not in fake.model_calls()[-1].body
    assert fake.calls == 4


async def test_openai_prose_answer_gets_one_repair_with_the_previous_answer(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Reply("Sure! Here is the copy."), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == GOOD_COPY
    assert outcomes(response) == ["invalid_json", "ok"]
    assert body["meta"]["repaired"] is True
    first, repair = (c.body["messages"][-1] for c in fake.model_calls())
    assert repair["role"] == "user"
    assert "Sure! Here is the copy." not in first["content"]
    assert "Sure! Here is the copy." in repair["content"]
    assert "Dawon green tea" in repair["content"]  # the original request is asked again


async def test_openai_repair_that_fails_again_is_a_502(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Reply("Sure! Here is the copy."), Reply("Sorry, here it is again."))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    error = error_of(response, 502)
    assert error["details"]["outcome"] == "invalid_json"
    assert outcomes(response) == ["invalid_json", "invalid_json"]  # one repair, no more
    assert fake.calls == 2


async def test_openai_json_in_code_fences_parses_without_repair(tmp_path: Path) -> None:
    fenced = f"```json\n{json.dumps(GOOD_COPY, indent=2)}\n```"
    async with FakeOpenAI() as fake:
        fake.then(Reply(fenced))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == GOOD_COPY
    assert outcomes(response) == ["ok"]
    assert response.json()["meta"]["repaired"] is False
    assert fake.calls == 1


async def test_openai_prose_with_an_unclosed_brace_gets_a_repair(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Reply('Here is the copy: {"headline": "Calm afternoons"'), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, OPENAI_ROUTES, **openai_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    assert outcomes(response) == ["invalid_json", "ok"]
    assert response.status_code == 200, response.text
    assert response.json()["output"] == GOOD_COPY


# -- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_json_mode_forces_one_tool_without_prefill(tmp_path: Path) -> None:
    routes = """
    default:
      - {provider: anthropic, model: claude-sonnet-4-5, options: {temperature: 0.3}}
    """
    async with FakeAnthropic() as fake:
        fake.then(Reply(GOOD_COPY, prompt_tokens=40, completion_tokens=22), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, routes, **anthropic_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
            capped = await http.post(GENERATE, json={**CALL, "options": {"max_tokens": 512}})
    assert response.status_code == 200, response.text
    assert capped.status_code == 200, capped.text
    first, second = fake.model_calls()
    assert first.headers["x-api-key"] == "sk-ant-test"
    assert first.headers["anthropic-version"] == "2023-06-01"
    sent = first.body
    assert sent["model"] == "claude-sonnet-4-5"
    assert sent["temperature"] == 0.3
    assert isinstance(sent["max_tokens"], int) and sent["max_tokens"] > 0  # required upstream
    assert second.body["max_tokens"] == 512
    [tool] = sent["tools"]
    assert tool["input_schema"] == COPY_SCHEMA
    assert sent["tool_choice"] == {"type": "tool", "name": tool["name"]}
    assert sent["messages"][-1]["role"] == "user"  # no assistant prefill
    assert "Dawon green tea" in sent["messages"][-1]["content"]

    body = response.json()
    assert body["provider"] == "anthropic" and body["model"] == "claude-sonnet-4-5"
    assert body["output"] == GOOD_COPY  # the tool_use input
    assert body["usage"] == {"prompt_tokens": 40, "completion_tokens": 22, "total_tokens": 62}
    assert outcomes(response) == ["ok"]
    assert body["meta"]["stop_reason"] == "tool_use"


async def test_anthropic_text_mode_returns_the_text_block(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.then(Reply("A calm cup for a busy day."))
        async with live_gateway(tmp_path, ANTHROPIC_ROUTES, **anthropic_at(fake)) as (_, http):
            response = await http.post(GENERATE, json={**CALL, "mode": "text"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"text": "A calm cup for a busy day."}
    assert "truncated" not in response.json()["meta"]
    sent = fake.model_calls()[0].body
    assert "tools" not in sent and "tool_choice" not in sent


async def test_anthropic_529_overloaded_is_retried(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.then(Status(529), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, ANTHROPIC_ROUTES, **anthropic_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == GOOD_COPY
    assert outcomes(response) == ["http_529", "ok"]


async def test_anthropic_429_retry_after_is_honoured(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.then(Status(429, headers={"retry-after": "1"}), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, ANTHROPIC_ROUTES, **anthropic_at(fake)) as (_, http):
            started = time.perf_counter()
            response = await http.post(GENERATE, json=CALL)
            elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert outcomes(response) == ["http_429", "ok"]
    assert elapsed >= 0.95


async def test_anthropic_without_a_key_is_unavailable_and_skipped(tmp_path: Path) -> None:
    routes = """
    default:
      - {provider: anthropic, model: claude-sonnet-4-5}
      - {provider: openai, model: gpt-4o-mini}
    """
    async with FakeAnthropic() as claude, FakeOpenAI() as gpt:
        gpt.then(Reply(GOOD_COPY))
        async with live_gateway(
            tmp_path, routes, anthropic_base_url=claude.url, **openai_at(gpt)
        ) as (_, http):
            response = await http.post(GENERATE, json=CALL)
            providers = await http.get(PROVIDERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "openai" and body["output"] == GOOD_COPY
    assert [(a["provider"], a["outcome"]) for a in body["meta"]["attempts"]] == [
        ("anthropic", "unavailable"),
        ("openai", "ok"),
    ]
    assert claude.requests == []  # not even a health check without a key
    listed = {p["name"]: p for p in providers.json()["providers"]}
    assert listed["anthropic"]["available"] is False
    assert "ANTHROPIC_API_KEY" in listed["anthropic"]["message"]
    assert listed["openai"]["available"] is True


async def test_anthropic_stop_reason_max_tokens_is_truncated_in_json(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.then(Reply(GOOD_COPY, finish="length"))  # stop_reason: max_tokens
        async with live_gateway(tmp_path, ANTHROPIC_ROUTES, **anthropic_at(fake)) as (_, http):
            response = await http.post(GENERATE, json=CALL)
    error = error_of(response, 502)
    assert error["details"]["outcome"] == "truncated"
    assert "max_tokens" in error["message"]
    assert outcomes(response) == ["truncated"]
    assert fake.calls == 1
