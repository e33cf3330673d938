"""The mock provider: instant, deterministic, schema-valid answers for GENERATOR_MODE=mock."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import orjson

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock import (
    FULL_NODES,
    INLINE_NODES,
    INLINE_SECONDS,
    OverBudget,
    SchemaTools,
)
from sparklio.services.llm.mockdata import Lexicon, MockData
from sparklio.services.llm.providers.base import (
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    ProviderOptions,
    message_text,
    usage,
)

_GENERIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["title", "summary"],
}
_TOOLS_CACHED = 64  # distinct schemas whose resolver and compiled checks are kept
_SMALL_SCHEMA = 20_000  # bytes of JSON: a schema this small compiles in well under 1 ms
_LEXICONS_CACHED = 64  # distinct payloads whose words are kept (agents resend the same brief)
_LEXICON_BYTES = 64_000  # ...when no larger than this as JSON: the cache stays a few MB


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _seed(*parts: Any, schema_key: bytes = b"") -> int:
    digest = hashlib.sha256(orjson.dumps(parts, option=_CANONICAL))
    digest.update(schema_key)
    return int.from_bytes(digest.digest()[:8], "big")


def pieces_of(text: str) -> list[str]:
    """`text` in 4 to 8 pieces (fewer when it is shorter), in order, at word ends where
    there are any near, so a streamed mock answer reads like a model's."""
    count = min(8, max(4, len(text) // 40), len(text))
    pieces: list[str] = []
    start = 0
    for i in range(1, count + 1):
        end = len(text) if i == count else max(start + 1, len(text) * i // count)
        space = text.find(" ", end, end + 16)  # the piece ends after the word it is in
        if i < count and space >= 0:
            end = space + 1
        if end > start:
            pieces.append(text[start:end])
            start = end
    return pieces


def _tokens(text: str) -> int:
    """A rough token count: about four characters a token, as for English BPE vocabularies."""
    return max(1, len(text) // 4)


def build(
    payload: Any,
    seed: int,
    tools: SchemaTools,
    nodes: int,
    *,
    obj: bool = False,
    seconds: float | None = None,
) -> Any:
    """A schema-valid value if the walk finds one: the realistic answer, or else the smallest
    one; the realistic answer (which the gateway will report) when neither validates.
    `payload`: the payload or its Lexicon; `obj`: an object at the root when the schema
    allows one (the gateway answers objects); `seconds`: OverBudget past this much CPU time,
    before the final check if it is cold."""
    cold = seconds if not tools.warm else None  # the time limit while the check is cold
    started = time.thread_time() if cold is not None else 0.0  # a system call: only if needed
    first = MockData(payload, seed).from_schema(tools, nodes, obj=obj, seconds=seconds)
    if cold is not None and time.thread_time() - started > cold / 2:
        raise OverBudget  # compiling the whole schema's validator could take long: not here
    if tools.valid(first):
        return first
    try:
        small = MockData(payload, seed).from_schema(
            tools, nodes, minimal=True, obj=obj, seconds=seconds
        )
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
        self._lexicons: OrderedDict[bytes, Lexicon] = OrderedDict()
        # one worker: heavy walks queue behind each other instead of all contending with the
        # event loop for the GIL (ten busy threads left the loop ~10 % of the CPU)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mock-walk")

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def vendor(self) -> str:
        return "mock"

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        payload = options.get("payload") or {}
        if not payload and options.get("messages"):  # a chat: its words make the answer
            payload = {"chat": [message_text(m.get("content")) for m in options["messages"]]}
        schema = options.get("schema") or _GENERIC_SCHEMA
        lexicon = self._lexicon_for(payload)
        if mode == "json":
            key = orjson.dumps(schema, option=_CANONICAL)  # serialised once: seed and cache key
            seed = _seed(role, task, payload, options.get("seed"), schema_key=key)
            output: dict[str, Any] = await self._json(lexicon, seed, schema, key)
            completion = orjson.dumps(output).decode()
        else:
            seed = _seed(role, task, payload, options.get("seed"))
            completion = MockData(lexicon, seed).paragraph(4)
            output = {"text": completion}
        return LLMProviderResponse(
            provider=self.name,
            model=str(options.get("model", "mock")),
            usage=usage(_tokens(prompt), _tokens(completion)),
            output=output,
            meta={"mock": True},
        )

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncIterator[str | LLMProviderResponse]:
        """The answer in a few pieces, as a model would write it: instant and deterministic."""
        response = await self.generate(prompt, role, task, mode, options)
        output = response.output
        text = str(output.get("text", "")) if mode == "text" else orjson.dumps(output).decode()
        for piece in pieces_of(text):
            yield piece
        yield response

    async def _json(
        self, payload: Lexicon, seed: int, schema: dict[str, Any], key: bytes
    ) -> dict[str, Any]:
        tools = self._tools_for(schema, key)
        try:
            if tools.warm or tools.size < _SMALL_SCHEMA:
                return self._object(
                    build(payload, seed, tools, INLINE_NODES, obj=True, seconds=INLINE_SECONDS)
                )
        except OverBudget:
            pass
        try:
            work = partial(build, payload, seed, tools, FULL_NODES, obj=True)
            output = await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except OverBudget:
            raise InvalidRequestError(
                f"output_schema is too large or too tangled for the mock: no answer within "
                f"{FULL_NODES:,} steps of work. Simplify it (fewer nested anyOf/oneOf, "
                "smaller minItems) or test it against a real model."
            ) from None
        return self._object(output)

    @staticmethod
    def _object(output: Any) -> dict[str, Any]:
        if not isinstance(output, dict):
            raise InvalidRequestError(
                "output_schema admits no JSON object here (the mock found only "
                f"{type(output).__name__} values); describe an object with type: object."
            )
        return output

    def _tools_for(self, schema: dict[str, Any], key: bytes) -> SchemaTools:
        tools = self._tools.get(key)
        if tools is None:
            tools = self._tools[key] = SchemaTools(schema, size=len(key))
            if len(self._tools) > _TOOLS_CACHED:
                self._tools.popitem(last=False)
        else:
            self._tools.move_to_end(key)
        return tools

    def _lexicon_for(self, payload: Any) -> Lexicon:
        """The payload's words, from the cache when the same payload came before."""
        key = orjson.dumps(payload, option=_CANONICAL)
        lexicon = self._lexicons.get(key)
        if lexicon is not None:
            self._lexicons.move_to_end(key)
            return lexicon
        lexicon = Lexicon(payload)
        if len(key) <= _LEXICON_BYTES:
            self._lexicons[key] = lexicon
            if len(self._lexicons) > _LEXICONS_CACHED:
                self._lexicons.popitem(last=False)
        return lexicon
