"""brand / profile: a Brief (and an existing brand guide or brand kit, if any) -> a BrandProfile.

With a brand kit, the profile starts from it: its voice, words to use and avoid, claims to
avoid, palette and typography are the brand's, not the model's guesses; the model only fills
what the kit leaves out (the personality and values always, the rest when the kit is empty
there)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brief_agent import Brief, Line, Short
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.wire.brand import MAX_CLAIMS, MAX_PALETTE, MAX_WORDS, BrandKit

HEX = r"^#[0-9A-Fa-f]{6}$"
_HEX_ITEMS: JsonDict = {"items": {"type": "string", "pattern": HEX}}


class BrandInput(BaseModel):
    brief: Brief
    brand_guide: str | None = None
    brand_kit: BrandKit | None = None


class ModelBrandProfile(BaseModel):
    """What the model is asked for: short lists, so a small model cannot ramble on."""

    personality: list[Short] = Field(min_length=2, max_length=5)
    voice: str = Field(max_length=300)
    values: list[Short] = Field(min_length=1, max_length=5)
    words_to_use: list[Short] = Field(default_factory=list, max_length=8)
    words_to_avoid: list[Short] = Field(default_factory=list, max_length=8)
    palette: list[str] = Field(min_length=2, max_length=5, json_schema_extra=_HEX_ITEMS)
    typography: str = Field(max_length=200)


class BrandProfile(ModelBrandProfile):
    """The profile the other agents work from: the model's, or a brand kit's (whose lists
    may be longer), with the claims the brand never makes."""

    words_to_use: list[Short] = Field(default_factory=list, max_length=MAX_WORDS)
    words_to_avoid: list[Short] = Field(default_factory=list, max_length=MAX_WORDS)
    claims_to_avoid: list[Line] = Field(default_factory=list, max_length=MAX_CLAIMS)
    palette: list[str] = Field(min_length=2, max_length=MAX_PALETTE,
                               json_schema_extra=_HEX_ITEMS)  # fmt: skip


def from_kit(guessed: ModelBrandProfile, kit: BrandKit) -> BrandProfile:
    """The kit's choices over the model's guesses; the model's where the kit has none."""
    palette = list(kit.palette) or list(guessed.palette)
    if len(palette) < 2:  # a profile has two colours at least: the model's fill the gap
        palette += [c for c in guessed.palette if c.lower() != palette[0].lower()][:1]
    return BrandProfile(
        personality=guessed.personality,
        voice=kit.voice or guessed.voice,
        values=guessed.values,
        words_to_use=kit.words_to_use or guessed.words_to_use,
        # what the brand avoids is its call: a kit's empty list is not filled with guesses
        words_to_avoid=kit.words_to_avoid,
        claims_to_avoid=kit.claims_to_avoid,
        palette=palette,
        typography=kit.typography or guessed.typography,
    )


async def profile(llm: LLMGatewayClient, data: BrandInput) -> tuple[BrandProfile, StepRecord]:
    """Describe the brand: from its kit when there is one, else as the model reads it."""
    payload: dict[str, Any] = data.model_dump()
    if data.brand_kit is None:
        payload.pop("brand_kit")  # the same request as before brand kits existed
    guessed, record = await ask(llm, "brand", "brand", "profile", payload, ModelBrandProfile)
    if data.brand_kit is not None:
        return from_kit(guessed, data.brand_kit), record
    return BrandProfile.model_validate(guessed.model_dump()), record
