"""The FastAPI application: `create_app()` builds everything once and hands it to endpoints."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from sparklio import __version__
from sparklio.api.deps import install_services, services_of
from sparklio.api.errors import install_error_handlers
from sparklio.api.middleware import RequestContextMiddleware
from sparklio.api.openapi import install_openapi
from sparklio.api.v1 import api_router
from sparklio.api.v1.endpoints import health, metrics, openai_compat
from sparklio.core.config import Settings, load_settings
from sparklio.db.engine import (
    database_url,
    dispose,
    make_engine,
    migrate_async,
    migrate_at_start,
    probe_engine,
    sessions,
)
from sparklio.db.monitor import DatabaseMonitor
from sparklio.services import telemetry
from sparklio.services.auth import AuthService
from sparklio.services.auth_shared import build_shared_auth
from sparklio.services.budgets import Budgets
from sparklio.services.calllog import CallLog
from sparklio.services.campaigns.engine import CampaignEngine
from sparklio.services.campaigns.store import CampaignStore
from sparklio.services.container import Services
from sparklio.services.gateway.routing import load_routing_file, routing_path
from sparklio.services.llm.cache import build_cache
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.media.gateway import MediaGateway
from sparklio.services.media.jobs import JobStore
from sparklio.services.media.progress import build_shared_progress
from sparklio.services.media.providers.registry import MediaRegistry
from sparklio.studio import install_studio

log = logging.getLogger("sparklio")


def create_app(
    settings: Settings | None = None,
    *,
    registry: ProviderRegistry | None = None,
    media_registry: MediaRegistry | None = None,
    migrate_db: bool = True,
    migrate_in_child: bool = False,
) -> FastAPI:
    """The Sparklio API. Settings, registry, router and gateway are built here, once.

    Everything is ready when this returns, so the app also serves in-process through
    `httpx.ASGITransport(app=create_app())`, which runs no lifespan; the lifespan lets
    providers prepare at start and closes their connections (and running image jobs) at
    shutdown: in-process, call `close_app(app)`. Raises ConfigError for bad settings or files.

    A database that cannot be reached does not stop the start: calls are served (call records
    spill to disk), and the database monitor runs the migrations once it answers.
    `migrate_in_child` migrates in a child process (`sparklio serve`: the server never
    imports Alembic).
    """
    settings = settings or load_settings()
    registry = registry or ProviderRegistry()
    media_registry = media_registry or MediaRegistry()
    path = routing_path(settings.llm_routing_file)
    routing = load_routing_file(path, registry.names(), media_registry.names())
    url = database_url(settings)
    engine = make_engine(url)  # connects on first use
    db = sessions(engine)
    # every call is recorded without waiting for the database (see CallLog)
    call_log = CallLog(engine, settings.home / "calllog" / "calls.jsonl", settings.call_log_buffer)
    # a bad routing file or endpoint fails the start here, before the database is touched
    # answers of deterministic calls: in memory, or in Redis when REDIS_URL is set
    cache = build_cache(settings)
    # limits and budgets per key and user: counters in Redis when REDIS_URL is set
    budgets = Budgets(settings, db)
    gateway = LLMGateway.build(settings, routing, path, registry, call_log, cache=cache,
                               budgets=budgets)  # fmt: skip

    async def launch() -> None:
        """DBOS for this app's durable work: image jobs run on the campaigns' engine."""
        await campaigns.start()

    # with REDIS_URL, a job's live progress is visible from every process
    jobs = JobStore(db, progress=build_shared_progress(settings))
    media = MediaGateway.build(settings, routing, path, media_registry, jobs, launch)
    # with REDIS_URL, revocations and failed-login counts are shared by every process
    auth = AuthService(settings, db, shared=build_shared_auth(settings))
    auth.load_secret()  # a bad JWT_SECRET fails here, at start
    migrated = not migrate_db or migrate_at_start(url, in_child=migrate_in_child)
    monitor = _database_monitor(settings, url, migrated, migrate_in_child, call_log, media)
    campaigns = CampaignEngine(settings, CampaignStore(db), auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await call_log.start()
        # only the server resumes jobs: an in-process app (no lifespan) sharing its database
        # must not take over the jobs it is running; the monitor does it once the database
        # answers
        monitor.after_migrations(partial(_recover_jobs, media))
        # and the campaigns a stop left unfinished (in-process, the first campaign starts it)
        monitor.after_migrations(campaigns.recover)
        monitor.start()  # and migrates first if the start could not
        await gateway.start()
        yield
        await close_app(app)

    app = FastAPI(
        title="Sparklio",
        version=__version__,
        summary="The one door every model call of the Sparklio studio goes through.",
        lifespan=lifespan,
    )
    services = Services(settings, gateway, media, engine, db, auth, call_log, monitor, campaigns)
    install_services(app, services)  # what endpoints reach through api.deps
    install_error_handlers(app)
    install_openapi(app)  # the security scheme, every error status and the real error body
    telemetry.configure_tracing(settings.otel_exporter_otlp_endpoint)  # None: no traces
    app.add_middleware(telemetry.TelemetryMiddleware)  # inside: it reads the request id
    app.add_middleware(
        RequestContextMiddleware,
        max_body_size=settings.max_request_bytes,
        body_timeout=settings.server_body_timeout,
    )
    app.include_router(health.router)
    app.include_router(metrics.router)
    # Content-Length over the limit is refused by RequestContextMiddleware; this catches
    # chunked bodies while they arrive.
    app.include_router(api_router, max_body_size=settings.max_request_bytes)
    # the OpenAI-compatible API, at /v1 as OpenAI's clients expect it
    app.include_router(openai_compat.router, max_body_size=settings.max_request_bytes)
    install_studio(app)  # the web studio at /studio, a client of the API above
    campaigns.bind(app)  # the steps call the models through the app itself
    return app


async def close_app(app: FastAPI) -> None:
    """What the lifespan does at shutdown, for an app used in-process without one.

    Every step runs even when one before it fails (the error is raised at the end): an engine
    left undisposed keeps its pooled connections until the garbage collector finds them, and
    aiosqlite's then warn "deleted before being closed" in whatever runs at that moment."""
    services = services_of(app)
    async with contextlib.AsyncExitStack() as stack:  # runs the callbacks last-in first
        stack.push_async_callback(dispose, services.db_engine)  # once its connections are back
        stack.push_async_callback(services.db_monitor.aclose)
        # writes what is buffered, or spills it to its file; before the engine goes
        stack.push_async_callback(services.call_log.aclose)
        stack.push_async_callback(services.gateway.aclose)
        stack.push_async_callback(services.auth.aclose)
        if services.gateway.cache is not None:
            stack.push_async_callback(services.gateway.cache.aclose)
        if services.gateway.budgets is not None:
            stack.push_async_callback(services.gateway.budgets.aclose)
        stack.push_async_callback(services.media.aclose)  # its jobs' last saves use the engine
        # first of all: stop the campaigns before what their steps use goes
        stack.push_async_callback(services.campaigns.aclose)  # DBOS goes last of the three
        # before DBOS goes, the image jobs running here (the next start resumes them)
        stack.push_async_callback(services.media.stop_jobs)
        # and before those, the campaigns (whose image steps wait on those jobs)
        stack.push_async_callback(services.campaigns.stop_running)


