"""The provider interface every LLM provider implements (its lifecycle is `Provider`'s).

A provider turns one rendered prompt into one answer. It knows its wire protocol and nothing
about routing, retries or schemas beyond passing the schema on: the gateway does the rest.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any

import orjson

from sparklio.exceptions import ProviderError
from sparklio.services.providers import Provider, ProviderHealth
from sparklio.wire.llm import LLMProviderResponse, OutputMode

__all__ = [
    "LLMProvider",
    "LLMProviderResponse",
    "OutputMode",
    "ProviderHealth",
    "parse_json_object",
    "usage",
]

_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.S)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """A usage dict with the total filled in."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def parse_json_object(text: str, where: str) -> dict[str, Any]:
    """The JSON object in a model's answer, allowing code fences and prose around it.

    Raises ProviderError(outcome="invalid_json") carrying the answer, for a repair attempt.
    """
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    start, end = candidate.find("{"), candidate.rfind("}")
    if start > 0 and end > start:  # prose around the object
        candidate = candidate[start : end + 1]
    try:
        value = orjson.loads(candidate)
    except orjson.JSONDecodeError as exc:
        reason = "an empty answer" if not text.strip() else f"not valid JSON ({exc})"
        raise ProviderError(
            f"{where} answered with {reason}.", outcome="invalid_json", raw=text
        ) from None
    if not isinstance(value, dict):
        raise ProviderError(
            f"{where} answered with a JSON {type(value).__name__}, not an object.",
            outcome="invalid_json",
            raw=text,
        )
    return value


class LLMProvider(Provider):
    """One model backend. Subclasses are registered by vendor name in the provider registry.

    `options` passed to `generate` carry `model` (always), `temperature`, `max_tokens`, `seed`,
    `schema` (json mode, when the caller gave one), `payload` (the caller's data, for providers
    that build answers from it) and any provider-specific extras from the routing file.
    """

    @property
    def supports_json(self) -> bool:
        """Whether the backend can be asked for JSON output natively."""
        return False

    @abstractmethod
    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: dict[str, Any],
    ) -> LLMProviderResponse:
        """Answer one prompt."""

    def answer(
        self,
        model: str,
        mode: OutputMode,
        text: str,
        *,
        truncated: bool,
        meta: dict[str, Any],
        reason: str = "",
    ) -> dict[str, Any]:
        """The `output` for a model's answer text: the parsed object in json mode (a cut-off
        answer is the outcome `truncated`), `{"text": ...}` in text mode, where a cut-off
        answer is still returned, flagged `meta.truncated`, since it was paid for."""
        where = f"{self.vendor}/{model}"
        if mode == "json":
            if truncated:
                raise ProviderError(
                    f"{where} stopped at its token limit{f' ({reason})' if reason else ''}; the "
                    "JSON is cut off. Raise max_tokens "
                    "(or the context size) for this route.",
                    provider=self.vendor, model=model, outcome="truncated", raw=text,
                )  # fmt: skip
            return parse_json_object(text, where)
        if truncated:
            meta["truncated"] = True
        return {"text": text}
