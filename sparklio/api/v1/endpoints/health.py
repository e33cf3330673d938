"""Liveness: `GET /health`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from sparklio import __version__
from sparklio.api.deps import GatewayDep
from sparklio.api.v1.endpoints.llm_gateway import json_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(gateway: GatewayDep) -> Response:
    """Whether the gateway is up, and in which generator mode."""
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "generator_mode": gateway.router.mode,
            # per provider endpoint: circuit state, calls in flight and waiting
            "endpoints": gateway.guards.snapshot(),
        }
    )
