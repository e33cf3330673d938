"""The fake upstream servers speak their protocols (checked with plain aiohttp, no sparklio)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes import (
    Cut,
    FakeAnthropic,
    FakeOllama,
    FakeOpenAI,
    Held,
    Reply,
    Status,
    StreamError,
    refused_url,
)
from tests.live import until

CHAT = {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "Hi"}]}
OPENAI_AUTH = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
USER_TURN = {"role": "user", "content": "Give me JSON."}
MESSAGES: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 256,
    "messages": [USER_TURN],
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def ndjson(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in resp.content if line.strip()]


# -- Ollama -------------------------------------------------------------------------------


async def test_ollama_stream_fragments_join_and_final_line_has_metrics(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeOllama() as fake:
        fake.then(Reply('{"a": 1}', chunks=3))
        async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/x-ndjson"
            lines = await ndjson(resp)
    *parts, last = lines
    assert len(parts) == 3
    assert all(p["done"] is False for p in parts)
    assert "".join(p["message"]["content"] for p in parts) == '{"a": 1}'
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["message"] == {"role": "assistant", "content": ""}
    assert last["created_at"].endswith("Z")
    assert last["eval_count"] == 8 and last["prompt_eval_count"] == 12
    assert isinstance(last["eval_duration"], int) and last["eval_duration"] > 0
    assert fake.calls == 1 and fake.model_calls()[0].body == CHAT


async def test_ollama_non_stream_reports_length(session: aiohttp.ClientSession) -> None:
    async with FakeOllama() as fake:
        fake.then(Reply({"a": 1}, finish="length"))
        async with session.post(f"{fake.url}/api/chat", json=CHAT | {"stream": False}) as resp:
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
            body = await resp.json()
    assert json.loads(body["message"]["content"]) == {"a": 1}
    assert body["done_reason"] == "length"


async def test_ollama_busy_then_reply(session: aiohttp.ClientSession) -> None:
    async with FakeOllama() as fake:
        fake.then(Status(503))
        async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
            assert resp.status == 503
            assert await resp.json() == {
                "error": "server busy, please try again.  maximum pending requests exceeded"
            }
        async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
            assert resp.status == 200  # the script is used up: back to the default Reply()


async def test_ollama_error_line_inside_200_stream(session: aiohttp.ClientSession) -> None:
    async with FakeOllama() as fake:
        fake.then(StreamError("boom", after_chunks=2))
        async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
            assert resp.status == 200
            lines = await ndjson(resp)
    assert [line.get("done") for line in lines] == [False, False, None]
    assert lines[-1] == {"error": "boom"}


async def test_ollama_cut_drops_the_connection(session: aiohttp.ClientSession) -> None:
    async with FakeOllama() as fake:
        fake.then(Cut(after_bytes=30))
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
                assert resp.status == 200
                await resp.read()


async def test_ollama_unknown_model_is_404_without_using_the_script(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeOllama() as fake:
        fake.then(Status(500))
        async with session.post(f"{fake.url}/api/chat", json=CHAT | {"model": "nope"}) as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "model 'nope' not found"}
        async with session.post(f"{fake.url}/api/chat", json={}) as resp:
            assert resp.status == 400
            assert await resp.json() == {"error": "model is required"}
        async with session.post(f"{fake.url}/api/chat", json=CHAT) as resp:
            assert resp.status == 500


async def test_ollama_tags_version_and_root(session: aiohttp.ClientSession) -> None:
    async with FakeOllama(models=["qwen2.5:7b"]) as fake:
        async with session.get(f"{fake.url}/api/tags") as resp:
            tags = await resp.json()
        async with session.get(f"{fake.url}/api/version") as resp:
            assert await resp.json() == {"version": "0.5.1"}
        async with session.get(f"{fake.url}/") as resp:
            assert await resp.text() == "Ollama is running"
    (model,) = tags["models"]
    assert model["name"] == model["model"] == "qwen2.5:7b"
    assert model["details"]["quantization_level"] == "Q4_K_M"
    assert [r.path for r in fake.requests] == ["/api/tags", "/api/version", "/"]
    assert fake.calls == 0


async def test_max_in_flight_counts_concurrent_calls(session: aiohttp.ClientSession) -> None:
    async def call(url: str) -> int:
        async with session.post(f"{url}/api/chat", json=CHAT | {"stream": False}) as resp:
            await resp.read()
            return resp.status

    gate = asyncio.Event()
    async with FakeOllama() as fake:
        # held, not delayed: all three are in flight together however slowly they arrive
        fake.default = Held(Reply(), gate)
        calls = [asyncio.create_task(call(fake.url)) for _ in range(3)]
        await until(lambda: fake.calls == 3)
        assert not any(c.done() for c in calls)  # none answered before the gate opened
        gate.set()
        statuses = await asyncio.gather(*calls)
    assert statuses == [200, 200, 200]
    assert fake.max_in_flight == 3


async def test_refused_url_refuses(session: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        async with session.get(refused_url()):
            pass


# -- OpenAI -------------------------------------------------------------------------------


async def test_openai_success_shape(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAI() as fake:
        fake.then(Reply("hi", prompt_tokens=3, completion_tokens=2))
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        url = f"{fake.url}/v1/chat/completions"
        async with session.post(url, json=body, headers=OPENAI_AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["x-request-id"]
            data = await resp.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert fake.model_calls()[0].headers["authorization"] == "Bearer sk-test"


async def test_openai_errors(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAI(supports_json_schema=False) as fake:
        fake.then(Status(429, headers={"Retry-After": "1"}))
        url = f"{fake.url}/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        async with session.post(url, json=body, headers=OPENAI_AUTH) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            error = (await resp.json())["error"]
            assert error["code"] == "rate_limit_exceeded" and error["param"] is None
        async with session.post(url, json=body) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
        schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        body_schema = body | {"response_format": schema}
        async with session.post(url, json=body_schema, headers=OPENAI_AUTH) as resp:
            assert resp.status == 400
            message = (await resp.json())["error"]["message"]
            assert "response_format" in message and "json_schema" in message
        async with session.get(f"{fake.url}/v1/models", headers=OPENAI_AUTH) as resp:
            assert (await resp.json())["data"][0]["id"] == "gpt-4o-mini"


async def sse_events(resp: aiohttp.ClientResponse) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of an SSE body, read by hand."""
    text = (await resp.read()).decode()
    assert text.endswith("\n\n")  # every event is complete
    events = []
    for block in text.strip("\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


async def test_openai_stream_is_sse_chunks_then_usage_then_done(
    session: aiohttp.ClientSession,
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}],
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with FakeOpenAI() as fake:
        fake.then(Reply("Hello there, friend.", prompt_tokens=3, completion_tokens=5, chunks=4))
        url = f"{fake.url}/v1/chat/completions"
        async with session.post(url, json=body, headers=OPENAI_AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = await sse_events(resp)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1  # one completion
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there, friend."
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 4
    assert chunks[-2]["choices"][0] | {"delta": None} == {
        "index": 0, "delta": None, "logprobs": None, "finish_reason": "stop"}  # fmt: skip
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_openai_stream_error_event_and_cut_after_pieces(
    session: aiohttp.ClientSession,
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}],
            "stream": True}  # fmt: skip
    async with FakeOpenAI() as fake:
        fake.then(StreamError(after_chunks=1), Cut(after_pieces=2))
        url = f"{fake.url}/v1/chat/completions"
        async with session.post(url, json=body, headers=OPENAI_AUTH) as resp:
            assert resp.status == 200
            events = await sse_events(resp)
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            async with session.post(url, json=body, headers=OPENAI_AUTH) as resp:
                assert resp.status == 200
                received = b""
                async for line in resp.content:
                    received += line
    chunks = [json.loads(data) for _, data in events]
    assert chunks[1]["choices"][0]["delta"]["content"]  # some content first
    assert set(chunks[-1]) == {"error"}  # then the error, and no [DONE]
    assert chunks[-1]["error"]["type"] == "server_error"
    # the role's chunk and the first token's arrived whole, then the connection dropped
    first_token = json.loads(received.decode().split("\n\n")[1].removeprefix("data: "))
    assert first_token["choices"][0]["delta"]["content"]
    assert b"[DONE]" not in received


