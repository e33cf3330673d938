"""A fake OpenAI-compatible server: /v1/chat/completions (streamed as SSE with `stream: true`)
and /v1/models.

Shapes follow the protocol reference, upstream-protocols.md section 3 ("Ref §3").
The provider's base URL is f"{fake.url}/v1".
"""

from __future__ import annotations

import time
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

BAD_KEY = (
    "Incorrect API key provided: sk-wr***ng. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
RATE_LIMITED = (
    "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
    "Limit 3, Used 3, Requested 1. Please try again in 20s."
)
NO_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)

# status -> (message, type, code); message may use {model}.
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (BAD_KEY, "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    # Ref §3 errors: a real 429 has the limit name ("requests", "tokens") as its type.
    429: (RATE_LIMITED, "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


#: What llama-cpp-python's server (0.3.36, `python -m llama_cpp.server`) answers to
#: `response_format: {"type": "json_schema", ...}`: a 500 from its request validation.
LLAMA_CPP_JSON_SCHEMA_500 = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
    "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"/venv/lib/python3.11/"
    'site-packages/llama_cpp/server/app.py", line 376, in create_chat_completion\n    '
    "POST /v1/chat/completions"
)


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> Any:
    """Ref §3: all four keys are always present; param and code may be null."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class FakeOpenAI(FakeServer):
    """OpenAI Chat Completions, or a server that copies it (llama.cpp, vLLM...)."""

    model_path = "/v1/chat/completions"

    def __init__(
        self,
        api_key: str | None = "sk-test",
        models: list[str] | None = None,
        supports_json_schema: bool = True,
        json_schema_status: int = 400,
        supports_object_schema: bool = True,
    ) -> None:
        """Without json_schema, the server turns it down with `json_schema_status`: 400 as
        OpenAI-style servers do, 422 as a FastAPI-based one, 500 as llama-cpp-python's server.
        Without `supports_object_schema`, a `schema` key next to json_object is a 400."""
        self.api_key = api_key
        self.models = list(models) if models is not None else ["gpt-4o-mini"]
        self.supports_json_schema = supports_json_schema
        self.json_schema_status = json_schema_status
        self.supports_object_schema = supports_object_schema
        super().__init__()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._list_models)

    def _answer(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
        """A JSON answer with the `x-request-id` header every response carries."""
        return Answer.json(status, obj, {"x-request-id": new_id("req_", 32), **(headers or {})})

    def _unauthorised(self, headers: Mapping[str, str]) -> Answer | None:
        """`headers` must accept lower-case names (a Recorded's dict or aiohttp's headers)."""
        if self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return self._answer(401, error_body(BAD_KEY, "invalid_request_error", "invalid_api_key"))

    async def _list_models(self, request: web.Request) -> web.Response:
        answer = self._unauthorised(request.headers) or self._answer(
            200,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1721172741, "owned_by": "system"}
                    for m in self.models
                ],
            },
        )
        return answer.response()

    def reject(self, rec: Recorded) -> Answer | None:
        unauthorised = self._unauthorised(rec.headers)
        if unauthorised is not None:
            return unauthorised
        body = rec.body
        if rec.bad_json or not isinstance(body, dict):
            msg = "We could not parse the JSON body of your request."
            return self._answer(400, error_body(msg, "invalid_request_error", None))
        if not body.get("model"):
            msg = "you must provide a model parameter"
            return self._answer(400, error_body(msg, "invalid_request_error", None))
        if body["model"] not in self.models:
            msg = _ERRORS[404][0].format(model=body["model"])
            return self._answer(404, error_body(msg, "invalid_request_error", "model_not_found"))
        fmt = body.get("response_format")
        if isinstance(fmt, dict):
            refusal = self._refuse_format(fmt)
            if refusal is not None:
                return refusal
        return None

    def _refuse_format(self, fmt: dict[str, Any]) -> Answer | None:
        """The server's answer to a response_format it lacks, or None."""
        if fmt.get("type") == "json_schema" and not self.supports_json_schema:
            if self.json_schema_status == 500:
                body = error_body(LLAMA_CPP_JSON_SCHEMA_500, "internal_server_error", None)
                return self._answer(500, body)
            if self.json_schema_status == 422:  # FastAPI's own validation error body
                detail = {"type": "literal_error", "loc": ["body", "response_format", "type"],
                          "msg": "Input should be 'text' or 'json_object'",
                          "input": "json_schema"}  # fmt: skip
                return self._answer(422, {"detail": [detail]})
            # Servers that copy the API (older vLLM, LM Studio) may lack json_schema.
            msg = "response_format type json_schema is not supported by this server"
            return self._answer(
                self.json_schema_status,
                error_body(msg, "invalid_request_error", None, "response_format"),
            )
        if fmt.get("type") == "json_object" and "schema" in fmt and not self.supports_object_schema:
            msg = "Additional properties are not allowed ('schema' was unexpected)"
            return self._answer(
                400, error_body(msg, "invalid_request_error", None, "response_format")
            )
        return None

    def _chunk(self, rec: Recorded, base: dict[str, Any], delta: dict[str, Any],
               finish: str | None = None) -> bytes:  # fmt: skip
        """One streamed chunk (ref §3 "Streaming"); `usage` is null on all but the last."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = base | {"choices": [choice]}
        if self._with_usage(rec):
            chunk["usage"] = None
        return sse(chunk)

    @staticmethod
    def _with_usage(rec: Recorded) -> bool:
        options = rec.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @staticmethod
    def _chunk_base(rec: Recorded) -> dict[str, Any]:
        return {
            "id": new_id("chatcmpl-", 29),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": rec.body["model"],
            "system_fingerprint": "fp_fake",
        }

    def _streamed(self, rec: Recorded, parts: list[str]) -> tuple[dict[str, Any], list[bytes]]:
        """The first events of a streamed answer: the role's, then one per part."""
        base = self._chunk_base(rec)
        events = [self._chunk(rec, base, {"role": "assistant", "content": "", "refusal": None})]
        events += [self._chunk(rec, base, {"content": part}) for part in parts]
        return base, events

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        if rec.body.get("stream"):
            base, events = self._streamed(rec, split_text(reply.text(), reply.chunks))
            events.append(self._chunk(rec, base, {}, reply.finish or "stop"))
            if self._with_usage(rec):  # ref §3: one extra last chunk, with no choices
                tokens = reply.prompt_tokens + reply.completion_tokens
                usage = {
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "total_tokens": tokens,
                }
                events.append(sse(base | {"choices": [], "usage": usage}))  # fmt: skip
            events.append(sse("[DONE]"))
            headers = {"x-request-id": new_id("req_", 32)}
            return Answer(200, events, SSE, headers, streamed=True)
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.text(), "refusal": None},
            "logprobs": None,
            "finish_reason": reply.finish or "stop",
        }
        obj = {
            "id": new_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": rec.body["model"],
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        }
        return self._answer(200, obj)

    def render_status(self, rec: Recorded, status: Status) -> Answer:
        generic = "server_error" if status.code >= 500 else "invalid_request_error"
        message, type_, code = _ERRORS.get(status.code, (f"Error {status.code}", generic, None))
        if status.error_type == "insufficient_quota":
            # Ref §5: quota exhaustion is a 429 that needs user action (no Retry-After).
            message = NO_QUOTA
        if status.error_type is not None:
            type_ = code = status.error_type
        message = status.message or message.format(model=rec.body["model"])
        return self._answer(status.code, error_body(message, type_, code), status.headers)

    def render_stream_error(self, rec: Recorded, error: StreamError) -> Answer | None:
        if not rec.body.get("stream"):
            return None  # a plain answer cannot carry an error after its status: dropped
        parts = split_text(Reply().text(), error.after_chunks + 2)[: error.after_chunks]
        _, events = self._streamed(rec, parts)
        # ref §3: a mid-stream error is a data object with an `error` key, and no [DONE]
        message = error.message or _ERRORS[500][0]
        events.append(sse(error_body(message, error.error_type or "server_error", None)))
        return Answer(200, events, SSE, {"x-request-id": new_id("req_", 32)}, streamed=True)
