"""Anthropic Messages API. JSON comes through one forced tool whose input_schema is the
requested schema: assistant prefill is rejected by newer models (upstream-protocols.md §4)."""

from __future__ import annotations

from typing import Any

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
    picked,
    usage,
)

API_VERSION = "2023-06-01"
TOOL_NAME = "answer"
DEFAULT_MAX_TOKENS = 1024
PASSED_OPTIONS = ("temperature", "top_p", "top_k")


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
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": options.get("max_tokens", DEFAULT_MAX_TOKENS),
            "messages": [{"role": "user", "content": prompt}],
        }
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
        async with self.request(
            "POST", self.messages_url, json=body, headers=self.headers, model=model
        ) as resp:
            answer = await self.read_json(resp, model)
        return self._response(answer, model, mode)

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
