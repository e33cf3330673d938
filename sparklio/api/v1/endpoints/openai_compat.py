"""The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`.

Any OpenAI client (the official SDKs, LangChain, editors) reaches the gateway with the same API
keys (`Authorization: Bearer`). `model` is a route alias of the routing file, a `role/task`
(routed as the native API routes it, fallbacks and all) or an `endpoint/model` the routing file
routes. Each call goes through `LLMGateway.generate` / `open_stream`, so it is routed, retried,
checked, logged and counted like a native one. Errors are in OpenAI's format (see
`sparklio.api.responses.openai_error_body`), so the SDKs raise their own classes; a field that
would change what OpenAI answers but that Sparklio cannot honour (tools, n > 1, logprobs...)
is a 400 that names it, never silently ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, NoReturn

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from sparklio.api.auth import PrincipalDep, require_principal
from sparklio.api.budgets import AccountDep
from sparklio.api.deps import GatewayDep
from sparklio.api.responses import EventStream, json_response
from sparklio.exceptions import InvalidRequestError, RouteNotFoundError
from sparklio.services.jsonvalues import MAX_INT, MIN_INT
from sparklio.services.llm.options import INTEGERS, NUMBERS
from sparklio.services.llm.providers.base import LLMProviderResponse
from sparklio.wire.llm import StreamDelta, StreamDone, StreamEvent, StreamFailed

#: every operation needs the caller's API key or token, as the native API does
router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_principal)])

#: When this server started: the `created` of every model it lists.
_STARTED = int(time.time())
#: Message roles and what the gateway sends for them (`developer` is the newer `system`).
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
#: Fields that change nothing in the answer (ids for the caller's own bookkeeping, storage).
_IGNORED = frozenset({
    "user", "store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key",
    "parallel_tool_calls",  # without tools there is no call to make in parallel
})  # fmt: skip
#: Unsupported fields, accepted at the one value that asks for nothing more than Sparklio does.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "tool_choice": ("none",),
    "function_call": ("none",),
    "modalities": (["text"],),
}
#: Message fields besides role and content that change nothing.
_MESSAGE_IGNORED = frozenset({"name", "refusal"})


class ContentPart(BaseModel):
    """A part of a message's content: only `text` parts are supported."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, as far as Sparklio honours it."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "copywriter/channel_copy",
                    "messages": [
                        {"role": "system", "content": "You write short marketing copy."},
                        {"role": "user", "content": "A headline for Dawon green tea."},
                    ],
                    "max_tokens": 64,
                }
            ]
        },
    )

    model: str = Field(
        min_length=1,
        max_length=256,
        description="A route alias, a role/task, or an endpoint/model (see GET /v1/models).",
    )
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(
        default=None, ge=NUMBERS["temperature"][0], le=NUMBERS["temperature"][1]
    )
    top_p: float | None = Field(default=None, ge=NUMBERS["top_p"][0], le=NUMBERS["top_p"][1])
    max_tokens: int | None = Field(
        default=None, ge=INTEGERS["max_tokens"][0], le=INTEGERS["max_tokens"][1]
    )
    max_completion_tokens: int | None = Field(
        default=None,
        ge=INTEGERS["max_completion_tokens"][0],
        le=INTEGERS["max_completion_tokens"][1],
    )
    seed: int | None = Field(default=None, ge=MIN_INT, le=MAX_INT)
    stop: str | list[str] | None = None
    frequency_penalty: float | None = Field(
        default=None, ge=NUMBERS["frequency_penalty"][0], le=NUMBERS["frequency_penalty"][1]
    )
    presence_penalty: float | None = Field(
        default=None, ge=NUMBERS["presence_penalty"][0], le=NUMBERS["presence_penalty"][1]
    )
    response_format: ResponseFormat | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None


