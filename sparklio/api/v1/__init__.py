"""Version 1 of the HTTP API, mounted under /api/v1."""

from fastapi import APIRouter

from sparklio.api.v1.endpoints import llm_gateway, media_gateway

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(llm_gateway.router)
api_router.include_router(media_gateway.router)
