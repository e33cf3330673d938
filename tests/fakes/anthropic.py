"""A fake Anthropic server: /v1/messages (streamed as SSE events with `stream: true`) and
/v1/models.

Shapes follow the protocol reference, upstream-protocols.md section 4 ("Ref §4").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    Answer,
    FakeServer,
    Recorded,
    Reply,
    Status,
    StreamError,
    new_id,
    split_text,
    sse,
)

SSE = "text/event-stream; charset=utf-8"

PREFILL_REJECTED = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)

# Ref §4 errors table: status -> (error.type, usual message).
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
    ),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _display_name(model_id: str) -> str:
    """`claude-sonnet-4-5` -> `Claude Sonnet 4.5`."""
    words = [w for w in model_id.split("-") if not w.isdigit()]
    numbers = [w for w in model_id.split("-") if w.isdigit()]
    return " ".join([w.capitalize() for w in words] + [".".join(numbers)]).strip()


def _tool_input(content: str | dict[str, Any]) -> dict[str, Any]:
    """A reply's content as a tool_use input object: a dict, parsed JSON, or {"text": ...}."""
    if isinstance(content, dict):
        return content
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"text": content}


class FakeAnthropic(FakeServer):
    """The Anthropic Messages API; `allow_prefill=True` acts like an older model."""

    model_path = "/v1/messages"

    def __init__(
        self,
        api_key: str | None = "sk-ant-test",
        models: list[str] | None = None,
        allow_prefill: bool = False,
    ) -> None:
        self.api_key = api_key
        self.models = list(models) if models is not None else ["claude-sonnet-4-5"]
        self.allow_prefill = allow_prefill
        super().__init__()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._list_models)

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _error(
        code: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> Answer:
        request_id = new_id("req_")
        error = {"type": type_, "message": message}
        body = {"type": "error", "error": error, "request_id": request_id}
        return Answer.json(code, body, {"request-id": request_id, **(headers or {})})

    def _invalid(self, message: str) -> Answer:
        return self._error(400, "invalid_request_error", message)

    def _check_headers(self, headers: Mapping[str, str]) -> Answer | None:
        """`headers` must accept lower-case names (a Recorded's dict or aiohttp's headers)."""
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in headers:
            return self._invalid("anthropic-version: header is required")
        return None

    async def _list_models(self, request: web.Request) -> web.Response:
        rejected = self._check_headers(request.headers)
        if rejected is not None:
            return rejected.response()
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": _display_name(m),
                "created_at": "2025-09-29T00:00:00Z",
            }
            for m in self.models
        ]
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        body = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        return Answer.json(200, body, {"request-id": new_id("req_")}).response()

    # -- /v1/messages ----------------------------------------------------------------

    def reject(self, rec: Recorded) -> Answer | None:
        rejected = self._check_headers(rec.headers)
        if rejected is not None:
            return rejected
        body = rec.body
        if rec.bad_json or not isinstance(body, dict):
            return self._invalid("There was an error parsing the body of your request.")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self._invalid(f"{name}: Field required")
        if body["model"] not in self.models:
            return self._error(404, "not_found_error", f"model: {body['model']}")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return self._invalid("messages: at least one message is required")
        last = messages[-1]
        if not self.allow_prefill and isinstance(last, dict) and last.get("role") == "assistant":
            # Ref §4 "Prefill": Opus 4.6 / Sonnet 4.6 and later reject a trailing assistant turn.
            return self._invalid(PREFILL_REJECTED)
        return None

    @staticmethod
    def _forced_tool(body: dict[str, Any]) -> str | None:
        """The tool name when `tool_choice` forces one tool (ref §4 "Tool use")."""
        choice = body.get("tool_choice")
        if body.get("tools") and isinstance(choice, dict) and choice.get("type") == "tool":
            return str(choice.get("name"))
        return None

    @staticmethod
    def _event(data: dict[str, Any]) -> bytes:
        return sse(data, str(data["type"]))

    def _streamed(self, rec: Recorded, reply: Reply, parts: list[str]) -> list[bytes]:
        """The first events of a streamed answer (ref §4 "Streaming"): message_start, the
        content block's start (the forced tool's, if any), a ping, and one delta per part."""
        tool = self._forced_tool(rec.body)
        message = {
            "id": new_id("msg_"), "type": "message", "role": "assistant",
            "model": rec.body["model"], "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
        }  # fmt: skip
        if tool is not None:
            block = {"type": "tool_use", "id": new_id("toolu_"), "name": tool, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in parts]
        events = [
            self._event({"type": "message_start", "message": message}),
            self._event({"type": "content_block_start", "index": 0, "content_block": block}),
            self._event({"type": "ping"}),
        ]
        events += [
            self._event({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas
        ]
        return events

    def _render_stream(self, rec: Recorded, reply: Reply) -> Answer:
        tool = self._forced_tool(rec.body)
        text = json.dumps(_tool_input(reply.content)) if tool is not None else reply.text()
        events = self._streamed(rec, reply, split_text(text, reply.chunks))
        stop_reason = "tool_use" if tool is not None else "end_turn"
        if reply.finish == "length":
            stop_reason = "max_tokens"
        elif reply.finish is not None:
            stop_reason = reply.finish
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        events += [
            self._event({"type": "content_block_stop", "index": 0}),
            self._event({"type": "message_delta", "delta": delta,
                         "usage": {"output_tokens": reply.completion_tokens}}),
            self._event({"type": "message_stop"}),
        ]  # fmt: skip
        return Answer(200, events, SSE, {"request-id": new_id("req_")}, streamed=True)

    def render_stream_error(self, rec: Recorded, error: StreamError) -> Answer | None:
        if not rec.body.get("stream"):
            return None  # a plain answer cannot carry an error after its status: dropped
        parts = split_text(Reply().text(), error.after_chunks + 2)[: error.after_chunks]
        events = self._streamed(rec, Reply(), parts)
        # ref §4: an error can come after the 200, as an `error` event
        type_ = error.error_type or "overloaded_error"
        message = error.message or next(
            (m for t, m in _ERRORS.values() if t == type_), "Internal server error"
        )
        body = {"type": "error", "error": {"type": type_, "message": message}}
        events.append(self._event(body))
        return Answer(200, events, SSE, {"request-id": new_id("req_")}, streamed=True)

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        if rec.body.get("stream"):
            return self._render_stream(rec, reply)
        tool = self._forced_tool(rec.body)
        content: list[dict[str, Any]]
        if tool is not None:
            block = {"type": "tool_use", "id": new_id("toolu_"), "name": tool}
            content = [block | {"input": _tool_input(reply.content)}]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": reply.text()}]
            stop_reason = "end_turn"
        if reply.finish == "length":
            stop_reason = "max_tokens"
        elif reply.finish is not None:
            stop_reason = reply.finish
        obj = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": rec.body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
            },
        }
        return Answer.json(200, obj, {"request-id": new_id("req_")})

    def render_status(self, rec: Recorded, status: Status) -> Answer:
        generic = "api_error" if status.code >= 500 else "invalid_request_error"
        type_, message = _ERRORS.get(status.code, (generic, f"Error {status.code}"))
        return self._error(
            status.code,
            status.error_type or type_,
            status.message or message,
            status.headers,
        )