def _database_monitor(
    settings: Settings,
    url: str,
    migrated: bool,
    in_child: bool,
    call_log: CallLog,
    media: MediaGateway,
) -> DatabaseMonitor:
    """The monitor that tells the call log and the media jobs when the database goes away
    and comes back, and migrates it when the start could not."""
    monitor = DatabaseMonitor(
        probe_engine(url),
        interval=settings.db_probe_interval,
        timeout=max(1.0, min(5.0, settings.db_probe_interval * 2)),
        migrate=None if migrated else partial(migrate_async, url, in_child=in_child),
    )

    def changed(up: bool, error: str | None) -> None:
        if up:
            call_log.database_up()
        else:
            call_log.database_down(error or "the database does not answer")
        media.jobs.database_changed(up, error)

    monitor.on_change(changed)
    if not migrated:
        # inserts into tables that do not exist yet would be refused as bad records
        call_log.hold("waiting for the database to be migrated")
        monitor.after_migrations(_release(call_log))
    return monitor


def _release(call_log: CallLog) -> Callable[[], Awaitable[None]]:
    async def release() -> None:
        call_log.release()

    return release


async def _recover_jobs(media: MediaGateway) -> None:
    """Resume the image jobs an earlier run left unfinished."""
    count = await media.recover()
    if count:
        log.info("%d media jobs left unfinished by the last stop are resumed", count)
