"""What the API answers with: JSON written by orjson, and the one error response.

Every error answer, whoever sends it (an exception handler, the catch-all, the middleware's
early 413), is `error_response`'s: the body is `sparklio.exceptions.error_body`'s shape.
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
) -> Response:
    """The JSON error answer every failure uses."""
    body = error_body(error_type, message, details, request_id)
    try:
        content = orjson.dumps(body, default=str)
    except TypeError:  # a message quoting input orjson refuses (a lone surrogate, a huge int)
        content = json.dumps(body, default=str).encode()  # ASCII, with \u escapes
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def too_large_message(limit: int) -> str:
    """What a 413 says: the limit, and the setting that raises it."""
    return (
        f"The request body is larger than the gateway accepts ({limit} bytes, "
        "MAX_REQUEST_BYTES). Send a smaller payload, or raise MAX_REQUEST_BYTES."
    )
