"""brief / analyze: a client's raw brief -> a structured Brief."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.services.clients.llm_client import LLMGatewayClient

#: A phrase, and a sentence: list items are bounded so a small model cannot ramble on.
Short = Annotated[str, Field(max_length=80)]
Line = Annotated[str, Field(max_length=200)]

Channel = Literal["instagram", "naver_search", "youtube", "kakao", "email", "blog"]


class BriefInput(BaseModel):
    brief: str = Field(min_length=1, description="The client's brief, as they wrote it.")
    product_facts: dict[str, Any] = Field(default_factory=dict)


class Brief(BaseModel):
    product: str = Field(max_length=80)
    audience: str = Field(max_length=200)
    objectives: list[Line] = Field(min_length=1, max_length=4)
    key_messages: list[Line] = Field(min_length=1, max_length=4)
    tone: str = Field(max_length=80)
    channels: list[Channel] = Field(min_length=1, max_length=4)
    constraints: list[Line] = Field(default_factory=list, max_length=5)
    language: Literal["ko", "en"]
    deliverables: list[Short] = Field(min_length=1, max_length=5)


async def analyze(llm: LLMGatewayClient, data: BriefInput) -> tuple[Brief, StepRecord]:
    """Turn the raw brief into a Brief."""
    return await ask(llm, "brief", "brief", "analyze", data.model_dump(), Brief)
