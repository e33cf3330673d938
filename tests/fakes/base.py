"""Scriptable fake upstream servers: real aiohttp servers on 127.0.0.1, one per test.

A fake answers each call to its generation route with the next scripted `Behaviour`
(or `default` when the script is empty). Protocol subclasses decide what a reply, an
error and a stream error look like on the wire; this module does the serving, the
recording, the delays, the concurrency count and the dropped connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

__all__ = [
    "Answer",
    "Behaviour",
    "Cut",
    "FakeServer",
    "Held",
    "Recorded",
    "Reply",
    "Status",
    "StreamError",
    "refused_url",
    "split_text",
    "sse",
]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON body, or None
    raw: bytes = field(default=b"", repr=False)  # the body as received

    @property
    def bad_json(self) -> bool:
        """A body was sent but it is not JSON."""
        return self.body is None and bool(self.raw.strip())


@dataclass
class Reply:
    """A normal successful answer."""

    content: str | dict[str, Any] = "Hello from the fake."
    finish: str | None = None  # None = the protocol's normal stop; "length" = truncated
    prompt_tokens: int = 12
    completion_tokens: int = 8
    delay: float = 0.0  # seconds to wait before answering
    chunks: int = 3  # a streamed answer's content is split over this many pieces

    def text(self) -> str:
        """The content as text (a dict is serialised to JSON)."""
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content)


@dataclass
class Status:
    """An error answer with the protocol's own error body."""

    code: int
    message: str | None = None  # None = the protocol's usual message for that code
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    error_type: str | None = None  # OpenAI error.type/code or Anthropic error.type override


@dataclass
class StreamError:
    """Status 200, `after_chunks` pieces of content (0: none), then an error inside the
    stream: Ollama's `{"error": ...}` line, OpenAI's `data: {"error": ...}`, Anthropic's
    `event: error` (of `error_type`, by default the protocol's usual one). A request that
    does not stream gets a dropped connection (OpenAI, Anthropic) or an error status (Ollama)."""

    message: str | None = None  # None: the protocol's usual message
    after_chunks: int = 1
    error_type: str | None = None


@dataclass
class Cut:
    """Start a 200 response, write some of `reply`'s answer, then drop the TCP connection:
    its first `after_bytes` bytes, or with `after_pieces` its first pieces whole (a streamed
    answer's lines or events: e.g. the first token's, for a cut after the first token)."""

    after_bytes: int = 20
    after_pieces: int | None = None
    reply: Reply | None = None


@dataclass
class Held:
    """`then` (any other behaviour), answered only once `gate` is set: the test, not a clock,
    decides how long the call stays in flight."""

    then: Reply | Status | StreamError | Cut
    gate: asyncio.Event


Behaviour = Reply | Status | StreamError | Cut | Held


