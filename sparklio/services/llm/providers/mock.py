"""The mock provider: instant, deterministic, schema-valid answers for GENERATOR_MODE=mock."""

from __future__ import annotations

import hashlib
from typing import Any

import jsonschema_rs
import orjson

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


def _seed(*parts: Any) -> int:
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def _tokens(text: str) -> int:
    """A rough token count: about four characters a token, as for English BPE vocabularies."""
    return max(1, len(text) // 4)


class MockProvider(LLMProvider):
    """Builds its answer from the requested schema and the payload's own words.

    The same (role, task, payload, schema, seed) always gives the same output.
    """

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
        data = MockData(payload, seed, root_schema=schema, check=_checker(schema))
        if mode == "json":
            output: dict[str, Any] = data.from_schema(schema)
            completion = orjson.dumps(output).decode()
        else:
            completion = data.paragraph(4)
            output = {"text": completion}
        return LLMProviderResponse(
            provider=self.vendor,
            model=str(options.get("model", "mock")),
            usage=usage(_tokens(prompt), _tokens(completion)),
            output=output,
            meta={"mock": True},
        )


def _checker(root: dict[str, Any]) -> Any:
    """A function telling whether a value matches a sub-schema of `root`.

    Only oneOf needs it, so validators are built on demand; the sub-schema carries the root's
    `$defs` so its references resolve.
    """
    defs: dict[str, Any] = {k: root[k] for k in ("$defs", "definitions") if k in root}

    def check(schema: dict[str, Any], value: Any) -> bool:
        try:
            return bool(jsonschema_rs.validator_for({**defs, **schema}).is_valid(value))
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError):
            return True  # a reference outside $defs: let the gateway's own check decide

    return check
