"""Everything one running gateway holds, built once by `create_app` (sparklio.main).

The app keeps it as `app.state.services`; endpoints reach its parts through the `Depends`
aliases of `sparklio.api.deps` (SettingsDep, GatewayDep, ...), `close_app` closes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module stays cheap to import
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    from sparklio.core.config import Settings
    from sparklio.db.monitor import DatabaseMonitor
    from sparklio.services.auth import AuthService
    from sparklio.services.calllog import CallLog
    from sparklio.services.campaigns.engine import CampaignEngine
    from sparklio.services.llm.gateway import LLMGateway
    from sparklio.services.media.gateway import MediaGateway
    from sparklio.services.redis_monitor import RedisMonitor


@dataclass(frozen=True, slots=True)
class Services:
    """The gateway's long-lived parts, one of each per app."""

    settings: Settings
    #: LLM calls: routing, prompts, providers, resilience
    gateway: LLMGateway
    #: image jobs and their assets
    media: MediaGateway
    db_engine: AsyncEngine
    #: sessions on `db_engine`
    db_sessions: async_sessionmaker[Any]
    auth: AuthService
    #: every call's record, written without waiting for the database
    call_log: CallLog
    #: tells the call log and the media jobs when the database goes and comes back
    db_monitor: DatabaseMonitor
    #: campaigns as durable workflows
    campaigns: CampaignEngine
    #: whether the Redis of REDIS_URL answers (None without one)
    redis_monitor: RedisMonitor | None = None