# -- Anthropic ----------------------------------------------------------------------------


async def test_anthropic_stream_events_text_and_forced_tool(
    session: aiohttp.ClientSession,
) -> None:
    tools = [{"name": "answer", "input_schema": {"type": "object"}}]
    forced = MESSAGES | {"tools": tools, "tool_choice": {"type": "tool", "name": "answer"}}
    async with FakeAnthropic() as fake:
        fake.then(Reply("Calm tea for busy days.", completion_tokens=6), Reply('{"a": [1, 2]}'))
        url = f"{fake.url}/v1/messages"
        streamed = []
        for body in (MESSAGES, forced):
            async with session.post(
                url, json=body | {"stream": True}, headers=ANTHROPIC_HEADERS
            ) as resp:
                assert resp.status == 200 and resp.headers["request-id"]
                streamed.append(await sse_events(resp))
    text, tool = streamed
    names = [name for name, _ in text]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(d) for _, d in text]
    assert all(d["type"] == name for d, name in zip(data, names, strict=True))
    assert data[0]["message"]["usage"]["input_tokens"] == 12
    deltas = [d["delta"] for d in data if d["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == "Calm tea for busy days."
    assert data[-2]["delta"]["stop_reason"] == "end_turn"
    assert data[-2]["usage"] == {"output_tokens": 6}
    tool_data = [json.loads(d) for _, d in tool]
    assert tool_data[1]["content_block"]["type"] == "tool_use"
    partial = [d["delta"]["partial_json"] for d in tool_data if d["type"] == "content_block_delta"]
    assert json.loads("".join(partial)) == {"a": [1, 2]}
    assert tool_data[-2]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_error_event_inside_a_200_stream(session: aiohttp.ClientSession) -> None:
    async with FakeAnthropic() as fake:
        fake.then(StreamError(after_chunks=0), StreamError(error_type="api_error"))
        url = f"{fake.url}/v1/messages"
        streamed = []
        for _ in range(2):
            async with session.post(
                url, json=MESSAGES | {"stream": True}, headers=ANTHROPIC_HEADERS
            ) as resp:
                assert resp.status == 200
                streamed.append(await sse_events(resp))
    before, after = streamed
    assert [name for name, _ in before] == [
        "message_start", "content_block_start", "ping", "error"]  # fmt: skip
    overloaded = {"type": "overloaded_error", "message": "Overloaded"}
    assert json.loads(before[-1][1]) == {"type": "error", "error": overloaded}
    assert [name for name, _ in after][-2:] == ["content_block_delta", "error"]
    assert json.loads(after[-1][1])["error"]["type"] == "api_error"


async def test_anthropic_forced_tool_use(session: aiohttp.ClientSession) -> None:
    tools = [{"name": "answer", "input_schema": {"type": "object"}}]
    body = MESSAGES | {"tools": tools, "tool_choice": {"type": "tool", "name": "answer"}}
    async with FakeAnthropic() as fake:
        fake.then(Reply('{"a": 1}'))
        url = f"{fake.url}/v1/messages"
        async with session.post(url, json=body, headers=ANTHROPIC_HEADERS) as resp:
            assert resp.status == 200 and resp.headers["request-id"]
            data = await resp.json()
    assert data["stop_reason"] == "tool_use" and data["type"] == "message"
    (block,) = data["content"]
    assert block["type"] == "tool_use" and block["name"] == "answer"
    assert block["input"] == {"a": 1}
    assert data["usage"] == {"input_tokens": 12, "output_tokens": 8}


async def test_anthropic_overloaded_and_prefill(session: aiohttp.ClientSession) -> None:
    async with FakeAnthropic() as fake:
        fake.then(Status(529))
        url = f"{fake.url}/v1/messages"
        async with session.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS) as resp:
            assert resp.status == 529
            data = await resp.json()
            assert data["type"] == "error" and data["request_id"].startswith("req_")
            assert data["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        prefill = MESSAGES | {"messages": [USER_TURN, {"role": "assistant", "content": "{"}]}
        async with session.post(url, json=prefill, headers=ANTHROPIC_HEADERS) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["type"] == "invalid_request_error" and "prefill" in error["message"]
        async with session.post(url, json=MESSAGES, headers={"x-api-key": "bad"}) as resp:
            assert resp.status == 401
        assert fake.calls == 3