_CHAT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
}
_CHAT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `chat.completion`, or with `stream: true` a text/event-stream of "
        "`chat.completion.chunk`s ending with `data: [DONE]` (or with an `error` event when "
        "the stream broke after it began).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    400: {"description": "A field Sparklio does not support (tools, n > 1, images...)."},
    404: {"description": "No such model: the message lists the known ones."},
    413: {"description": "The body is larger than MAX_REQUEST_BYTES."},
    422: {"description": "The request or its json_schema is invalid."},
    502: {"description": "The provider failed or its output did not match the schema."},
    503: {"description": "Every candidate is busy; retry after Retry-After seconds."},
    504: {"description": "The provider did not answer in time."},
}


@router.get("/models")
async def models(gateway: GatewayDep) -> Response:
    """The model names `/v1/chat/completions` takes: route aliases, every `role/task` and
    every `endpoint/model` the routing file routes in this mode."""
    names: dict[str, str] = {}
    for name in gateway.routing.aliases:
        names[name] = "sparklio"
    for name in gateway.router.known_tasks():
        if "*" not in name:  # a wildcard rule is not a name a caller can send
            names.setdefault(name, "sparklio")
    for name in gateway.direct_models():
        names.setdefault(name, name.partition("/")[0])
    data = [{"id": name, "object": "model", "created": _STARTED, "owned_by": owner}
            for name, owner in names.items()]  # fmt: skip
    return json_response({"object": "list", "data": data})


@router.post(
    "/chat/completions",
    response_class=Response,
    openapi_extra={"requestBody": _CHAT_BODY},
    responses=_CHAT_ANSWERS,
)
async def chat_completions(
    request: Request, gateway: GatewayDep, principal: PrincipalDep, account: AccountDep
) -> Response:
    """OpenAI's chat completion, answered by the gateway (mock, local or remote models)."""
    raw = await request.body()
    try:
        body = ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    _refuse_unsupported(body)
    messages = _messages(body.messages)
    try:
        role, task, route = gateway.resolve(body.model)
    except RouteNotFoundError as exc:
        exc.details = {**(exc.details or {}), "field": "model"}
        raise
    mode, schema = _format(body.response_format)
    call: dict[str, Any] = {
        "payload": {"messages": messages},
        "mode": mode,
        "options": _options(body),
        "output_schema": schema,
        "messages": messages,
        "route": route,
        "request_id": request.state.request_id,
        "user_id": principal.user_id,
        "account": account,
    }
    completion = Completion(body.model)
    if body.stream:
        events = await gateway.open_stream(role, task, **call)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(completion.chunks(events, usage), events)
    response = await gateway.generate(role, task, **call)
    return json_response(completion.whole(response, mode))


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """400 naming the first field that asks for what Sparklio cannot do."""
    for name, value in (body.model_extra or {}).items():
        if name in _IGNORED or value is None or value is False or value == []:
            continue
        if name in _NEUTRAL and value in _NEUTRAL[name]:
            continue
        if name == "n":
            problem = "must be 1: Sparklio answers with one choice"
        else:
            problem = "is not supported by Sparklio's OpenAI-compatible API"
        _unsupported(name, f"{name} {problem} (got {_short(value)}).")
    if body.stream_options is not None and not body.stream:
        _unsupported("stream_options", "stream_options is only allowed with stream: true.")


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The chat as the gateway sends it: each message's role and its text."""
    sent = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in _ROLES:
            _unsupported(f"{where}.role", f"{where}.role {message.role!r} belongs to tool "
                         "calls, which Sparklio does not support.")  # fmt: skip
        for name, value in (message.model_extra or {}).items():
            if name not in _MESSAGE_IGNORED and value not in (None, [], ""):
                _unsupported(f"{where}.{name}", f"{where}.{name} is not supported by "
                             "Sparklio's OpenAI-compatible API (text messages only).")  # fmt: skip
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    _unsupported(f"{where}.content[{j}]", f"{where}.content[{j}] is a "
                                 f"{part.type!r} part: only text parts (with their text) "
                                 "are supported.")  # fmt: skip
                texts.append(part.text or "")
            content = "".join(texts)
        sent.append({"role": _ROLES[message.role], "content": content or ""})
    return sent


