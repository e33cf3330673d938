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
from starlette.types import Receive, Scope, Send

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


class EventStream(StreamingResponse):
    """A `text/event-stream` whose events are closed however the response ends.

    When the client goes away, the stream is cancelled once (asyncio's edge cancellation,
    not a cancel scope that cancels every await after it), so the gateway's cleanup can
    await the upstream's close; and the events are closed in every case, which cancels the
    upstream call (Starlette leaves an iterator it stopped reading open)."""

    def __init__(self, body: AsyncIterator[bytes], events: AsyncIterator[Any]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        gone = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((stream, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stream.cancel()
            await asyncio.gather(stream, gone, return_exceptions=True)
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self.events.aclose()  # type: ignore[attr-defined]
        error = None if stream.cancelled() else stream.exception()
        if error is not None and not isinstance(error, OSError):  # OSError: the client left
            raise error


def event_stream(events: AsyncIterator[BaseModel]) -> EventStream:
    """A `text/event-stream` of the gateway's stream events (`delta`, then `done` or `error`);
    when the client goes away, closing the events cancels the upstream call."""

    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse(getattr(event, "type", "message"), event.model_dump())

    return EventStream(body(), events)


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
