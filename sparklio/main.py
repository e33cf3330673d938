"""The FastAPI application: `create_app()` builds everything once and hands it to endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sparklio import __version__
from sparklio.api.errors import install_error_handlers
from sparklio.api.middleware import RequestContextMiddleware
from sparklio.api.v1 import api_router
from sparklio.api.v1.endpoints import health
from sparklio.core.config import Settings, load_settings
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.llm.providers.registry import ProviderRegistry


def create_app(
    settings: Settings | None = None, *, registry: ProviderRegistry | None = None
) -> FastAPI:
    """The Sparklio API. Settings, registry, router and gateway are built here, once.

    Everything is ready when this returns, so the app also serves in-process through
    `httpx.ASGITransport(app=create_app())`, which runs no lifespan; the lifespan only
    closes provider connections at shutdown. Raises ConfigError for bad settings or files.
    """
    settings = settings or load_settings()
    gateway = LLMGateway.from_settings(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.aclose()

    app = FastAPI(
        title="Sparklio",
        version=__version__,
        summary="The one door every model call of the Sparklio studio goes through.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gateway = gateway
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_size=settings.max_request_bytes)
    app.include_router(health.router)
    # Content-Length over the limit is refused by RequestContextMiddleware; this catches
    # chunked bodies while they arrive.
    app.include_router(api_router, max_body_size=settings.max_request_bytes)
    return app
