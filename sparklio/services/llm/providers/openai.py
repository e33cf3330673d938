"""OpenAI Chat Completions, and any server that speaks it (vLLM, LM Studio, llama.cpp server)
at OPENAI_BASE_URL."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from sparklio.core.config import Settings
from sparklio.exceptions import ProviderError
from sparklio.services.gateway.http import HTTPProvider
from sparklio.services.gateway.providers import EndpointConfig, EndpointDefaults
from sparklio.services.llm.providers.base import (
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    ProviderHealth,
    ProviderOptions,
    chat_messages,
    picked,
    usage,
)
from sparklio.services.llm.providers.sse import Event, sse_events

T = TypeVar("T")

#: Statuses with which servers that copy the API turn down `response_format: json_schema`:
#: OpenAI-style 400s, FastAPI-style 422s, and llama-cpp-python's server, which answers a 500
#: (checked by hand, llama-cpp-python 0.3.36):
#:   {"error": {"message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body',
#:    'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input':
#:    'json_schema', ...}", "type": "internal_server_error", "param": null, "code": null}}
FORMAT_REFUSALS = frozenset({"http_400", "http_422", "http_500"})
#: json mode's response formats, richest first. llama.cpp's servers (llama-server and
#: llama-cpp-python's) constrain the answer to a schema sent with json_object; a server that
#: turns that extra key down too gets plain json_object.
FORMATS = ("json_schema", "json_object_schema", "json_object")

#: Gateway options that Chat Completions takes under the same name.
PASSED_OPTIONS = ("temperature", "top_p", "seed", "stop", "max_tokens", "max_completion_tokens",
                  "frequency_penalty", "presence_penalty")  # fmt: skip


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts `schema`: every object closed and fully required."""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", ())) != set(properties):
            return False
    return all(strict_compatible(v) for v in schema.values() if isinstance(v, dict | list))


