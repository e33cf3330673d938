"""ASGI middleware: a request id on every request and response, an early 413 and a 408 for
a body that does not arrive in time."""

from __future__ import annotations

import asyncio
import os
import re

from fastapi import HTTPException  # FastAPI re-raises its own kind while reading a body
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparklio.api.responses import OPENAI_PREFIX, error_response, too_large_message
from sparklio.exceptions import PayloadTooLargeError

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"^[\w.:-]{1,128}$")


def body_deadline(receive: Receive, timeout: float) -> Receive:
    """`receive`, raising 408 (connection closed) when the body has not all arrived within
    `timeout` seconds of the request's start. The server (granian) bounds the time to send
    the headers but not the body, so a client trickling its body would hold the call."""
    deadline = asyncio.get_running_loop().time() + timeout
    complete = False

    async def receive_in_time() -> Message:
        nonlocal complete
        if complete:  # after the body, receive() waits for a disconnect: no deadline
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise HTTPException(
                408,
                f"The request body did not arrive within {timeout:g} s (SERVER_BODY_TIMEOUT). "
                "Send it at once, or raise SERVER_BODY_TIMEOUT.",
                headers={"Connection": "close"},
            ) from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_in_time


class RequestContextMiddleware:
    """Takes `X-Request-ID` from the request (or makes one), stores it in `request.state` and
    returns it on the response. A body whose Content-Length is over `max_body_size` is refused
    with 413 before it is read; FastAPI's own limit catches chunked bodies as they arrive. A
    body still arriving `body_timeout` seconds after the request started gets a 408.
    Plain ASGI, so it costs microseconds a request."""

    def __init__(self, app: ASGIApp, max_body_size: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        length = 0
        chunked = False
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER and _VALID_ID.match(value):
                request_id = value
            elif name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if not request_id:
            request_id = os.urandom(16).hex().encode()  # as random as uuid4, 4x cheaper
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        if length > self.max_body_size:
            response = error_response(
                request_id.decode(),
                PayloadTooLargeError.status,
                PayloadTooLargeError.type,
                too_large_message(self.max_body_size),
                headers={"Connection": "close"},
                openai=scope["path"].startswith(OPENAI_PREFIX),
            )
            await response(scope, receive, send_with_id)
            return
        if length or chunked:
            receive = body_deadline(receive, self.body_timeout)
        await self.app(scope, receive, send_with_id)
