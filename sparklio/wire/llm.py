"""The LLM gateway's wire types: the body of POST /api/v1/llm/generate and its answer."""

from __future__ import annotations

from typing import Any, Dict, Literal  # noqa: UP035  # the contract is spelled with Dict

from pydantic import BaseModel, ConfigDict, Field

#: A role, task or provider name: lowercase, starting with a letter (the routing file's rule).
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

OutputMode = Literal["json", "text"]


class LLMProviderResponse(BaseModel):
    """One answer: who gave it, what it cost and what it said.

    In json mode `output` is the parsed JSON object; in text mode it is `{"text": "..."}`.
    `usage` has `prompt_tokens`, `completion_tokens` and `total_tokens`; `meta.cost_usd` is
    what the gateway priced the call at (its routing file's prices; 0 for local models and a
    cache hit; absent from gateways before it was added).
    """

    provider: str
    model: str
    usage: Dict[str, int] = Field(default_factory=dict)  # noqa: UP006
    output: Dict[str, Any] = Field(default_factory=dict)  # noqa: UP006
    meta: Dict[str, Any] = Field(default_factory=dict)  # noqa: UP006


class GenerateRequest(BaseModel):
    """One call: who asks, what for, with which data, and the answer's shape."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "copywriter",
                    "task": "channel_copy",
                    "payload": {"product": "Dawon green tea", "channel": "instagram"},
                    "output_schema": {
                        "type": "object",
                        "properties": {"headline": {"type": "string", "maxLength": 30}},
                        "required": ["headline"],
                    },
                }
            ]
        },
    )

    role: str = Field(pattern=NAME_PATTERN, description="Who asks, e.g. 'copywriter'.")
    task: str = Field(pattern=NAME_PATTERN, description="What for, e.g. 'channel_copy'.")
    payload: dict[str, Any] = Field(description="The data the prompt is built from.")
    mode: OutputMode = Field(default="json", description="Output mode.")
    options: dict[str, Any] | None = Field(
        default=None, description="temperature, max_tokens, seed, timeout, provider extras."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the json answer must validate against."
    )
    stream: bool = Field(
        default=False,
        description="Answer as text/event-stream: `delta` events as the model writes, then "
        "one `done` event with the whole response, or an `error` event.",
    )


class StreamDelta(BaseModel):
    """A piece of the answer as the model wrote it (in json mode, raw JSON text)."""

    type: Literal["delta"] = "delta"
    text: str


class StreamDone(BaseModel):
    """The end of a stream that succeeded: the whole response, as a non-streamed call gives."""

    type: Literal["done"] = "done"
    response: LLMProviderResponse


class StreamFailed(BaseModel):
    """The end of a stream that broke after it began: what failed, and how."""

    type: Literal["error"] = "error"
    error: Dict[str, Any]  # noqa: UP006  # {type, message, details: {provider, model, outcome}}


StreamEvent = StreamDelta | StreamDone | StreamFailed

__all__ = [
    "NAME_PATTERN",
    "GenerateRequest",
    "LLMProviderResponse",
    "OutputMode",
    "StreamDelta",
    "StreamDone",
    "StreamEvent",
    "StreamFailed",
]
