"""Liveness: `GET /health`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sparklio import __version__
from sparklio.api.deps import ServicesDep
from sparklio.api.responses import json_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> Response:
    """Whether the gateway is up, in which generator mode, whether the database answers (as
    of the monitor's last check, at most DB_PROBE_INTERVAL seconds old: this never waits on
    the database), how the call log keeps up, the response cache's state, and whether the
    Redis the processes share state through answers (as of its monitor's last PING)."""
    gateway, monitor, redis = services.gateway, services.db_monitor, services.redis_monitor
    monitor.start()  # in-process apps run no lifespan: the first /health starts it
    if redis is not None:
        redis.start()
    database = monitor.snapshot()
    call_log = services.call_log.stats()
    database["media_jobs_unsaved"] = services.media.jobs.unsaved
    healthy = database["status"] != "down" and call_log["database"] == "ok"
    return json_response(
        {
            # the database being down does not stop calls: they are logged once it is back
            "status": "ok" if healthy else "degraded",
            "database": database,
            "call_log": call_log,
            "version": __version__,
            "generator_mode": gateway.router.mode,
            # per endpoint used so far: circuit state, calls in flight and waiting
            "endpoints": gateway.endpoints.snapshot(),
            # the response cache: its backend and whether it answered last time (a Redis
            # that does not only makes calls misses)
            "cache": gateway.cache.stats() if gateway.cache is not None else None,
            # the state shared with other processes (guards, limits, revocations, image job
            # progress): "off" without REDIS_URL. Down leaves "status" ok, as the cache does:
            # calls are served, each process keeping that state on its own meanwhile
            "redis": redis.snapshot() if redis is not None else {"status": "off"},
        }
    )
