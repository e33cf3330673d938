"""The OpenAI-compatible API through the official `openai` SDK, pointed at a real `sparklio
serve`: chat, streaming with usage, json_object and json_schema, the model list, and errors
raised as the SDK's own classes. Then the same SDK against the embedded model (llama.cpp).

Providers that do not stream yet answer a stream in one piece: the assertions hold for any
number of pieces (the joined text, the last chunks), never on how many there were.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

from tests.gateway_process import ROOT, Server

#: The routing file of the mock-mode server: an alias, and two tasks.
ROUTES = """\
version: 1
tasks:
  copywriter: [channel_copy]
  reviewer: [review]
aliases:
  copy: copywriter/channel_copy
modes:
  mock:
    default:
      - {provider: mock, model: mock-v1}
"""
CHAT = [
    {"role": "system", "content": "You write short marketing copy."},
    {"role": "user", "content": "A headline for Dawon green tea, for office workers."},
]
COPY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "headline": {"type": "string", "maxLength": 40},
        "hashtags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["headline", "hashtags"],
    "additionalProperties": False,
}


@dataclass
class Running:
    server: Server
    url: str
    member_key: str
    admin_key: str
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, key: str | None = None) -> openai.OpenAI:
        """The SDK on this server, with the member's key or `key`; no retries."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.member_key,
                               max_retries=0, timeout=120)  # fmt: skip
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.stop()


def start(home: Path, routes: str, **settings: str) -> Running:
    """`sparklio serve` with `routes`, and the test users' API keys."""
    home.mkdir(parents=True)
    path = home.parent / "routes.yaml"
    path.write_text(routes, encoding="utf-8")
    env = {**os.environ, "SPARKLIO_HOME": str(home), "LLM_ROUTING_FILE": str(path)}
    made = subprocess.run([sys.executable, "-m", "sparklio.cli", "create-test-users"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    users = {u["role"]: u["api_key"] for u in json.loads((home / "test-users.json").read_text())}
    server = Server(home, LLM_ROUTING_FILE=str(path), **settings)
    return Running(server, f"http://127.0.0.1:{server.port}", users["member"], users["admin"])


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("openai-mock") / "home", ROUTES)
    yield running
    running.stop()


pytestmark = pytest.mark.timeout(180)  # the module's server starts in the first test


def test_chat_answers_in_openai_shape(mock: Running) -> None:
    answer = mock.client().chat.completions.create(model="copy", messages=CHAT)  # type: ignore[arg-type]
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    assert answer.model == "copy"  # the name the caller asked for
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    usage = answer.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_joins_to_the_answer_with_usage_in_the_last_chunk(mock: Running) -> None:
    client = mock.client()
    whole = client.chat.completions.create(model="copywriter/channel_copy", messages=CHAT)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(
        model="copywriter/channel_copy", messages=CHAT, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # the mock answers the same chat alike
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finished[-1] == "stop" and set(finished[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stream_without_include_usage_has_no_usage_chunk(mock: Running) -> None:
    chunks = list(mock.client().chat.completions.create(
        model="copy", messages=CHAT, stream=True,  # type: ignore[arg-type]
    ))  # fmt: skip
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in chunks)


def test_json_schema_answers_json_that_matches(mock: Running) -> None:
    answer = mock.client().chat.completions.create(
        model="copy", messages=CHAT,  # type: ignore[arg-type]
        response_format={"type": "json_schema",
                         "json_schema": {"name": "copy", "schema": COPY_SCHEMA, "strict": True}},
    )  # fmt: skip
    content = answer.choices[0].message.content
    assert content is not None
    copy = json.loads(content)
    assert not list(Draft202012Validator(COPY_SCHEMA).iter_errors(copy))


def test_json_object_answers_a_json_object(mock: Running) -> None:
    answer = mock.client().chat.completions.create(
        model="copy", messages=CHAT, response_format={"type": "json_object"},  # type: ignore[arg-type]
    )  # fmt: skip
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_an_invalid_json_schema_is_422(mock: Running) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        mock.client().chat.completions.create(
            model="copy", messages=CHAT,  # type: ignore[arg-type]
            response_format={"type": "json_schema",
                             "json_schema": {"name": "bad", "schema": {"type": "bogus"}}},
        )  # fmt: skip
    assert caught.value.status_code == 422


def test_models_lists_aliases_tasks_and_endpoint_models(mock: Running) -> None:
    models = {m.id: m for m in mock.client().models.list()}
    assert set(models) == {"copy", "copywriter/channel_copy", "reviewer/review", "mock/mock-v1"}
    assert models["copy"].object == "model" and models["mock/mock-v1"].owned_by == "mock"
    answer = mock.client().chat.completions.create(model="mock/mock-v1", messages=CHAT)  # type: ignore[arg-type]
    assert answer.choices[0].message.content


def test_a_bad_key_is_an_authentication_error(mock: Running) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        mock.client("sk-spk-not-a-key").chat.completions.create(model="copy", messages=CHAT)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        mock.client("sk-spk-not-a-key").models.list()


def test_an_unknown_model_is_not_found_and_lists_the_known_ones(mock: Running) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        mock.client().chat.completions.create(model="gpt-5", messages=CHAT)  # type: ignore[arg-type]
    assert caught.value.param == "model"
    assert "gpt-5" in caught.value.message and "copywriter/channel_copy" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ],
    ids=["tools", "n", "logprobs", "logit_bias"],
)
def test_what_sparklio_cannot_honour_is_a_bad_request_naming_it(
    mock: Running, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        mock.client().chat.completions.create(model="copy", messages=CHAT, **fields)  # type: ignore[arg-type]
    assert caught.value.param == param and param in caught.value.message
    assert caught.value.type == "invalid_request_error"


def test_an_image_part_is_a_bad_request(mock: Running) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as caught:
        mock.client().chat.completions.create(
            model="copy", messages=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
        )  # fmt: skip
    assert caught.value.param == "messages[0].content[0]"


def test_text_parts_and_neutral_values_are_accepted(mock: Running) -> None:
    answer = mock.client().chat.completions.create(
        model="copy",
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Green tea"}]}],
        n=1, logprobs=False, user="someone", temperature=0, max_completion_tokens=32, seed=3,
        stop=["\n\n"], top_p=1, frequency_penalty=0, presence_penalty=0,
    )  # fmt: skip
    assert answer.choices[0].message.content


def test_a_wrong_type_is_unprocessable(mock: Running) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        mock.client().chat.completions.create(model="copy", messages=CHAT, temperature=7)  # type: ignore[arg-type]
    assert caught.value.param == "temperature"


async def test_calls_are_in_the_call_log_and_the_usage_report(mock: Running) -> None:
    client = openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key=mock.member_key,
                                max_retries=0)  # fmt: skip
    async with client:
        whole = await client.chat.completions.create(model="reviewer/review", messages=CHAT)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="reviewer/review", messages=CHAT, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )  # fmt: skip
        streamed = [chunk async for chunk in stream][-1].usage
    assert whole.usage is not None and streamed is not None
    tokens = whole.usage.total_tokens + streamed.total_tokens
    headers = {"Authorization": f"Bearer {mock.admin_key}"}
    async with httpx.AsyncClient(base_url=mock.url, headers=headers) as http:
        review: dict[str, Any] = {}

        async def counted() -> bool:
            report = (await http.get("/api/v1/usage", params={"group_by": "task"})).json()
            review.update(next((g for g in report["groups"] if g["key"] == "review"), {}))
            return review.get("calls") == 2

        # the call log writes in the background: polled over HTTP, with no event to wait on;
        # the test's timeout is the backstop
        while not await counted():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert review["errors"] == 0 and review["total_tokens"] == tokens


