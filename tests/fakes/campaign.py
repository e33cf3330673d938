"""A fake Ollama whose answers are the mock's: schema-valid JSON for whatever `format` asks,
so the whole pipeline runs over a real upstream whose pace the test sets. scripts/e2e.py
uses it too (its restart run), so it needs nothing of pytest's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import web

from sparklio.core.config import Settings
from sparklio.services.llm.providers.mock import MockProvider
from tests.fakes.base import Answer, Recorded, Reply
from tests.fakes.ollama import FakeOllama

#: A routing file for a whole campaign in live mode: every model call to a MockOllama (the
#: model it serves), the images from the mock.
ROUTES = """\
version: 1
modes:
  live:
    default:
      - {provider: ollama, model: "campaign:7b"}
media:
  modes:
    live:
      default:
        - {provider: mock, model: mock-image-v1}
"""


class MockOllama(FakeOllama):
    """FakeOllama answering each /api/chat with the mock's answer to the same schema and
    messages."""

    def __init__(self) -> None:
        super().__init__(models=["campaign:7b"])
        self.mock = MockProvider(Settings(_env_file=None))  # defaults only: no .env
        self._content: dict[int, str] = {}

    async def _model_call(self, request: web.Request, rec: Recorded) -> web.StreamResponse:
        body = rec.body if isinstance(rec.body, dict) else {}
        schema = body.get("format") if isinstance(body.get("format"), dict) else None
        messages: list[dict[str, Any]] = body.get("messages") or []
        answer = await self.mock.generate(
            "", "fake", "fake", "json", {"schema": schema, "messages": messages}
        )
        self._content[id(rec)] = json.dumps(answer.output)
        return await super()._model_call(request, rec)

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        content = self._content.pop(id(rec), reply.text())
        return super().render_reply(rec, dataclasses.replace(reply, content=content), elapsed)

    async def __aexit__(self, *exc: object) -> None:
        await self.mock.aclose()
        await super().__aexit__(*exc)  # type: ignore[arg-type]


class SlowCopyOllama(MockOllama):
    """The campaign's fake Ollama (the mock's answers), whose copywriter writes slowly: each
    channel's copy in many pieces over a couple of seconds, its last piece held until
    `written` is set (by the test, once it has seen the copy so far)."""

    PIECES, PACE = 24, 0.1  # ~2.4 s a channel

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        schema = rec.body.get("format") if isinstance(rec.body, dict) else None
        if not (isinstance(schema, dict) and "headline" in schema.get("properties", {})):
            return super().render_reply(rec, reply, elapsed)
        answer = super().render_reply(rec, dataclasses.replace(reply, chunks=self.PIECES), elapsed)
        # the last line of an Ollama stream is its `done` line: the one before ends the copy
        return dataclasses.replace(answer, pace=self.PACE, hold=(-2, self.written))
