"""Streaming on the native API: `POST /api/v1/llm/generate` with `"stream": true` and
`LLMGatewayClient.stream()`: deltas then the whole response; a failure before the first
piece falls back, one after it ends with an error naming provider, model and outcome; a
client that goes away cancels the upstream call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from sparklio.db.models import LLMCall
from sparklio.exceptions import ProviderError
from sparklio.main import close_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.llm.providers.base import (
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    ProviderOptions,
)
from sparklio.wire.llm import StreamDelta, StreamDone
from tests.conftest import app_with, make_settings, token_for
from tests.fakes import refused_url
from tests.live import COPY_SCHEMA
from tests.servers import serve_in_thread

CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {"product": "Dawon green tea"},
    "schema": COPY_SCHEMA,
}
FIRST = '{"headline": "Calm'


class Breaking(LLMProvider):
    """Writes the start of an answer, then its connection is cut."""

    @property
    def vendor(self) -> str:
        return "breaking"

    async def generate(self, prompt: str, role: str, task: str, mode: OutputMode,
                       options: ProviderOptions) -> LLMProviderResponse:  # fmt: skip
        raise AssertionError("a stream does not call generate")

    async def stream(
        self, prompt: str, role: str, task: str, mode: OutputMode, options: ProviderOptions
    ) -> AsyncIterator[str | LLMProviderResponse]:
        yield FIRST
        raise ProviderError(
            f"{self.where(options['model'])}: the connection was cut mid-answer.",
            provider=self.name, model=options["model"], outcome="stream_error",
        )  # fmt: skip


class Waiting(LLMProvider):
    """Writes the start of an answer, then waits for ever; says when its stream is closed."""

    closed = threading.Event()

    @property
    def vendor(self) -> str:
        return "waiting"

    async def generate(self, prompt: str, role: str, task: str, mode: OutputMode,
                       options: ProviderOptions) -> LLMProviderResponse:  # fmt: skip
        raise AssertionError("a stream does not call generate")

    async def stream(
        self, prompt: str, role: str, task: str, mode: OutputMode, options: ProviderOptions
    ) -> AsyncIterator[str | LLMProviderResponse]:
        try:
            yield FIRST
            await asyncio.Event().wait()
            yield FIRST  # never reached
        finally:
            Waiting.closed.set()


def routes(tmp_path: Path, chain: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(f"version: 1\nmodes:\n  live:\n    default:\n{chain}", encoding="utf-8")
    return path


async def events(client: LLMGatewayClient, **call: Any) -> list[StreamDelta | StreamDone]:
    return [event async for event in client.stream(**call)]


async def test_a_stream_is_deltas_then_the_whole_response(llm: LLMGatewayClient) -> None:
    got = await events(llm, role="copywriter", task="channel_copy",
                       payload={"product": "Dawon green tea"}, schema=COPY_SCHEMA)  # fmt: skip
    *deltas, done = got
    assert deltas and all(isinstance(d, StreamDelta) for d in deltas)
    assert isinstance(done, StreamDone)
    response = done.response
    assert orjson.loads("".join(d.text for d in deltas)) == response.output
    assert set(response.output) >= {"headline", "body"}
    assert [a["outcome"] for a in response.meta["attempts"]] == ["ok"]
    assert response.meta["role"] == "copywriter" and response.usage["total_tokens"] > 0


async def test_a_failure_before_the_first_piece_falls_back(tmp_path: Path) -> None:
    chain = ('      - {provider: ollama, model: "qwen2.5:7b"}\n'
             "      - {provider: mock, model: mock-v1}\n")  # fmt: skip
    settings = make_settings(sparklio_home=tmp_path / "home", generator_mode="live",
                             llm_routing_file=routes(tmp_path, chain),
                             ollama_base_url=refused_url())  # fmt: skip
    app = app_with(settings)
    try:
        async with LLMGatewayClient(base_url="http://gw", api_key=await token_for(app),
                                    transport=httpx.ASGITransport(app=app)) as client:  # fmt: skip
            *_, done = await events(client, **CALL)
    finally:
        await close_app(app)
    assert isinstance(done, StreamDone)
    attempts = done.response.meta["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("ollama", "connection_refused"),
        ("mock", "ok"),
    ]
    assert done.response.meta["fallback"] is True


async def test_a_stream_cut_after_its_first_piece_ends_with_an_error_naming_it(
    tmp_path: Path,
) -> None:
    chain = ("      - {provider: breaking, model: b-1}\n"
             "      - {provider: mock, model: mock-v1}\n")  # fmt: skip
    settings = make_settings(sparklio_home=tmp_path / "home", generator_mode="live",
                             llm_routing_file=routes(tmp_path, chain))  # fmt: skip
    app = app_with(settings, breaking=Breaking)
    seen: list[str] = []
    try:
        async with LLMGatewayClient(base_url="http://gw", api_key=await token_for(app),
                                    transport=httpx.ASGITransport(app=app)) as client:  # fmt: skip
            with pytest.raises(ProviderError) as caught:
                async for event in client.stream(**CALL):
                    assert isinstance(event, StreamDelta)  # never a done
                    seen.append(event.text)
            services = app.state.services
            await services.call_log.flush()
            async with services.db_sessions() as session:
                [row] = (await session.execute(select(LLMCall))).scalars().all()
    finally:
        await close_app(app)
    assert seen == [FIRST]  # what was written before the cut reached the client
    error = caught.value
    assert (error.provider, error.model, error.outcome) == ("breaking", "b-1", "stream_error")
    assert "cut mid-answer" in error.message
    # no fallback once the answer began; the call log says how it ended
    assert [a["outcome"] for a in error.details["attempts"]] == ["stream_error"]
    assert (row.provider, row.outcome, row.status_code) == ("breaking", "stream_error", 502)


def test_a_client_that_goes_away_cancels_the_upstream_call(tmp_path: Path) -> None:
    chain = "      - {provider: waiting, model: w-1}\n"
    settings = make_settings(sparklio_home=tmp_path / "home", generator_mode="live",
                             llm_routing_file=routes(tmp_path, chain))  # fmt: skip
    Waiting.closed.clear()
    app = app_with(settings, waiting=Waiting)
    key = asyncio.run(token_for(app))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        body = {"role": "copywriter", "task": "channel_copy", "payload": {}, "stream": True}
        with http.stream("POST", "/api/v1/llm/generate", json=body,
                         headers={"Authorization": f"Bearer {key}"}) as response:  # fmt: skip
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = next(response.iter_lines())
            assert first == "event: delta"
        # the connection is closed: the server cancels the response and the provider's stream
        assert Waiting.closed.wait(10), "the upstream stream was not closed"
