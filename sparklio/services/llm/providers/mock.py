"""The mock provider: instant, deterministic, schema-valid answers for GENERATOR_MODE=mock."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Any

import orjson

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock import FULL_NODES, INLINE_NODES, OverBudget, SchemaTools
from sparklio.services.llm.mockdata import MockData
from sparklio.services.llm.providers.base import (
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    usage,
)

_GENERIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["title", "summary"],
}
_TOOLS_CACHED = 64  # distinct schemas whose resolver and compiled checks are kept


def _seed(*parts: Any) -> int:
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def _tokens(text: str) -> int:
    """A rough token count: about four characters a token, as for English BPE vocabularies."""
    return max(1, len(text) // 4)


def build(payload: Any, seed: int, tools: SchemaTools, nodes: int) -> Any:
    """A schema-valid value if the walk finds one: the realistic answer, or else the smallest
    one; the realistic answer (which the gateway will report) when neither validates."""
    first = MockData(payload, seed).from_schema(tools, nodes)
    if tools.valid(first):
        return first
    try:
        small = MockData(payload, seed).from_schema(tools, nodes, minimal=True)
    except InvalidRequestError:
        return first
    return small if tools.valid(small) else first


class MockProvider(LLMProvider):
    """Builds its answer from the requested schema and the payload's own words.

    The same (role, task, payload, schema, seed) always gives the same output. Small schemas
    are answered on the event loop; a walk that outgrows a few milliseconds of work is
    started again in a worker thread with the full budget, so it never stalls other callers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tools: OrderedDict[bytes, SchemaTools] = OrderedDict()

    @property
    def vendor(self) -> str:
        return "mock"

    @property
    def supports_json(self) -> bool:
        return True

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: dict[str, Any],
    ) -> LLMProviderResponse:
        payload = options.get("payload", {})
        schema = options.get("schema") or _GENERIC_SCHEMA
        seed = _seed(role, task, payload, schema if mode == "json" else None, options.get("seed"))
        if mode == "json":
            output: dict[str, Any] = await self._json(payload, seed, schema)
            completion = orjson.dumps(output).decode()
        else:
            completion = MockData(payload, seed).paragraph(4)
            output = {"text": completion}
        return LLMProviderResponse(
            provider=self.vendor,
            model=str(options.get("model", "mock")),
            usage=usage(_tokens(prompt), _tokens(completion)),
            output=output,
            meta={"mock": True},
        )

    async def _json(self, payload: Any, seed: int, schema: dict[str, Any]) -> Any:
        tools = self._tools_for(schema)
        try:
            return build(payload, seed, tools, INLINE_NODES)
        except OverBudget:
            pass
        try:
            return await asyncio.to_thread(build, payload, seed, tools, FULL_NODES)
        except OverBudget:
            raise InvalidRequestError(
                f"output_schema is too large or too tangled for the mock: no answer within "
                f"{FULL_NODES:,} steps of work. Simplify it (fewer nested anyOf/oneOf, "
                "smaller minItems) or test it against a real model."
            ) from None

    def _tools_for(self, schema: dict[str, Any]) -> SchemaTools:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        tools = self._tools.get(key)
        if tools is None:
            tools = self._tools[key] = SchemaTools(schema)
            if len(self._tools) > _TOOLS_CACHED:
                self._tools.popitem(last=False)
        else:
            self._tools.move_to_end(key)
        return tools
