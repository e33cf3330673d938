"""Streamed answers: each provider against its upstream's fake (pieces as they come, the same
answer generate() gives, failures before and after the first piece), and the gateway's
open_stream over them (fallback until the first piece, an error event after it, the call log).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from sparklio.db.models import LLMCall
from sparklio.exceptions import ProviderError
from sparklio.main import close_app, create_app
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.llm.providers.anthropic import AnthropicProvider
from sparklio.services.llm.providers.base import LLMProvider, LLMProviderResponse, OutputMode
from sparklio.services.llm.providers.mock import MockProvider
from sparklio.services.llm.providers.ollama import OllamaProvider
from sparklio.services.llm.providers.openai import OpenAIProvider
from sparklio.wire.llm import StreamDelta, StreamDone, StreamEvent, StreamFailed
from tests.conftest import make_settings
from tests.fakes import (
    Cut,
    FakeAnthropic,
    FakeOllama,
    FakeOpenAI,
    FakeServer,
    Reply,
    StreamError,
)
from tests.live import CALL, COPY_SCHEMA, FAST, GOOD_COPY

TEXT = "Calm afternoons with Dawon green tea, first flush from Jeju."


@dataclass
class Upstream:
    """One HTTP provider kind with its fake."""

    name: str
    fake: Callable[[], FakeServer]
    provider: Callable[[str], LLMProvider]  # from the fake's URL
    model: str
    #: pieces of a streamed answer up to and including its first token's
    first_token: int


UPSTREAMS = [
    Upstream("ollama", FakeOllama,
             lambda url: OllamaProvider(make_settings(ollama_base_url=url)), "qwen2.5:7b", 1),
    Upstream("openai", FakeOpenAI,
             lambda url: OpenAIProvider(make_settings(openai_base_url=f"{url}/v1",
                                                      openai_api_key="sk-test")),
             "gpt-4o-mini", 2),  # the role's chunk, then the first token's
    Upstream("anthropic", FakeAnthropic,
             lambda url: AnthropicProvider(make_settings(anthropic_base_url=url,
                                                         anthropic_api_key="sk-ant-test")),
             "claude-sonnet-4-5", 4),  # message_start, content_block_start, ping, a delta
]  # fmt: skip


@pytest.fixture(params=UPSTREAMS, ids=lambda u: u.name)
async def upstream(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Upstream, FakeServer, LLMProvider]]:
    spec: Upstream = request.param
    async with spec.fake() as fake:
        provider = spec.provider(fake.url)
        try:
            yield spec, fake, provider
        finally:
            await provider.aclose()


async def collect(
    provider: LLMProvider, mode: OutputMode, options: dict[str, Any], into: list[str]
) -> LLMProviderResponse:
    """Read a stream: its pieces into `into` (kept when it raises), its response returned."""
    response: LLMProviderResponse | None = None
    async for item in provider.stream("Write copy for green tea.", "copywriter",
                                      "channel_copy", mode, options):  # type: ignore[arg-type]  # fmt: skip
        assert response is None, "nothing may follow the response"
        if isinstance(item, LLMProviderResponse):
            response = item
        else:
            assert isinstance(item, str) and item
            into.append(item)
    assert response is not None
    return response


@pytest.mark.parametrize("mode", ["text", "json"])
async def test_pieces_arrive_in_order_and_join_to_the_answer_generate_gives(
    upstream: tuple[Upstream, FakeServer, LLMProvider], mode: OutputMode
) -> None:
    spec, fake, provider = upstream
    content: str | dict[str, Any] = TEXT if mode == "text" else GOOD_COPY
    fake.then(Reply(content, prompt_tokens=21, completion_tokens=13, chunks=5), Reply(content))
    options: dict[str, Any] = {"model": spec.model}
    if mode == "json":
        options["schema"] = COPY_SCHEMA
    pieces: list[str] = []
    streamed = await collect(provider, mode, options, pieces)
    generated = await provider.generate("Write copy.", "copywriter", "channel_copy", mode,
                                        options)  # type: ignore[arg-type]  # fmt: skip
    assert len(pieces) == 5  # as the upstream sent them, not all at once
    if mode == "text":
        assert "".join(pieces) == TEXT
    else:
        assert json.loads("".join(pieces)) == GOOD_COPY  # the raw JSON as it was written
    assert streamed.output == generated.output
    assert streamed.output == ({"text": TEXT} if mode == "text" else GOOD_COPY)
    assert streamed.usage == {"prompt_tokens": 21, "completion_tokens": 13, "total_tokens": 34}
    assert streamed.provider == spec.name and streamed.model == spec.model
    sent = fake.model_calls()[0].body
    assert sent["stream"] is True
    if spec.name == "openai":
        assert sent["stream_options"] == {"include_usage": True}
        assert streamed.meta.get("response_format") == ("json_schema" if mode == "json" else None)


async def test_a_cut_before_the_first_piece_raises_stream_error_with_nothing_yielded(
    upstream: tuple[Upstream, FakeServer, LLMProvider],
) -> None:
    spec, fake, provider = upstream
    fake.then(Cut(after_bytes=0))  # the 200's headers, then nothing
    pieces: list[str] = []
    with pytest.raises(ProviderError) as caught:
        await collect(provider, "text", {"model": spec.model}, pieces)
    assert pieces == []
    assert caught.value.outcome == "stream_error" and caught.value.retryable
    assert (caught.value.provider, caught.value.model) == (spec.name, spec.model)


async def test_a_cut_after_the_first_piece_raises_stream_error_after_it(
    upstream: tuple[Upstream, FakeServer, LLMProvider],
) -> None:
    spec, fake, provider = upstream
    fake.then(Cut(after_pieces=spec.first_token, reply=Reply(TEXT, chunks=4)))
    pieces: list[str] = []
    with pytest.raises(ProviderError) as caught:
        await collect(provider, "text", {"model": spec.model}, pieces)
    assert pieces == [TEXT[: len(TEXT) // 4]]  # the first token, and no more
    assert caught.value.outcome == "stream_error"
    assert spec.name in caught.value.message and spec.model in caught.value.message


async def test_an_error_inside_a_200_stream_raises_after_the_pieces_before_it(
    upstream: tuple[Upstream, FakeServer, LLMProvider],
) -> None:
    spec, fake, provider = upstream
    fake.then(StreamError(after_chunks=2))
    pieces: list[str] = []
    with pytest.raises(ProviderError) as caught:
        await collect(provider, "text", {"model": spec.model}, pieces)
    assert len(pieces) == 2
    # Anthropic's event names its error type: an overload is an overload, retried like a 529
    expected = "http_529" if spec.name == "anthropic" else "stream_error"
    assert caught.value.outcome == expected and caught.value.retryable


async def test_an_error_event_before_any_piece_raises_too(
    upstream: tuple[Upstream, FakeServer, LLMProvider],
) -> None:
    spec, fake, provider = upstream
    fake.then(StreamError("the model crashed", after_chunks=0, error_type="api_error"))
    pieces: list[str] = []
    with pytest.raises(ProviderError) as caught:
        await collect(provider, "text", {"model": spec.model}, pieces)
    assert pieces == []
    assert "the model crashed" in caught.value.message
    assert caught.value.outcome == ("http_500" if spec.name == "anthropic" else "stream_error")


async def test_a_chats_messages_are_sent_as_they_are(
    upstream: tuple[Upstream, FakeServer, LLMProvider],
) -> None:
    spec, fake, provider = upstream
    messages = [
        {"role": "system", "content": "You write tea copy."},
        {"role": "user", "content": "A line for green tea."},
        {"role": "assistant", "content": "Calm in a cup."},
        {"role": "user", "content": [{"type": "text", "text": "Shorter."}]},
    ]
    options = {"model": spec.model, "messages": messages}
    await collect(provider, "text", options, [])
    await provider.generate("ignored", "chat", "direct", "text", options)  # type: ignore[arg-type]
    for call in fake.model_calls():
        sent = call.body
        turns = [(m["role"], m["content"]) for m in sent["messages"]]
        if spec.name == "anthropic":  # the system message goes in the `system` field
            assert sent["system"] == "You write tea copy."
            assert turns[0] == ("user", "A line for green tea.")
            assert turns[-1] == ("user", "Shorter.")
            assert len(turns) == 3
        elif spec.name == "ollama":  # content is text only
            assert turns[0] == ("system", "You write tea copy.")
            assert turns[-1] == ("user", "Shorter.")
        else:  # OpenAI takes them all as they are
            assert sent["messages"] == messages
        assert "ignored" not in json.dumps(sent)


async def test_openai_streamed_json_falls_back_to_the_format_the_server_takes() -> None:
    async with FakeOpenAI(supports_json_schema=False, json_schema_status=500) as fake:
        fake.then(Reply(GOOD_COPY))
        provider = OpenAIProvider(make_settings(openai_base_url=f"{fake.url}/v1",
                                                openai_api_key="sk-test"))  # fmt: skip
        try:
            pieces: list[str] = []
            options = {"model": "gpt-4o-mini", "schema": COPY_SCHEMA}
            response = await collect(provider, "json", options, pieces)
        finally:
            await provider.aclose()
    assert response.output == GOOD_COPY and json.loads("".join(pieces)) == GOOD_COPY
    assert response.meta["response_format"] == "json_object"
    formats = [c.body["response_format"]["type"] for c in fake.model_calls()]
    assert formats == ["json_schema", "json_object"]  # turned down once, before any piece
    assert all(c.body["stream"] for c in fake.model_calls())


async def test_anthropic_json_mode_streams_the_forced_tools_input() -> None:
    async with FakeAnthropic() as fake:
        fake.then(Reply(GOOD_COPY, chunks=6))
        provider = AnthropicProvider(make_settings(anthropic_base_url=fake.url,
                                                   anthropic_api_key="sk-ant-test"))  # fmt: skip
        try:
            pieces: list[str] = []
            options = {"model": "claude-sonnet-4-5", "schema": COPY_SCHEMA}
            response = await collect(provider, "json", options, pieces)
        finally:
            await provider.aclose()
    assert len(pieces) == 6 and json.loads("".join(pieces)) == GOOD_COPY
    assert response.output == GOOD_COPY
    assert response.meta["stop_reason"] == "tool_use"
    assert fake.model_calls()[0].body["tool_choice"] == {"type": "tool", "name": "answer"}


async def test_an_ollama_stream_closed_early_leaves_the_next_call_a_clean_connection() -> None:
    async with FakeOllama() as fake:
        fake.then(Reply(TEXT, chunks=6))
        provider = OllamaProvider(make_settings(ollama_base_url=fake.url))
        try:
            stream = provider.stream("Hi", "copywriter", "channel_copy", "text",
                                     {"model": "qwen2.5:7b"})  # fmt: skip
            first = await anext(stream)
            await stream.aclose()
            # the rest of the first answer is not read by the next call on this session
            fake.then(Reply("again"))
            again = await provider.generate("Hi", "copywriter", "channel_copy", "text",
                                            {"model": "qwen2.5:7b"})  # fmt: skip
        finally:
            await provider.aclose()
    assert first == TEXT[: len(TEXT) // 6]
    assert again.output == {"text": "again"}


# -- mock ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["text", "json"])
async def test_mock_streams_its_answer_in_a_few_pieces(mode: OutputMode) -> None:
    provider = MockProvider(make_settings())
    options: dict[str, Any] = {"model": "mock-1", "payload": {"product": "Dawon green tea"}}
    if mode == "json":
        options["schema"] = COPY_SCHEMA
    try:
        pieces: list[str] = []
        response = await collect(provider, mode, options, pieces)
        again: list[str] = []
        await collect(provider, mode, options, again)
        generated = await provider.generate("Write copy for green tea.", "copywriter",
                                            "channel_copy", mode, options)  # type: ignore[arg-type]  # fmt: skip
    finally:
        await provider.aclose()
    assert 4 <= len(pieces) <= 8
    assert pieces == again  # deterministic
    joined = "".join(pieces)
    assert (json.loads(joined) if mode == "json" else {"text": joined}) == response.output
    assert response.output == generated.output


async def test_mock_answers_a_chat_from_its_messages_words() -> None:
    provider = MockProvider(make_settings())

    async def answer(words: str) -> str:
        chat = [{"role": "user", "content": words}]
        response = await collect(provider, "text", {"model": "m", "messages": chat}, [])
        return str(response.output["text"])

    try:
        tea, tea_again, boats = (
            await answer("jasmine oolong sencha matcha"),
            await answer("jasmine oolong sencha matcha"),
            await answer("sailing harbour anchor regatta"),
        )
    finally:
        await provider.aclose()
    assert tea == tea_again and tea != boats
    assert any(w in tea.lower() for w in ("jasmine", "oolong", "sencha", "matcha"))


# -- the gateway's open_stream over the fakes ------------------------------------------------


async def events_of(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


@dataclass
class Pair:
    ollama: FakeOllama
    openai: FakeOpenAI
    app: FastAPI

    @property
    def gateway(self) -> LLMGateway:
        gateway: LLMGateway = self.app.state.services.gateway
        return gateway

    async def open(self) -> AsyncIterator[StreamEvent]:
        return await self.gateway.open_stream(
            CALL["role"], CALL["task"], CALL["payload"], "json",
            output_schema=CALL["output_schema"], request_id="stream-test",
        )  # fmt: skip

    async def logged(self) -> LLMCall:
        await self.app.state.services.call_log.flush()
        async with self.app.state.services.db_engine.connect() as connection:
            rows = (
                await connection.execute(select(LLMCall).where(LLMCall.request_id == "stream-test"))
            ).all()
        assert len(rows) == 1
        return rows[0]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """Ollama first, OpenAI as the fallback; no retries, so a failure falls back at once."""
    async with FakeOllama() as ollama, FakeOpenAI(api_key=None) as openai:
        routing = tmp_path / "routing.yaml"
        routing.write_text(f"""version: 1
