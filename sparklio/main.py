"""The FastAPI application: `create_app()` builds everything once and hands it to endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sparklio import __version__
from sparklio.api.errors import install_error_handlers
from sparklio.api.middleware import RequestContextMiddleware
from sparklio.api.openapi import install_openapi
from sparklio.api.v1 import api_router
from sparklio.api.v1.endpoints import health
from sparklio.core.config import Settings, load_settings
from sparklio.db.engine import database_url, make_engine, migrate, sessions
from sparklio.services.auth import AuthService
from sparklio.services.calllog import CallLog
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.llm.routing import load_routing_file, routing_path
from sparklio.services.media.gateway import MediaGateway
from sparklio.services.media.jobs import JobStore
from sparklio.services.media.providers.registry import MediaRegistry


def create_app(
    settings: Settings | None = None,
    *,
    registry: ProviderRegistry | None = None,
    media_registry: MediaRegistry | None = None,
    migrate_db: bool = True,
) -> FastAPI:
    """The Sparklio API. Settings, registry, router and gateway are built here, once.

    Everything is ready when this returns, so the app also serves in-process through
    `httpx.ASGITransport(app=create_app())`, which runs no lifespan; the lifespan lets
    providers prepare at start and closes their connections (and running image jobs) at
    shutdown: in-process, call `close_app(app)`. Raises ConfigError for bad settings or files.
    """
    settings = settings or load_settings()
    registry = registry or ProviderRegistry(settings)
    media_registry = media_registry or MediaRegistry(settings)
    path = routing_path(settings.llm_routing_file)
    routing = load_routing_file(path, registry.names(), media_registry.names())
    gateway = LLMGateway.build(settings, routing, path, registry)
    url = database_url(settings)
    if migrate_db:  # `sparklio serve` migrates in a child process, to keep Alembic out
        migrate(url)
    engine = make_engine(url)
    db = sessions(engine)
    auth = AuthService(settings, db)
    auth.load_secret()  # a bad JWT_SECRET fails here, at start
    media = MediaGateway.build(settings, routing, path, media_registry, JobStore(db))
    # every call is recorded without waiting for the database (see CallLog)
    call_log = CallLog(engine, settings.home / "calllog" / "calls.jsonl", settings.call_log_buffer)
    gateway.call_log = call_log

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await call_log.start()
        await media.jobs.recover()
        await gateway.start()
        yield
        await close_app(app)

    app = FastAPI(
        title="Sparklio",
        version=__version__,
        summary="The one door every model call of the Sparklio studio goes through.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.media = media
    app.state.db_engine = engine
    app.state.db_sessions = db
    app.state.auth = auth
    app.state.call_log = call_log
    install_error_handlers(app)
    install_openapi(app)  # the security scheme, every error status and the real error body
    app.add_middleware(RequestContextMiddleware, max_body_size=settings.max_request_bytes)
    app.include_router(health.router)
    # Content-Length over the limit is refused by RequestContextMiddleware; this catches
    # chunked bodies while they arrive.
    app.include_router(api_router, max_body_size=settings.max_request_bytes)
    return app


async def close_app(app: FastAPI) -> None:
    """What the lifespan does at shutdown, for an app used in-process without one."""
    await app.state.media.aclose()
    await app.state.gateway.aclose()
    await app.state.call_log.aclose()  # writes what is buffered, or spills it to its file
    await app.state.db_engine.dispose()
