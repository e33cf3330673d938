"""Ollama, through its native chat API (`POST /api/chat`), streamed as NDJSON.

Reading the stream line by line is what lets an `{"error": ...}` line inside a 200 answer be
reported as an error rather than as an empty answer (upstream-protocols.md, section 1); the
same reading serves `stream()`, which hands on each line's text as it comes, and `generate()`,
which reads it to the end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
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
    picked,
    text_messages,
    usage,
)

#: Ollama's own option names, passed through as they are when a route sets them.
NATIVE_OPTIONS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
    "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop", "num_ctx",
    "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread",
})  # fmt: skip


def ollama_options(options: ProviderOptions) -> dict[str, Any]:
    """Gateway options -> Ollama's `options` (max_tokens is `num_predict` there)."""
    mapped = picked(options, NATIVE_OPTIONS)
    if "max_tokens" in options:
        mapped["num_predict"] = options["max_tokens"]
    return mapped


def _ms(nanoseconds: Any) -> float | None:
    return round(nanoseconds / 1e6, 2) if isinstance(nanoseconds, int) else None


class OllamaProvider(HTTPProvider, LLMProvider):
    """The team's GPU desktop. Few calls at once (OLLAMA_MAX_CONCURRENCY), models kept loaded
    between calls (OLLAMA_KEEP_ALIVE)."""

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        super().__init__(settings, endpoint)
        self.chat_url = f"{self.base_url}/api/chat"

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        return EndpointDefaults(base_url=settings.ollama_base_url, timeout=settings.ollama_timeout,
                                max_concurrency=settings.ollama_max_concurrency)  # fmt: skip

    @property
    def vendor(self) -> str:
        return "ollama"

    def error_message(self, status: int, body: Any, model: str) -> str:
        message = body.get("error", "") if isinstance(body, dict) else str(body)
        if status == 404:
            return (
                f"{message or 'model not found'}. Run `ollama pull {model}` on the Ollama host "
                f"({self.base_url}), or route to a model it has (`sparklio routes`)."
            )
        return str(message)[:300]

    def is_retryable(self, status: int, body: Any) -> bool:
        # 503 is Ollama's "server busy" (queue full): worth another try; 404 never is
        return status in (500, 502, 503, 504)

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        # the same NDJSON stream as stream(), read to its end
        async with aclosing(self.stream(prompt, role, task, mode, options)) as pieces:
            async for item in pieces:
                if isinstance(item, LLMProviderResponse):
                    return item
        raise self._stream_error(options["model"], "the stream ended without an answer")

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncGenerator[str | LLMProviderResponse, None]:
        model = options["model"]
        body: dict[str, Any] = {
            "model": model,
            "messages": text_messages(prompt, options),
            "stream": True,
            "keep_alive": options.get("keep_alive", self.settings.ollama_keep_alive),
            "options": ollama_options(options),
        }
        if mode == "json":
            # the prompt also asks for JSON: without that, models pad `{}` with whitespace
            body["format"] = options.get("schema") or "json"
        parts: list[str] = []
        thinking: list[str] = []
        final: dict[str, Any] | None = None
        async with self.request("POST", self.chat_url, json=body, model=model) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                try:
                    chunk = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise self._stream_error(model, f"a line is not JSON: {line[:120]!r}") from None
                if "error" in chunk:
                    # an error after the 200 status was sent: the answer is not complete
                    raise self._stream_error(model, str(chunk["error"]))
                message = chunk.get("message") or {}
                piece = message.get("content") or ""
                thinking.append(message.get("thinking") or "")
                if piece:
                    parts.append(piece)
                    yield piece
                if chunk.get("done"):
                    final = chunk
                    break
        if final is None:
            raise self._stream_error(model, "the stream ended before its final (done) line")
        text = "".join(parts)
        truncated = final.get("done_reason") == "length"
        meta = self._meta(final)
        if mode == "json" and not text.strip() and any(thinking):
            text = "".join(thinking)  # thinking models may answer there (gpt-oss)
        output = self.answer(
            model, mode, text, truncated=truncated, meta=meta, reason="done_reason: length"
        )
        yield LLMProviderResponse(
            provider=self.name,
            model=model,
            usage=usage(final.get("prompt_eval_count", 0), final.get("eval_count", 0)),
            output=output,
            meta=meta,
        )

    def _stream_error(self, model: str, reason: str) -> ProviderError:
        return ProviderError(
            f"{self.where(model)} failed mid-answer: {reason}",
            provider=self.name, model=model, outcome="stream_error", retryable=True,
        )  # fmt: skip

    @staticmethod
    def _meta(final: dict[str, Any]) -> dict[str, Any]:
        eval_count, eval_ns = final.get("eval_count"), final.get("eval_duration")
        tokens_per_s = (
            round(eval_count / eval_ns * 1e9, 1)
            if isinstance(eval_count, int) and isinstance(eval_ns, int) and eval_ns > 0
            else None
        )
        return {
            "done_reason": final.get("done_reason"),
            "load_ms": _ms(final.get("load_duration")),
            "prompt_eval_ms": _ms(final.get("prompt_eval_duration")),
            "eval_ms": _ms(eval_ns),
            "total_ms": _ms(final.get("total_duration")),
            "tokens_per_s": tokens_per_s,
        }

    async def health(self, models: list[str]) -> ProviderHealth:
        model = models[0] if models else "-"
        async with self.request("GET", f"{self.base_url}/api/tags", model=model) as resp:
            tags = await self.read_json(resp, model)
        have = {m.get("name") for m in tags.get("models", [])}
        present = {m: m in have or f"{m}:latest" in have for m in models}
        missing = [m for m, ok in present.items() if not ok]
        message = f"missing: {', '.join(missing)} (run `ollama pull <model>`)" if missing else ""
        return ProviderHealth(available=True, message=message, models=present)
