"""brand / profile: a Brief (and an existing brand guide, if any) -> a BrandProfile."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brief_agent import Brief, Short
from sparklio.services.clients.llm_client import LLMGatewayClient

HEX = r"^#[0-9A-Fa-f]{6}$"


class BrandInput(BaseModel):
    brief: Brief
    brand_guide: str | None = None


class BrandProfile(BaseModel):
    personality: list[Short] = Field(min_length=2, max_length=5)
    voice: str = Field(max_length=300)
    values: list[Short] = Field(min_length=1, max_length=5)
    words_to_use: list[Short] = Field(default_factory=list, max_length=8)
    words_to_avoid: list[Short] = Field(default_factory=list, max_length=8)
    palette: list[str] = Field(min_length=2, max_length=5, json_schema_extra={"items": {
        "type": "string", "pattern": HEX}})  # fmt: skip
    typography: str = Field(max_length=200)


async def profile(llm: LLMGatewayClient, data: BrandInput) -> tuple[BrandProfile, StepRecord]:
    """Describe the brand."""
    return await ask(llm, "brand", "brand", "profile", data.model_dump(), BrandProfile)