providers:
  ollama-fake: {{kind: ollama, base_url: "{ollama.url}"}}
  openai-fake: {{kind: openai, base_url: "{openai.url}/v1"}}
modes:
  live:
    default:
      - {{model: "qwen2.5:7b", endpoints: [ollama-fake]}}
      - {{model: "gpt-4o-mini", endpoints: [openai-fake]}}
""", encoding="utf-8")  # fmt: skip
        app = create_app(make_settings(generator_mode="live", llm_routing_file=routing,
                                       llm_max_retries=0, sparklio_home=tmp_path / "home",
                                       **FAST))  # fmt: skip
        try:
            yield Pair(ollama, openai, app)
        finally:
            await close_app(app)


async def test_a_cut_before_the_first_piece_falls_back_to_the_next_candidate(
    pair: Pair,
) -> None:
    pair.ollama.then(Cut(after_bytes=0))
    pair.openai.then(Reply(GOOD_COPY, chunks=4))
    events = await events_of(await pair.open())
    *deltas, done = events
    assert [type(e) for e in deltas] == [StreamDelta] * 4
    assert isinstance(done, StreamDone)
    assert json.loads("".join(d.text for d in deltas if isinstance(d, StreamDelta))) == GOOD_COPY
    response = done.response
    assert response.output == GOOD_COPY and response.provider == "openai-fake"
    attempts = [(a["provider"], a["outcome"]) for a in response.meta["attempts"]]
    assert attempts == [("ollama-fake", "stream_error"), ("openai-fake", "ok")]
    assert response.meta["fallback"] is True
    assert response.usage["total_tokens"] == 20
    logged = await pair.logged()
    assert (logged.outcome, logged.provider, logged.status_code) == ("ok", "openai-fake", 200)


async def test_a_cut_after_the_first_piece_ends_with_an_error_naming_where(pair: Pair) -> None:
    pair.ollama.then(Cut(after_pieces=1, reply=Reply(GOOD_COPY, chunks=4)))
    events = await events_of(await pair.open())
    first, failed = events  # one piece came, then the connection was cut: no fallback
    assert isinstance(first, StreamDelta) and first.text
    assert isinstance(failed, StreamFailed)
    details = failed.error["details"]
    assert (details["provider"], details["model"], details["outcome"]) == (
        "ollama-fake", "qwen2.5:7b", "stream_error")  # fmt: skip
    assert "ollama-fake" in failed.error["message"]
    assert [a["outcome"] for a in details["attempts"]] == ["stream_error"]
    assert pair.openai.calls == 0  # the caller already has part of this answer
    logged = await pair.logged()
    assert (logged.outcome, logged.provider, logged.model) == (
        "stream_error", "ollama-fake", "qwen2.5:7b")  # fmt: skip
    assert logged.status_code >= 500


async def test_an_error_line_after_the_first_piece_is_a_failure_never_a_done(
    pair: Pair,
) -> None:
    pair.ollama.then(StreamError("the runner crashed", after_chunks=1))
    events = await events_of(await pair.open())
    assert not any(isinstance(e, StreamDone) for e in events)
    assert [type(e) for e in events] == [StreamDelta, StreamFailed]
    failed = events[-1]
    assert isinstance(failed, StreamFailed)
    assert failed.error["details"]["outcome"] == "stream_error"
    assert "the runner crashed" in failed.error["message"]
    assert pair.openai.calls == 0
    assert (await pair.logged()).outcome == "stream_error"


async def test_an_error_line_before_the_first_piece_falls_back(pair: Pair) -> None:
    pair.ollama.then(StreamError(after_chunks=0))
    pair.openai.then(Reply(GOOD_COPY))
    events = await events_of(await pair.open())
    done = events[-1]
    assert isinstance(done, StreamDone) and done.response.output == GOOD_COPY
    assert [a["outcome"] for a in done.response.meta["attempts"]] == ["stream_error", "ok"]


async def test_closing_the_stream_early_is_logged_as_cancelled(pair: Pair) -> None:
    pair.ollama.then(Reply(GOOD_COPY, chunks=6))
    stream = await pair.open()
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert isinstance(first, StreamDelta)
    logged = await pair.logged()
    assert [a["outcome"] for a in logged.attempts] == ["cancelled"]
