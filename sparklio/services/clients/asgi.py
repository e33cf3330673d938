"""An in-process transport that streams: httpx's ASGITransport hands a response over only once
the app has sent all of it, so a server-sent event stream (a campaign's progress) would arrive
in one piece at the end. This one returns the response as soon as its head is sent and yields
each body chunk as the app sends it; closing the response tells the app the client left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx

Message = MutableMapping[str, Any]
_END = object()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=StreamingASGITransport(app))`: the app in this process."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in request.stream])
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        loop = asyncio.get_running_loop()
        head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = loop.create_future()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                head.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body") and request.method != "HEAD":
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(_END)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:  # the app's own error, raised where the caller reads
                if not head.done():
                    head.set_exception(exc)
                else:
                    chunks.put_nowait(exc)
            finally:
                if not head.done():
                    head.set_exception(httpx.RemoteProtocolError("the app sent no response"))
                chunks.put_nowait(_END)

        task = asyncio.create_task(run())
        try:
            status, headers = await head
        except BaseException:
            gone.set()
            # a caller cancelled (a cancelled campaign) stops the call under way, as it would
            # with the app awaited inline; an app that failed has ended already
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        return httpx.Response(status, headers=headers, stream=_Body(chunks, task, gone))


class _Body(httpx.AsyncByteStream):
    def __init__(self, chunks: asyncio.Queue[Any], task: asyncio.Task[None], gone: asyncio.Event):
        self.chunks = chunks
        self.task = task
        self.gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.chunks.get()) is not _END:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    async def aclose(self) -> None:
        """The client is done: the app hears a disconnect and ends."""
        self.gone.set()
        if not self.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5)
            except TimeoutError:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
