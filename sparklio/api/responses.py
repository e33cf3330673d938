"""What the API answers with: JSON written by orjson, and the one error response.

Every error answer, whoever sends it (an exception handler, the catch-all, the middleware's
early 413), is `error_response`'s: the body is `sparklio.exceptions.error_body`'s shape, or on
the OpenAI-compatible paths (under /v1/) OpenAI's, `openai_error_body`'s, so that OpenAI's SDKs
raise their own error classes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from sparklio.exceptions import error_body

#: Seconds a /providers answer waits for one provider's health check.
HEALTH_TIMEOUT = 3.0
#: The OpenAI-compatible API's paths: their errors are in OpenAI's format.
OPENAI_PREFIX = "/v1/"
#: OpenAI's error `type` by status (any other 4xx is an invalid request, any 5xx the server's).
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response serialised with orjson (several times faster than the default)."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: its name, and its data as one line of JSON."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def event_stream(events: AsyncIterator[BaseModel]) -> StreamingResponse:
    """A `text/event-stream` of the gateway's stream events (`delta`, then `done` or `error`).

    When the client goes away the server cancels the response; closing the events then
    cancels the upstream call (shielded: the cancellation must not cut that short)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                name = getattr(event, "type", "message")
                yield sse(name, event.model_dump())
        finally:
            closing = getattr(events, "aclose", None)
            if closing is not None:
                await asyncio.shield(closing())

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})  # fmt: skip


def error_response(
    request_id: str | None,
    status: int,
    error_type: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    openai: bool = False,
) -> Response:
    """The JSON error answer every failure uses; in OpenAI's format when `openai` (a path
    under OPENAI_PREFIX)."""
    if openai:
        body = openai_error_body(status, error_type, message, details, request_id)
    else:
        body = error_body(error_type, message, details, request_id)
    try:
        content = orjson.dumps(body, default=str)
    except TypeError:  # a message quoting input orjson refuses (a lone surrogate, a huge int)
        content = json.dumps(body, default=str).encode()  # ASCII, with \u escapes
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def openai_error_body(
    status: int,
    error_type: str,
    message: str,
    details: Any = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An error in OpenAI's format, `{"error": {"message", "type", "param", "code"}}`: `type`
    is OpenAI's for the status, `code` Sparklio's error type, `param` the first field the
    details name; the details and the request id come along."""
    fields = details if isinstance(details, list) else [details]
    param = next((str(d["field"]) for d in fields if isinstance(d, dict) and d.get("field")),
                 None)  # fmt: skip
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"message": message, "type": kind, "param": param,
                             "code": error_type}  # fmt: skip
    if details is not None:
        error["details"] = details
    return {"error": error, "request_id": request_id}


def too_large_message(limit: int) -> str:
    """What a 413 says: the limit, and the setting that raises it."""
    return (
        f"The request body is larger than the gateway accepts ({limit} bytes, "
        "MAX_REQUEST_BYTES). Send a smaller payload, or raise MAX_REQUEST_BYTES."
    )