#: A schema no answer can match, in a way the mock does not see coming (an integer that is
#: not a multiple of 1): its answer fails the gateway's check.
IMPOSSIBLE: dict[str, Any] = {
    "type": "object",
    "properties": {"count": {"type": "integer", "not": {"multipleOf": 1}}},
    "required": ["count"],
}
IMPOSSIBLE_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "impossible", "schema": IMPOSSIBLE},
}


def test_an_answer_that_fails_its_schema_is_a_server_error(mock: Running) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        mock.client().chat.completions.create(
            model="copy", messages=CHAT, response_format=IMPOSSIBLE_FORMAT,  # type: ignore[arg-type]
        )  # fmt: skip
    assert caught.value.status_code == 502 and caught.value.code == "output_invalid"


def test_a_stream_that_fails_after_it_began_raises_an_api_error_naming_what_failed(
    mock: Running,
) -> None:
    stream = mock.client().chat.completions.create(
        model="copy", messages=CHAT, stream=True, response_format=IMPOSSIBLE_FORMAT,  # type: ignore[arg-type]
    )  # fmt: skip
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert not isinstance(caught.value, openai.APIStatusError)  # the stream's status was 200
    assert received and received[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].finish_reason is None for c in received)  # never a success
    message = caught.value.message
    assert "mock" in message and "mock-v1" in message and "schema_invalid" in message
    assert caught.value.code == "output_invalid"


# --- the embedded model (llama.cpp, SmolLM2) through the same SDK -------------------------

LOCAL_ROUTES = """\
version: 1
modes:
  live:
    default:
      - {provider: llamacpp, model: smollm2-135m-instruct, options: {max_tokens: 64}}
"""
HELLO = [{"role": "user", "content": "Say hello in five words."}]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # looked up, not imported: the model runs in the server's process, not this one
    if importlib.util.find_spec("llama_cpp") is None:  # pragma: no cover
        assert not os.environ.get("CI"), "CI installs the local extra: it must not skip there"
        pytest.skip("llama-cpp-python is not installed: pip install -e '.[local]'")
    running = start(tmp_path_factory.mktemp("openai-local") / "home", LOCAL_ROUTES,
                    GENERATOR_MODE="live", LLAMACPP_THREADS="1")  # fmt: skip
    yield running
    running.stop()


@pytest.mark.timeout(300)  # loading the model and generating on a busy 2-core machine
def test_the_embedded_model_chats_through_the_sdk(local: Running) -> None:
    answer = local.client().chat.completions.create(
        model="chat/any", messages=HELLO, max_tokens=16, temperature=0,  # type: ignore[arg-type]
    )  # fmt: skip
    assert answer.model == "chat/any"
    content = answer.choices[0].message.content
    assert content and content.strip()
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 16


@pytest.mark.timeout(300)
def test_the_embedded_model_streams_through_the_sdk(local: Running) -> None:
    chunks = list(local.client().chat.completions.create(
        model="chat/any", messages=HELLO, max_tokens=16, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and 0 < usage.completion_tokens <= 16
