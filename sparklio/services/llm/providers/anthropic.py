"""Anthropic Messages API. JSON comes through one forced tool whose input_schema is the
requested schema: assistant prefill is rejected by newer models (upstream-protocols.md §4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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
    message_text,
    picked,
    usage,
)
from sparklio.services.llm.providers.sse import sse_events

API_VERSION = "2023-06-01"
TOOL_NAME = "answer"
DEFAULT_MAX_TOKENS = 1024
PASSED_OPTIONS = ("temperature", "top_p", "top_k")
#: The HTTP status each error type of a streamed `error` event stands for (upstream-protocols.md
#: §4), so a mid-stream overload is an overload: counted, and retried, like a 529.
STREAM_ERROR_STATUS = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429,
                       "timeout_error": 504}  # fmt: skip


def anthropic_messages(
    messages: list[dict[str, Any]],
) -> tuple[str, list[dict[str, Any]]]:
    """A chat in the Messages API's shape: its system (and developer) messages' text, which go
    in the `system` field, and the rest, as user or assistant turns."""
    system = [message_text(m.get("content")) for m in messages
              if m.get("role") in ("system", "developer")]  # fmt: skip
    turns = [
        {"role": "assistant" if m.get("role") == "assistant" else "user",
         "content": content if isinstance(content := m.get("content"), str)
         else message_text(content)}
        for m in messages
        if m.get("role") not in ("system", "developer")
    ]  # fmt: skip
    return "\n\n".join(s for s in system if s), turns


class AnthropicProvider(HTTPProvider, LLMProvider):
    """Claude through `POST /v1/messages`; 429 honours retry-after, 529 (overloaded) retries."""

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        super().__init__(settings, endpoint)
        self.messages_url = f"{self.base_url}/v1/messages"
        key = self.endpoint.api_key
        self.headers = {"anthropic-version": API_VERSION}
        if key:
            self.headers["x-api-key"] = key.get_secret_value()

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        return EndpointDefaults(base_url=settings.anthropic_base_url,
                                timeout=settings.anthropic_timeout,
                                max_concurrency=settings.anthropic_max_concurrency,
                                api_key=settings.anthropic_api_key,
                                api_key_env="ANTHROPIC_API_KEY")  # fmt: skip

    @property
    def vendor(self) -> str:
        return "anthropic"

    def unavailable_reason(self) -> str | None:
        if "x-api-key" not in self.headers:
            return f"{self.endpoint.api_key_env} is not set: set it to use Anthropic models."
        return None

    def error_message(self, status: int, body: Any, model: str) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = f"{error.get('type', 'error')}: {error.get('message', '')}"
            return message + (" Check ANTHROPIC_API_KEY." if status == 401 else "")
        return str(body)[:300]

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        model = options["model"]
        body = self._body(prompt, mode, options)
        async with self.request(
            "POST", self.messages_url, json=body, headers=self.headers, model=model
        ) as resp:
            answer = await self.read_json(resp, model)
        return self._response(answer, model, mode)

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncIterator[str | LLMProviderResponse]:
        model = options["model"]
        body = self._body(prompt, mode, options)
        body["stream"] = True
        message: dict[str, Any] = {}
        blocks: dict[int, dict[str, Any]] = {}
        partial_json: dict[int, list[str]] = {}
        done = False
        async with self.request(
            "POST", self.messages_url, json=body, headers=self.headers, model=model
        ) as resp:
            async for event in sse_events(resp):
                data = self._event(event.name, event.data, model)
                kind = data.get("type", event.name)
                if kind == "message_start":
                    message = dict(data.get("message") or {})
                    message["usage"] = dict(message.get("usage") or {})
                elif kind == "content_block_start":
                    index = int(data.get("index", len(blocks)))
                    blocks[index] = dict(data.get("content_block") or {})
                elif kind == "content_block_delta":
                    index = int(data.get("index", 0))
                    block = blocks.setdefault(index, {"type": "text", "text": ""})
                    delta = data.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        block["text"] = block.get("text", "") + delta["text"]
                        yield delta["text"]
                    elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                        partial_json.setdefault(index, []).append(delta["partial_json"])
                        if mode == "json":
                            yield delta["partial_json"]
                elif kind == "message_delta":
                    delta = data.get("delta") or {}
                    if "stop_reason" in delta:
                        message["stop_reason"] = delta["stop_reason"]
                    usage_now = message.setdefault("usage", {})
                    usage_now.update(data.get("usage") or {})  # output_tokens is cumulative
                elif kind == "message_stop":
                    done = True
                    break
        if not done:
            raise self._failure(model, "the stream ended before its message_stop event")
        for index, pieces in partial_json.items():
            joined = "".join(pieces)
            try:
                blocks[index]["input"] = orjson.loads(joined) if joined.strip() else {}
            except orjson.JSONDecodeError:
                if mode == "json" and message.get("stop_reason") != "max_tokens":
                    raise ProviderError(
                        f"{self.where(model)} called the {TOOL_NAME!r} tool with input that "
                        f"is not JSON: {joined[:200]!r}",
                        provider=self.name, model=model, outcome="invalid_json", raw=joined,
                    ) from None  # fmt: skip
                blocks[index]["input"] = None
        message["content"] = [blocks[i] for i in sorted(blocks)]
        yield self._response(message, model, mode)

    def _body(self, prompt: str, mode: OutputMode, options: ProviderOptions) -> dict[str, Any]:
        system, messages = anthropic_messages(chat_messages(prompt, options))
        body: dict[str, Any] = {
            "model": options["model"],
            "max_tokens": options.get("max_tokens", DEFAULT_MAX_TOKENS),
            "messages": messages,
        }
        if system:
            body["system"] = system
        body.update(picked(options, PASSED_OPTIONS))
        if "stop" in options:
            stop = options["stop"]
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        if mode == "json":
            schema = options.get("schema") or {"type": "object"}
            body["tools"] = [{
                "name": TOOL_NAME,
                "description": "Give your answer as this tool's input.",
                "input_schema": {"type": "object", **schema},
            }]  # fmt: skip
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        return body

    def _event(self, name: str, data: str, model: str) -> dict[str, Any]:
        """One event's data; an `error` event (a failure after the 200) raises."""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._failure(model, f"an event is not JSON: {data[:120]!r}") from None
        if not isinstance(parsed, dict):
            raise self._failure(model, f"an event is not an object: {data[:120]!r}")
        if name == "error" or parsed.get("type") == "error":
            error = parsed.get("error")
            error = error if isinstance(error, dict) else {"message": str(error)}
            type_ = str(error.get("type", "error"))
            status = STREAM_ERROR_STATUS.get(type_)
            # the outcome (and retries) an error status of this type would have had
            raise ProviderError(
                f"{self.where(model)} failed mid-answer: {type_}: {error.get('message', '')}",
                provider=self.name, model=model,
                outcome=f"http_{status}" if status else "stream_error",
                retryable=status is None or self.is_retryable(status, parsed),
            )  # fmt: skip
        return parsed

    def _failure(self, model: str, reason: str) -> ProviderError:
        return ProviderError(
            f"{self.where(model)} failed mid-answer: {reason}",
            provider=self.name, model=model, outcome="stream_error", retryable=True,
        )  # fmt: skip

    def _response(self, answer: Any, model: str, mode: OutputMode) -> LLMProviderResponse:
        where = self.where(model)
        blocks = answer.get("content") if isinstance(answer, dict) else None
        if not isinstance(blocks, list):
            raise ProviderError(
                f"{where}: the answer has no content blocks: {str(answer)[:200]}",
                provider=self.name, model=model, outcome="stream_error", retryable=True,
            )  # fmt: skip
        stop_reason = answer.get("stop_reason")
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        meta: dict[str, Any] = {"stop_reason": stop_reason, "upstream_id": answer.get("id")}
        if stop_reason == "refusal":
            raise ProviderError(f"{where} refused to answer.", provider=self.name, model=model,
                                outcome="refused")  # fmt: skip
        truncated = stop_reason == "max_tokens"
        tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
        if mode == "json" and not truncated and tool is not None:
            if not isinstance(tool.get("input"), dict):
                raise ProviderError(
                    f"{where} called the {TOOL_NAME!r} tool without a JSON object.",
                    provider=self.name, model=model, outcome="invalid_json", raw=text,
                )  # fmt: skip
            output: dict[str, Any] = tool["input"]
        else:  # text mode, a cut-off answer, or a model that answered in text after all
            output = self.answer(
                model, mode, text, truncated=truncated, meta=meta, reason="stop_reason: max_tokens"
            )
        counts = answer.get("usage") or {}
        return LLMProviderResponse(
            provider=self.name,
            model=model,
            usage=usage(counts.get("input_tokens", 0), counts.get("output_tokens", 0)),
            output=output,
            meta=meta,
        )

    async def health(self, models: list[str]) -> ProviderHealth:
        return await self.listed_models(f"{self.base_url}/v1/models", models, self.headers)
