"""`GET /metrics`: the gateway's metrics in Prometheus' text format.

Admins only unless METRICS_PUBLIC: the metrics name users' roles, tasks, models and what they
spend. A loopback exemption would leak them through any reverse proxy on the same host, so a
scraper sends an admin API key as its bearer token (Prometheus' `authorization` setting), or
the gateway runs with METRICS_PUBLIC=true where only the scraper can reach it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from sparklio.api.auth import require_admin, require_principal
from sparklio.api.deps import AuthServiceDep, ServicesDep
from sparklio.services import telemetry

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, services: ServicesDep, auth: AuthServiceDep) -> Response:
    """Requests, gateway calls and attempts, tokens, cost, cache, endpoint queues and
    breakers, the call log and campaign steps; with `sparklio serve`, every worker's."""
    if not services.settings.metrics_public:
        await require_admin(await require_principal(request, auth))
    telemetry.sample(services)  # this process's live state, read on the loop
    # multiprocess mode reads every worker's files: off the event loop
    body, content_type = await asyncio.to_thread(telemetry.render)
    return Response(body, media_type=content_type)
