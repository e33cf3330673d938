"""Liveness: `GET /health`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sparklio import __version__
from sparklio.api.deps import GatewayDep
from sparklio.api.v1.endpoints.llm_gateway import json_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(gateway: GatewayDep, request: Request) -> Response:
    """Whether the gateway is up, in which generator mode, and how its call log keeps up."""
    call_log = request.app.state.call_log.stats()
    return json_response(
        {
            # the database being down does not stop calls: they are logged once it is back
            "status": "ok" if call_log["database"] == "ok" else "degraded",
            "call_log": call_log,
            "version": __version__,
            "generator_mode": gateway.router.mode,
            # per provider endpoint: circuit state, calls in flight and waiting
            "endpoints": gateway.guards.snapshot(),
        }
    )