def _format(
    response_format: ResponseFormat | None,
) -> tuple[Literal["json", "text"], dict[str, Any] | None]:
    """The gateway's mode and output schema for a response_format."""
    if response_format is None or response_format.type == "text":
        return "text", None
    if response_format.type == "json_object":
        return "json", None
    if response_format.json_schema is None:
        _unsupported("response_format.json_schema",
                     "response_format.json_schema is required with type json_schema.")  # fmt: skip
    return "json", response_format.json_schema.schema_


def _options(body: ChatCompletionRequest) -> dict[str, Any]:
    """The gateway's options for the sampling fields that are set."""
    names = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")
    options = {name: getattr(body, name) for name in names if getattr(body, name) is not None}
    limit = body.max_completion_tokens or body.max_tokens  # the newer name wins
    if limit is not None:
        options["max_tokens"] = limit
    return options


def _unsupported(field: str, message: str) -> NoReturn:
    details = [{"field": field, "problem": "unsupported"}]
    raise InvalidRequestError(message, status=400, details=details)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Completion:
    """One chat completion's answers, in OpenAI's shapes."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{os.urandom(12).hex()}"
        self.created = int(time.time())
        self.model = model  # the name the caller asked for

    def whole(self, response: LLMProviderResponse, mode: str) -> dict[str, Any]:
        """A `chat.completion`."""
        return {
            **self._head("chat.completion"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": _content(response, mode),
                            "refusal": None},
                "logprobs": None,
                "finish_reason": _finish_reason(response),
            }],
            "usage": _usage(response),
        }  # fmt: skip

    async def chunks(self, events: AsyncIterator[StreamEvent], usage: bool) -> AsyncIterator[bytes]:
        """The stream's `data:` lines: the role, the content as it comes, how it finished,
        the usage when asked for, then [DONE]; or an error event, and no [DONE]."""
        try:
            yield self._chunk({"role": "assistant", "content": ""}, None, usage)
            async for event in events:
                if isinstance(event, StreamDelta):
                    yield self._chunk({"content": event.text}, None, usage)
                elif isinstance(event, StreamDone):
                    yield self._chunk({}, _finish_reason(event.response), usage)
                    if usage:
                        last = {**self._head("chat.completion.chunk"), "choices": [],
                                "usage": _usage(event.response)}  # fmt: skip
                        yield _sse(last)
                    yield b"data: [DONE]\n\n"
                elif isinstance(event, StreamFailed):
                    yield _sse({"error": _stream_error(event.error)})
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}  # fmt: skip

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: bool) -> bytes:
        chunk = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            chunk["usage"] = None  # as OpenAI does: every chunk but the last has none
        return _sse(chunk)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _content(response: LLMProviderResponse, mode: str) -> str:
    if mode == "text":
        return str(response.output.get("text", ""))
    return orjson.dumps(response.output).decode()


def _finish_reason(response: LLMProviderResponse) -> str:
    """ "length" when the model stopped at its token limit, else "stop"."""
    meta = response.meta
    cut = meta.get("truncated") or "length" in (meta.get("done_reason"),
                                                 meta.get("finish_reason"))  # fmt: skip
    return "length" if cut else "stop"


def _usage(response: LLMProviderResponse) -> dict[str, int]:
    prompt = response.usage.get("prompt_tokens", 0)
    completion = response.usage.get("completion_tokens", 0)
    total = response.usage.get("total_tokens", prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _stream_error(error: dict[str, Any]) -> dict[str, Any]:
    """A StreamFailed's error in OpenAI's shape; the message names provider, model and
    outcome."""
    details = error.get("details") or {}
    where = ", ".join(f"{name} {details[name]}" for name in ("provider", "model", "outcome")
                      if details.get(name))  # fmt: skip
    message = str(error.get("message", "The stream broke."))
    return {
        "message": f"{message} ({where})" if where else message,
        "type": "server_error",
        "param": None,
        "code": error.get("type", "provider_error"),
        "details": details,
    }
