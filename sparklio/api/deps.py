"""FastAPI dependencies: what endpoints get from the app, built once in `create_app`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sparklio.core.config import Settings
from sparklio.services.llm.gateway import LLMGateway


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_gateway(request: Request) -> LLMGateway:
    gateway: LLMGateway = request.app.state.gateway
    return gateway


SettingsDep = Annotated[Settings, Depends(get_settings)]
GatewayDep = Annotated[LLMGateway, Depends(get_gateway)]
