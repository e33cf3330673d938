"""copywriter / channel_copy and copywriter / revise: copy per channel, within its limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief, Channel
from sparklio.agents.strategist_agent import Strategy
from sparklio.exceptions import InvalidRequestError
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


class VariantRange(BaseModel):
    """How many variants of each kind a channel may ask for, inclusive."""

    headlines: tuple[int, int]
    descriptions: tuple[int, int]


#: How many headline and description (body) variants each channel may ask for, to test
#: against each other. A search ad follows Google's and Naver's responsive search ads: 3 to
#: 15 headlines and 2 to 4 descriptions, which the platform combines. The other channels
#: test a few versions at a time; their long bodies (a caption, a video description) are
#: written whole, so fewer of them.
VARIANT_RANGES: dict[str, VariantRange] = {
    "instagram": VariantRange(headlines=(1, 5), descriptions=(1, 3)),
    "naver_search": VariantRange(headlines=(3, 15), descriptions=(2, 4)),
    "youtube": VariantRange(headlines=(1, 5), descriptions=(1, 2)),
    "kakao": VariantRange(headlines=(1, 5), descriptions=(1, 3)),
    "email": VariantRange(headlines=(1, 5), descriptions=(1, 3)),
    "blog": VariantRange(headlines=(1, 5), descriptions=(1, 2)),
}


class VariantCounts(BaseModel):
    """How many variants a channel asked for: exactly this many of each."""

    headlines: int
    descriptions: int


def variant_counts(
    channel: str, headlines: int | None = None, descriptions: int | None = None
) -> VariantCounts:
    """The counts a channel's ask comes to (an omitted one: the channel's least).
    InvalidRequestError (422 over HTTP) names a count out of the channel's range, and the
    range."""
    allowed = VARIANT_RANGES.get(channel)
    if allowed is None:
        raise InvalidRequestError(
            f"variants.{channel}: no such channel; variants are for {sorted(VARIANT_RANGES)}",
            details=[{"field": f"variants.{channel}", "allowed": sorted(VARIANT_RANGES)}],
        )
    counts: dict[str, int] = {}
    for kind, asked in (("headlines", headlines), ("descriptions", descriptions)):
        low, high = getattr(allowed, kind)
        if asked is None:
            asked = low
        if not low <= asked <= high:
            limit = getattr(LIMITS[channel], "headline" if kind == "headlines" else "body")
            raise InvalidRequestError(
                f"variants.{channel}.{kind}: {channel} takes {low} to {high} {kind[:-1]} variants "
                f"(each at most {limit} characters), not {asked}.",
                details=[{"field": f"variants.{channel}.{kind}", "value": asked,
                          "allowed": [low, high]}],
            )  # fmt: skip
        counts[kind] = asked
    return VariantCounts(**counts)


class Variants(BaseModel):
    """Headline and description variants of a channel's copy, each held to its limits."""

    headlines: list[str]
    descriptions: list[str]


class ChannelCopy(BaseModel):
    channel: Channel
    headline: str
    body: str
    cta: str
    hashtags: list[str] = Field(default_factory=list)
    #: only when the channel asked for variants
    variants: Variants | None = None

    @model_serializer(mode="wrap")
    def _without_no_variants(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No `variants` key when none were asked: copy sent to a model (a revision, the
        review) and the results kept stay byte for byte what they were before variants."""
        data: dict[str, Any] = handler(self)
        if self.variants is None:
            data.pop("variants", None)
        return data


class CopyInput(BaseModel):
    brief: Brief
    brand: BrandProfile
    strategy: Strategy
    #: words and claims the brief or brand kit forbids (checked by rule on the answer)
    avoid: list[str] = Field(default_factory=list)
    #: the variants each channel asks for, by channel (none: no variants)
    variants: dict[str, VariantCounts] = Field(default_factory=dict)


class RevisionInput(BaseModel):
    copy_: ChannelCopy = Field(alias="copy")
    requests: list[str]
    brand: BrandProfile
    avoid: list[str] = Field(default_factory=list)
    #: the variants the channel asked for (None: as many as the copy has, if any)
    variants: VariantCounts | None = None


def copy_schema(channel: str, variants: VariantCounts | None = None) -> dict[str, Any]:
    """ChannelCopy's JSON Schema with this channel's limits, so the model is held to them;
    with `variants`, exactly that many headline and description variants, each within the
    headline's and the body's limit."""
    limits = LIMITS[channel]
    schema: dict[str, Any] = {
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
    if variants is not None:
        schema["properties"]["variants"] = {
            "type": "object",
            "properties": {
                "headlines": _texts(variants.headlines, limits.headline),
                "descriptions": _texts(variants.descriptions, limits.body),
            },
            "required": ["headlines", "descriptions"],
            "additionalProperties": False,
        }
        schema["required"].append("variants")
    return schema


def _texts(count: int, longest: int) -> dict[str, Any]:
    """Exactly `count` texts of 1 to `longest` characters."""
    return {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": longest},
            "minItems": count, "maxItems": count}  # fmt: skip


def counts_of(copy: ChannelCopy) -> VariantCounts | None:
    """How many variants `copy` has (None: it has none)."""
    if copy.variants is None:
        return None
    return VariantCounts(headlines=len(copy.variants.headlines),
                         descriptions=len(copy.variants.descriptions))  # fmt: skip


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
    variants = data.variants.get(channel)
    if variants is not None:  # only then: a request without variants stays as it was
        payload["variants"] = variants.model_dump()
    shown = None if on_delta is None else partial(on_delta, channel)
    return await ask(llm, f"copywriter:{channel}", "copywriter", "channel_copy", payload,
                     ChannelCopy, json_schema=copy_schema(channel, variants),
                     on_delta=shown)  # fmt: skip


async def revise(llm: LLMGatewayClient, data: RevisionInput) -> tuple[ChannelCopy, StepRecord]:
    """A new version of one channel's copy that answers the reviewer's requests, with as
    many variants as the channel asked for."""
    channel = data.copy_.channel
    payload: dict[str, Any] = {
        "copy": data.copy_.model_dump(),
        "requests": data.requests,
        "limits": LIMITS[channel].model_dump(),
        "brand": _brand_words(data.brand, data.avoid),
    }
    variants = data.variants or counts_of(data.copy_)
    if variants is not None:
        payload["variants"] = variants.model_dump()
    return await ask(llm, f"revise:{channel}", "copywriter", "revise", payload, ChannelCopy,
                     json_schema=copy_schema(channel, variants))  # fmt: skip
