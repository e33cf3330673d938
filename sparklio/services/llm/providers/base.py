"""The provider interface every LLM provider implements (its lifecycle is `Provider`'s).

A provider turns one rendered prompt into one answer. It knows its wire protocol and nothing
about routing, retries or schemas beyond passing the schema on: the gateway does the rest.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import AsyncIterator, Collection
from typing import Any, Required, TypedDict

import orjson

from sparklio.exceptions import ProviderError
from sparklio.services.gateway.providers import Provider, ProviderHealth
from sparklio.wire.llm import LLMProviderResponse, OutputMode

__all__ = [
    "GATEWAY_OPTIONS",
    "LLMProvider",
    "LLMProviderResponse",
    "OutputMode",
    "ProviderHealth",
    "ProviderOptions",
    "chat_messages",
    "message_text",
    "parse_json_object",
    "picked",
    "text_messages",
    "usage",
]

_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.S)


class ProviderOptions(TypedDict, total=False):
    """What `generate` gets in `options`: the keys the gateway sets, the caller's options and
    the route's (from the routing file), merged in that order of precedence, caller first.

    A provider reads the keys it knows and ignores the rest; the route may add keys a kind
    understands (e.g. Ollama's `num_ctx`, `keep_alive`), which arrive as they are.
    """

    # set by the gateway (a caller may not: see GATEWAY_OPTIONS)
    model: Required[str]
    """The model to call, from the routing file."""
    payload: dict[str, Any]
    """The caller's data, for providers that build answers from it (the mock)."""
    schema: dict[str, Any]
    """The answer's JSON Schema, in json mode when the caller gave one."""
    messages: list[dict[str, Any]]
    """A chat's messages ({role, content}) as the caller sent them (the OpenAI-compatible
    API): send these instead of one user message holding `prompt` (which is then their text,
    for providers that can only take one string)."""
    # the caller's or the route's (checked by sparklio.services.llm.options)
    temperature: float
    max_tokens: int
    max_completion_tokens: int
    seed: int
    stop: str | list[str]
    top_p: float
    frequency_penalty: float
    presence_penalty: float
    keep_alive: str


#: The keys only the gateway sets: the routing file picks the model, and the schema and
#: payload have fields of their own in a request.
GATEWAY_OPTIONS = frozenset({"model", "payload", "schema", "messages"})


def picked(options: ProviderOptions, names: Collection[str]) -> dict[str, Any]:
    """The options among `names` that are set, as they are (e.g. for a request body)."""
    return {key: value for key, value in options.items() if key in names}


def message_text(content: Any) -> str:
    """A chat message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def chat_messages(prompt: str, options: ProviderOptions) -> list[dict[str, Any]]:
    """The messages to send: the caller's chat (`options["messages"]`) as it is, or one user
    message holding the rendered `prompt`."""
    messages = options.get("messages")
    if messages:
        return list(messages)
    return [{"role": "user", "content": prompt}]


def text_messages(prompt: str, options: ProviderOptions) -> list[dict[str, str]]:
    """`chat_messages` with every content flattened to text, for backends that take strings
    only (Ollama, llama.cpp); OpenAI's `developer` role is their `system`."""
    return [
        {"role": "system" if m.get("role") == "developer" else str(m.get("role", "user")),
         "content": message_text(m.get("content"))}
        for m in chat_messages(prompt, options)
    ]  # fmt: skip


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
    """One model backend. Subclasses are registered by kind in the provider registry; one
    instance serves one endpoint. `options` passed to `generate` are a `ProviderOptions`.

    Every provider answers in both modes: in json mode the prompt asks for JSON, `answer()`
    parses it, and the gateway checks it against the schema (repairing once), so a backend
    without a native JSON mode still serves json calls.
    """

    @abstractmethod
    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        """Answer one prompt."""

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncIterator[str | LLMProviderResponse]:
        """Answer one prompt as it is written: text pieces (in json mode, the raw JSON text),
        then the whole `LLMProviderResponse`, last, exactly as `generate` returns it.

        Raises ProviderError like `generate`, before or after the first piece. This default
        streams nothing: it yields the whole answer as one piece; a provider whose backend
        streams overrides it.
        """
        response = await self.generate(prompt, role, task, mode, options)
        output = response.output
        yield str(output.get("text", "")) if mode == "text" else orjson.dumps(output).decode()
        yield response

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
        where = self.where(model)
        if mode == "json":
            if truncated:
                raise ProviderError(
                    f"{where} stopped at its token limit{f' ({reason})' if reason else ''}; the "
                    "JSON is cut off. Raise max_tokens "
                    "(or the context size) for this route.",
                    provider=self.name, model=model, outcome="truncated", raw=text,
                )  # fmt: skip
            return parse_json_object(text, where)
        if truncated:
            meta["truncated"] = True
        return {"text": text}