@dataclass
class Answer:
    """What a fake puts on the wire: `pieces` are written in order.

    `streamed` answers use chunked transfer (no Content-Length), like NDJSON streams;
    the others are sent with a Content-Length. A streamed answer's pieces can come `pace`
    seconds apart, and one of them (`hold`: its index, negative from the end, and an event)
    only once the event is set: the test, not a clock, decides when the answer ends.
    """

    status: int
    pieces: list[bytes]
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    streamed: bool = False
    pace: float = 0.0
    hold: tuple[int, asyncio.Event] | None = None

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
        body = json.dumps(obj).encode()
        return cls(status, [body], "application/json; charset=utf-8", dict(headers or {}))

    def response(self) -> web.Response:
        """A non-streamed answer as a plain aiohttp response."""
        return web.Response(
            status=self.status,
            body=b"".join(self.pieces),
            headers={"Content-Type": self.content_type, **self.headers},
        )


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: `data` as JSON (or as it is, if a str), named `event`."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def split_text(text: str, parts: int) -> list[str]:
    """`text` in at most `parts` non-empty, roughly equal fragments, in order."""
    parts = max(1, parts)
    size = len(text)
    cuts = [text[i * size // parts : (i + 1) * size // parts] for i in range(parts)]
    return [c for c in cuts if c]


def rfc3339_now() -> str:
    """The current UTC time as RFC 3339 with a Z suffix."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_id(prefix: str, length: int = 24) -> str:
    """A random identifier such as `chatcmpl-…` or `msg_…`."""
    return prefix + uuid.uuid4().hex[:length]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeServer:
    """Base: subclasses add the routes and the protocol's shapes. Usage::

    async with FakeOllama() as fake:
        fake.then(Status(503), Status(503), Reply('{"a": 1}'))
        # ... fake.url, fake.requests, fake.calls, fake.max_in_flight ...
    """

    model_path: ClassVar[str]  # the generation route, e.g. "/api/chat"

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self.default: Behaviour = Reply()
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Behaviour] = deque()
        # The middleware records every request and answers POSTs to `model_path` itself.
        self._app = web.Application(middlewares=[self._dispatch])
        self.add_routes(self._app.router)
        self._runner: web.AppRunner | None = None

    # -- scripting -------------------------------------------------------------------

    def then(self, *behaviours: Behaviour) -> Self:
        """Append behaviours to the script (one is consumed per model call); returns self."""
        self._script.extend(behaviours)
        return self

    def model_calls(self) -> list[Recorded]:
        """Requests to the generation route only (rejected ones included)."""
        return [r for r in self.requests if r.path == self.model_path]

    @property
    def calls(self) -> int:
        """Number of requests to the generation route."""
        return len(self.model_calls())

    # -- hooks for protocol subclasses -----------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the routes other than the generation route."""

    def reject(self, rec: Recorded) -> Answer | None:
        """An answer that does not consume the script (bad auth, unknown model...), or None."""
        return None

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        """A successful answer; `elapsed` is the time since the request arrived."""
        raise NotImplementedError

    def render_status(self, rec: Recorded, status: Status) -> Answer:
        """An error answer in the protocol's own error body."""
        raise NotImplementedError

    def render_stream_error(self, rec: Recorded, error: StreamError) -> Answer | None:
        """None (the default, for protocols the fakes do not stream) drops the connection."""
        return None

    # -- serving ---------------------------------------------------------------------

    @web.middleware
    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = Recorded(request.method, request.path, headers, body, raw)
        self.requests.append(rec)
        if request.method == "POST" and request.path == self.model_path:
            return await self._model_call(request, rec)
        return await handler(request)

    async def _model_call(self, request: web.Request, rec: Recorded) -> web.StreamResponse:
        started = time.monotonic()
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            rejection = self.reject(rec)
            if rejection is not None:
                return await self._send(request, rejection)
            behaviour = self._script.popleft() if self._script else self.default
            if isinstance(behaviour, Held):
                await behaviour.gate.wait()
                behaviour = behaviour.then
            if isinstance(behaviour, Reply):
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                answer = self.render_reply(rec, behaviour, time.monotonic() - started)
                return await self._send(request, answer)
            if isinstance(behaviour, Status):
                return await self._send(request, self.render_status(rec, behaviour))
            if isinstance(behaviour, StreamError):
                streamed = self.render_stream_error(rec, behaviour)
                if streamed is not None:
                    return await self._send(request, streamed)
            cut = behaviour if isinstance(behaviour, Cut) else Cut()
            answer = self.render_reply(rec, cut.reply or Reply(), 0.0)
            return await self._send(request, answer, cut)
        finally:
            self._in_flight -= 1

    @staticmethod
    async def _send(
        request: web.Request, answer: Answer, cut: Cut | None = None
    ) -> web.StreamResponse:
        """Write `answer`; with `cut`, write only its first bytes and then drop the connection."""
        if not answer.streamed and cut is None:
            return answer.response()
        resp = web.StreamResponse(status=answer.status, headers=answer.headers)
        resp.content_type = answer.content_type
        data = b"".join(answer.pieces)
        if not answer.streamed:
            resp.content_length = len(data)
        await resp.prepare(request)
        if cut is None:
            held = None if answer.hold is None else answer.hold[0] % len(answer.pieces)
            for index, piece in enumerate(answer.pieces):
                if index and answer.pace:
                    await asyncio.sleep(answer.pace)
                if index == held and answer.hold is not None:
                    await answer.hold[1].wait()
                await resp.write(piece)
            await resp.write_eof()
            return resp
        if cut.after_pieces is not None:
            # Keep at least one piece back, so the answer is never complete.
            for piece in answer.pieces[: max(0, min(cut.after_pieces, len(answer.pieces) - 1))]:
                await resp.write(piece)
        else:  # Keep at least one byte back, so the body is never complete.
            await resp.write(data[: max(0, min(cut.after_bytes, len(data) - 1))])
        assert request.transport is not None
        request.transport.abort()  # the client sees a disconnect, not a clean end
        return resp

    async def __aenter__(self) -> Self:
        # handler_cancellation: a client that gives up cancels the handler (its delay too),
        # as Ollama aborts a load when the client disconnects (ref §1 "Model loading").
        # A short shutdown_timeout: leaving the block does not wait for delayed replies.
        runner = web.AppRunner(
            self._app, access_log=None, handler_cancellation=True, shutdown_timeout=0.05
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
