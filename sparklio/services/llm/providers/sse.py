"""Server-sent events as OpenAI and Anthropic stream them (text/event-stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(slots=True)
class Event:
    """One event: its `event:` name ("message" when it has none) and its `data:` text."""

    name: str
    data: str


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of an SSE body, as they arrive. Comments (`:`), `id:` and `retry:` lines
    are skipped; an event is dispatched at the blank line that ends it, and one the body
    ends inside is dropped, as the SSE standard says (so a cut stream lacks its end)."""
    name, data = "", list[str]()
    async for raw in resp.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(name or "message", "\n".join(data))
            name, data = "", list[str]()
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
