"""FastAPI dependencies: what endpoints get from the app, built once in `create_app`.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
which cost a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sparklio.core.config import Settings
from sparklio.services.llm.gateway import LLMGateway
from sparklio.services.media.gateway import MediaGateway


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_gateway(request: Request) -> LLMGateway:
    gateway: LLMGateway = request.app.state.gateway
    return gateway


async def get_media_gateway(request: Request) -> MediaGateway:
    media: MediaGateway = request.app.state.media
    return media


SettingsDep = Annotated[Settings, Depends(get_settings)]
GatewayDep = Annotated[LLMGateway, Depends(get_gateway)]
MediaGatewayDep = Annotated[MediaGateway, Depends(get_media_gateway)]
