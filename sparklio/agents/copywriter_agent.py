"""copywriter / channel_copy and copywriter / revise: copy per channel, within its limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief, Channel
from sparklio.agents.strategist_agent import Strategy
from sparklio.services.clients.llm_client import LLMGatewayClient

#: Called with a channel and a piece of its copy (raw JSON text) as the model writes it.
CopyDelta = Callable[[str, str], None]


class ChannelLimits(BaseModel):
    """The most a channel shows, in characters (hashtags: how many)."""

    headline: int
    body: int
    cta: int
    hashtags: int


#: What each channel allows: an Instagram caption at most 2,200 characters and 30 hashtags,
#: a search-ad headline at most 30, a YouTube title 100 and description 5,000.
LIMITS: dict[str, ChannelLimits] = {
    "instagram": ChannelLimits(headline=60, body=2200, cta=30, hashtags=30),
    "naver_search": ChannelLimits(headline=30, body=90, cta=20, hashtags=0),
    "youtube": ChannelLimits(headline=100, body=5000, cta=40, hashtags=15),
    "kakao": ChannelLimits(headline=40, body=400, cta=14, hashtags=0),
    "email": ChannelLimits(headline=60, body=3000, cta=30, hashtags=0),
    "blog": ChannelLimits(headline=80, body=5000, cta=40, hashtags=10),
}


class ChannelCopy(BaseModel):
    channel: Channel
    headline: str
    body: str
    cta: str
    hashtags: list[str] = Field(default_factory=list)


class CopyInput(BaseModel):
    brief: Brief
    brand: BrandProfile
    strategy: Strategy
    #: words and claims the brief or brand kit forbids (checked by rule on the answer)
    avoid: list[str] = Field(default_factory=list)


class RevisionInput(BaseModel):
    copy_: ChannelCopy = Field(alias="copy")
    requests: list[str]
    brand: BrandProfile
    avoid: list[str] = Field(default_factory=list)


def copy_schema(channel: str) -> dict[str, Any]:
    """ChannelCopy's JSON Schema with this channel's limits, so the model is held to them."""
    limits = LIMITS[channel]
    return {
        "type": "object",
        "properties": {
            "channel": {"const": channel},
            "headline": {"type": "string", "minLength": 1, "maxLength": limits.headline},
            "body": {"type": "string", "minLength": 1, "maxLength": limits.body},
            "cta": {"type": "string", "minLength": 1, "maxLength": limits.cta},
            "hashtags": {"type": "array", "items": {"type": "string", "maxLength": 40},
                         "maxItems": limits.hashtags},
        },
        "required": ["channel", "headline", "body", "cta", "hashtags"],
        "additionalProperties": False,
    }  # fmt: skip


def _brand_words(brand: BrandProfile, avoid: list[str]) -> dict[str, Any]:
    words = {"voice": brand.voice, "words_to_use": brand.words_to_use,
             "words_to_avoid": brand.words_to_avoid}  # fmt: skip
    # only when there is something: without, the request is the same as before these existed
    if brand.claims_to_avoid:
        words["claims_to_avoid"] = brand.claims_to_avoid
    if avoid:
        words["never_write"] = avoid
    return words


async def channel_copy(
    llm: LLMGatewayClient, data: CopyInput, on_delta: CopyDelta | None = None
) -> tuple[list[ChannelCopy], list[StepRecord]]:
    """Copy for every channel of the brief, written in parallel. With `on_delta`, each
    channel's copy streams: `on_delta(channel, piece)` gets the raw JSON as it is written,
    so a studio can show copy appearing."""

    results = await asyncio.gather(
        *(copy_for(llm, data, c, on_delta) for c in dict.fromkeys(data.brief.channels))
    )
    return [r[0] for r in results], [r[1] for r in results]


async def copy_for(
    llm: LLMGatewayClient, data: CopyInput, channel: str, on_delta: CopyDelta | None = None
) -> tuple[ChannelCopy, StepRecord]:
    """Copy for one channel of the brief (streamed to `on_delta(channel, piece)` if given)."""
    plan = next((p for p in data.strategy.channel_plan if p.channel == channel), None)
    payload = {
        "channel": channel,
        "limits": LIMITS[channel].model_dump(),
        "product": data.brief.product,
        "audience": data.brief.audience,
        "key_messages": data.brief.key_messages,
        "language": data.brief.language,
        "big_idea": data.strategy.big_idea,
        "positioning": data.strategy.positioning,
        "channel_plan": plan.model_dump() if plan else None,
        "brand": _brand_words(data.brand, data.avoid),
    }
    shown = None if on_delta is None else partial(on_delta, channel)
    return await ask(llm, f"copywriter:{channel}", "copywriter", "channel_copy", payload,
                     ChannelCopy, json_schema=copy_schema(channel),
                     on_delta=shown)  # fmt: skip


async def revise(llm: LLMGatewayClient, data: RevisionInput) -> tuple[ChannelCopy, StepRecord]:
    """A new version of one channel's copy that answers the reviewer's requests."""
    channel = data.copy_.channel
    payload = {
        "copy": data.copy_.model_dump(),
        "requests": data.requests,
        "limits": LIMITS[channel].model_dump(),
        "brand": _brand_words(data.brand, data.avoid),
    }
    return await ask(llm, f"revise:{channel}", "copywriter", "revise", payload, ChannelCopy,
                     json_schema=copy_schema(channel))  # fmt: skip
