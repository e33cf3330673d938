"""A live-mode gateway wired to fake upstreams, for provider and resilience tests."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from tests.conftest import client_for, make_settings, token_for

#: Fast retries so a test that retries twice takes milliseconds, not seconds.
FAST = {"llm_backoff_base": 0.01, "llm_backoff_max": 0.05}


@asynccontextmanager
async def live_gateway(
    tmp_path: Path, routes: str, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app in live mode with `routes` (the `live:` section's YAML body, dedented),
    and a raw HTTP client on it. Provider connections are closed afterwards."""
    path = tmp_path / "live-routes.yaml"
    body = textwrap.indent(textwrap.dedent(routes).strip(), "    ")
    path.write_text(f"version: 1\nmodes:\n  live:\n{body}\n", encoding="utf-8")
    app = create_app(
        make_settings(generator_mode="live", llm_routing_file=path, **{**FAST, **settings})
    )
    try:
        async with await client_for(app) as http:
            yield app, http
    finally:
        await close_app(app)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds. It has no clock of its own (the test's timeout is the
    backstop), so a slow machine makes a test slower, never wrong."""
    # polling: the states waited on (an upstream's request count, a limiter's line) have no
    # event to wait on, and a few ms between looks costs nothing
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def llm_client_for(app: FastAPI) -> LLMGatewayClient:
    """The gateway client on an app in-process, logged in."""
    return LLMGatewayClient(base_url="http://gateway", api_key=await token_for(app),
                            transport=httpx.ASGITransport(app=app))  # fmt: skip


COPY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "headline": {"type": "string", "maxLength": 30},
        "body": {"type": "string"},
    },
    "required": ["headline", "body"],
}
GOOD_COPY = {"headline": "Calm afternoons", "body": "Dawon green tea, first flush from Jeju."}
CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {"product": "Dawon green tea"},
    "output_schema": COPY_SCHEMA,
}
