"""strategist / plan: Brief + BrandProfile -> a Strategy."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief, Channel, Short
from sparklio.services.clients.llm_client import LLMGatewayClient


class StrategyInput(BaseModel):
    brief: Brief
    brand: BrandProfile
    #: a reviewer's notes on an earlier plan, to answer in this one
    notes: list[str] = Field(default_factory=list)


class ChannelPlan(BaseModel):
    channel: Channel
    objective: str = Field(max_length=200)
    formats: list[Short] = Field(min_length=1, max_length=3)
    kpis: list[Short] = Field(min_length=1, max_length=3)


class Milestone(BaseModel):
    when: str = Field(max_length=40, description="e.g. 'week 1' or 'launch day'")
    milestone: str = Field(max_length=200)


class Strategy(BaseModel):
    positioning: str = Field(max_length=300)
    big_idea: str = Field(max_length=200)
    target_segments: list[Short] = Field(min_length=1, max_length=4)
    channel_plan: list[ChannelPlan] = Field(min_length=1, max_length=4)
    timeline: list[Milestone] = Field(min_length=1, max_length=4)


async def plan(llm: LLMGatewayClient, data: StrategyInput) -> tuple[Strategy, StepRecord]:
    """Plan the campaign."""
    payload = data.model_dump(exclude=set() if data.notes else {"notes"})
    return await ask(llm, "strategist", "strategist", "plan", payload, Strategy)