class OpenAIProvider(HTTPProvider, LLMProvider):
    """Chat Completions with `response_format` json_schema, or json_object where the server
    lacks json_schema (learnt from its refusal once per endpoint and model, then remembered)."""

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        super().__init__(settings, endpoint)
        self.chat_url = f"{self.base_url}/chat/completions"
        key = self.endpoint.api_key
        self.headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self._unavailable = self._why_unavailable()
        #: the FORMATS each (endpoint, model) turned down, so later calls skip them
        self._refused: dict[tuple[str, str], set[str]] = {}

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        return EndpointDefaults(base_url=settings.openai_base_url, timeout=settings.openai_timeout,
                                max_concurrency=settings.openai_max_concurrency,
                                api_key=settings.openai_api_key,
                                api_key_env="OPENAI_API_KEY")  # fmt: skip

    @property
    def vendor(self) -> str:
        return "openai"

    def unavailable_reason(self) -> str | None:
        # asked before every attempt: the answer is fixed once the endpoint is built
        return self._unavailable

    def _why_unavailable(self) -> str | None:
        # local OpenAI-compatible servers usually need no key; api.openai.com always does
        if not self.headers and urlsplit(self.base_url).hostname == "api.openai.com":
            return (
                f"{self.endpoint.api_key_env} is not set: set it, or point the endpoint's "
                "base URL (OPENAI_BASE_URL) at a local server."
            )
        return None

    def error_message(self, status: int, body: Any, model: str) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message", ""))[:400]
            if error.get("param"):
                message += f" (param: {error['param']})"
            if status == 401:
                message += " Check OPENAI_API_KEY."
            return message
        return str(body)[:300]

    def is_retryable(self, status: int, body: Any) -> bool:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and "insufficient_quota" in (
            error.get("code"),
            error.get("type"),
        ):
            return False  # out of credit: waiting will not help (upstream-protocols.md §5)
        return super().is_retryable(status, body)

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        model = options["model"]
        body = self._body(prompt, options)
        if mode != "json":
            return self._response(await self._complete(body, model), model, mode)
        answer = await self._formatted(body, model, options.get("schema"), self._complete)
        response = self._response(answer, model, mode)
        response.meta["response_format"] = body["response_format"]["type"]
        return response

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncIterator[str | LLMProviderResponse]:
        model = options["model"]
        body = self._body(prompt, options)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        if mode == "json":  # a refused format is known from the status, before any piece
            events = await self._formatted(body, model, options.get("schema"), self._open)
        else:
            events = await self._open(body, model)
        parts: list[str] = []
        refusal: list[str] = []
        finish: str | None = None
        counts: dict[str, Any] = {}
        upstream_id = served = None
        done = False
        async with aclosing(events):
            async for event in events:
                if event.data.strip() == "[DONE]":
                    done = True
                    break
                chunk = self._chunk(event.data, model)
                upstream_id = chunk.get("id", upstream_id)
                served = chunk.get("model", served)
                counts = chunk.get("usage") or counts
                choices = chunk.get("choices") or []
                if not choices or not isinstance(choices[0], dict):
                    continue  # the usage chunk has none
                choice = choices[0]
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                if delta.get("refusal"):
                    refusal.append(str(delta["refusal"]))
                piece = delta.get("content")
                if piece:
                    parts.append(piece)
                    yield piece
        if not done:
            raise self._stream_error(model, "the stream ended without its [DONE] line")
        message = {"content": "".join(parts), "refusal": "".join(refusal) or None}
        answer = {"id": upstream_id, "model": served, "usage": counts,
                  "choices": [{"message": message, "finish_reason": finish}]}  # fmt: skip
        response = self._response(answer, model, mode)
        if mode == "json":
            response.meta["response_format"] = body["response_format"]["type"]
        yield response

    def _body(self, prompt: str, options: ProviderOptions) -> dict[str, Any]:
        body: dict[str, Any] = {"model": options["model"],
                                "messages": chat_messages(prompt, options)}  # fmt: skip
        body.update(picked(options, PASSED_OPTIONS))
        return body

    async def _formatted(
        self,
        body: dict[str, Any],
        model: str,
        schema: dict[str, Any] | None,
        send: Callable[[dict[str, Any], str], Awaitable[T]],
    ) -> T:
        """`send(body)` in json mode: with the richest response format the server takes,
        falling back to the next of FORMATS when it turns one down (`body` keeps the one
        that was taken)."""
        refused = self._refused.setdefault((self.chat_url, model), set())
        # the richest format first; one the server turned down before is not tried again
        kinds = [k for k in FORMATS if k not in refused] if schema is not None else []
        kinds = kinds or ["json_object"]
        while True:
            body["response_format"] = self._format(kinds[0], schema)
            try:
                return await send(body, model)
            except ProviderError as exc:
                # the next format is tried within this one attempt: no retry is spent on it
                if len(kinds) == 1 or not self._turned_down(exc):
                    raise
                if "invalid schema" not in exc.message.lower():
                    # the server lacks the format: remembered. A schema it could not take
                    # (OpenAI's "Invalid schema for response_format") says nothing about the
                    # next call's schema, so that is not
                    refused.add(kinds[0])
                kinds.pop(0)

    async def _open(self, body: dict[str, Any], model: str) -> AsyncGenerator[Event, None]:
        """The streamed request, sent and its status checked (an error status raises here),
        then its events."""
        events = self._events(body, model)
        try:
            await anext(events)  # the request's status, checked
        except BaseException:
            await events.aclose()
            raise
        return events

    async def _events(self, body: dict[str, Any], model: str) -> AsyncGenerator[Event, None]:
        async with self.request(
            "POST", self.chat_url, json=body, headers=self.headers, model=model
        ) as resp:
            yield Event("open", "")
            async for event in sse_events(resp):
                yield event

    def _chunk(self, data: str, model: str) -> dict[str, Any]:
        """One streamed chunk; an `error` event (a failure after the 200) raises."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._stream_error(model, f"an event is not JSON: {data[:120]!r}") from None
        if not isinstance(chunk, dict):
            raise self._stream_error(model, f"an event is not an object: {data[:120]!r}")
        error = chunk.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise self._stream_error(model, str(message)[:300])
        return chunk

    def _stream_error(self, model: str, reason: str) -> ProviderError:
        return ProviderError(
            f"{self.where(model)} failed mid-answer: {reason}",
            provider=self.name, model=model, outcome="stream_error", retryable=True,
        )  # fmt: skip

    @staticmethod
    def _format(kind: str, schema: dict[str, Any] | None) -> dict[str, Any]:
        """The `response_format` body of one of FORMATS."""
        if kind == "json_schema" and schema is not None:
            return {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema,
                                "strict": strict_compatible(schema)},
            }  # fmt: skip
        if kind == "json_object_schema" and schema is not None:
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"}

    @staticmethod
    def _turned_down(exc: ProviderError) -> bool:
        """Whether `exc` is the server refusing the response format it was sent."""
        named = "response_format" in exc.message or "json_schema" in exc.message
        return named and exc.outcome in FORMAT_REFUSALS

    async def _complete(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        async with self.request(
            "POST", self.chat_url, json=body, headers=self.headers, model=model
        ) as resp:
            answer: dict[str, Any] = await self.read_json(resp, model)
            return answer

    def _response(
        self, answer: dict[str, Any], model: str, mode: OutputMode
    ) -> LLMProviderResponse:
        where = self.where(model)
        try:
            choice = answer["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise ProviderError(
                f"{where}: the answer has no choices[0].message: {str(answer)[:200]}",
                provider=self.name, model=model, outcome="stream_error", retryable=True,
            ) from None  # fmt: skip
        if message.get("refusal"):
            raise ProviderError(
                f"{where} refused: {message['refusal']}",
                provider=self.name, model=model, outcome="refused",
            )  # fmt: skip
        text = message.get("content") or ""
        truncated = choice.get("finish_reason") == "length"
        meta: dict[str, Any] = {
            "finish_reason": choice.get("finish_reason"),
            "upstream_id": answer.get("id"),
            "served_model": answer.get("model"),
        }
        output = self.answer(
            model, mode, text, truncated=truncated, meta=meta, reason="finish_reason: length"
        )
        counts = answer.get("usage") or {}
        return LLMProviderResponse(
            provider=self.name,
            model=model,
            usage=usage(counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)),
            output=output,
            meta=meta,
        )

    async def health(self, models: list[str]) -> ProviderHealth:
        return await self.listed_models(f"{self.base_url}/models", models, self.headers)
