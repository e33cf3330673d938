"""FastAPI dependencies: the parts of the app's `Services`, built once in `create_app`, each
behind an `Annotated` alias (SettingsDep, GatewayDep, ...). Endpoints and other dependencies
take these aliases; nothing else reads `app.state` (`services_of` is for the code that runs
outside dependency injection: exception handlers, `close_app`).

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
which cost a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette

from sparklio.core.config import Settings
from sparklio.services.auth import AuthService
from sparklio.services.calllog import CallLog
from sparklio.services.container import Services
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.media.gateway import MediaGateway


def install_services(app: Starlette, services: Services) -> None:
    """Give `app` the services `create_app` built: the one thing it keeps in `app.state`."""
    app.state.services = services


def services_of(app: Starlette) -> Services:
    """The services `create_app` stored on `app`."""
    services: Services = app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request.app)


async def get_settings(request: Request) -> Settings:
    return services_of(request.app).settings


async def get_gateway(request: Request) -> LLMGateway:
    return services_of(request.app).gateway


async def get_media_gateway(request: Request) -> MediaGateway:
    return services_of(request.app).media


async def get_auth(request: Request) -> AuthService:
    return services_of(request.app).auth


async def get_sessions(request: Request) -> async_sessionmaker[Any]:
    return services_of(request.app).db_sessions


async def get_call_log(request: Request) -> CallLog:
    return services_of(request.app).call_log


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GatewayDep = Annotated[LLMGateway, Depends(get_gateway)]
MediaGatewayDep = Annotated[MediaGateway, Depends(get_media_gateway)]
AuthServiceDep = Annotated[AuthService, Depends(get_auth)]
SessionsDep = Annotated[async_sessionmaker[Any], Depends(get_sessions)]
CallLogDep = Annotated[CallLog, Depends(get_call_log)]
