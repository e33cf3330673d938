"""reviewer / review: the model's judgement, combined with checks no model should be trusted
with (length limits, words the brand avoids, a missing call to action): small models miss
such things."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief, Channel, Line
from sparklio.agents.copywriter_agent import LIMITS, ChannelCopy
from sparklio.agents.vision_generator_agent import VisualConcept
from sparklio.services.clients.llm_client import LLMGatewayClient

Criterion = Literal["brand_fit", "clarity", "claims_and_compliance", "channel_fit"]


class ReviewInput(BaseModel):
    brief: Brief
    brand: BrandProfile
    copies: list[ChannelCopy]
    concepts: list[VisualConcept]


#: Scores as an enum, not a range: llama.cpp's schema grammar enforces enums but not minimum
#: and maximum, and a small model then answers 1000.
Score = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class CriterionScore(BaseModel):
    criterion: Criterion
    score: Score
    comment: str = Field(max_length=300)


class RevisionRequest(BaseModel):
    channel: Channel
    request: str = Field(max_length=300)


class ModelReview(BaseModel):
    """What the model is asked for: its judgement, kept short."""

    scores: list[CriterionScore] = Field(min_length=1, max_length=4)
    issues: list[Line] = Field(default_factory=list, max_length=6)
    approved: bool
    revision_requests: list[RevisionRequest] = Field(default_factory=list, max_length=6)


class Review(BaseModel):
    """The review the pipeline acts on: the model's judgement plus the rule checks."""

    scores: list[CriterionScore]
    issues: list[str] = Field(default_factory=list)
    approved: bool
    revision_requests: list[RevisionRequest] = Field(default_factory=list)
    rule_findings: int = 0


def check_copy(copies: list[ChannelCopy], brand: BrandProfile) -> list[RevisionRequest]:
    """What is wrong with the copy by rule, per channel, as revision requests."""
    found: list[RevisionRequest] = []
    for copy in copies:
        limits = LIMITS[copy.channel]
        for field in ("headline", "body", "cta"):
            text: str = getattr(copy, field)
            limit: int = getattr(limits, field)
            if len(text) > limit:
                found.append(RevisionRequest(channel=copy.channel, request=(
                    f"The {field} has {len(text)} characters; {copy.channel} shows at most "
                    f"{limit}. Shorten it.")))  # fmt: skip
        if not copy.cta.strip():
            found.append(RevisionRequest(channel=copy.channel,
                                         request="Add a call to action."))  # fmt: skip
        if len(copy.hashtags) > limits.hashtags:
            found.append(RevisionRequest(channel=copy.channel, request=(
                f"Use at most {limits.hashtags} hashtags on {copy.channel} "
                f"(there are {len(copy.hashtags)}).")))  # fmt: skip
        text = " ".join([copy.headline, copy.body, copy.cta, *copy.hashtags]).lower()
        for word in brand.words_to_avoid:
            if word.strip() and re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", text):
                found.append(RevisionRequest(channel=copy.channel, request=(
                    f"Remove {word!r}: the brand avoids that word.")))  # fmt: skip
    return found


async def review(
    llm: LLMGatewayClient, data: ReviewInput, record_step: str = "review"
) -> tuple[Review, StepRecord]:
    """The model's review, with the rule checks added: any rule finding withholds approval."""
    judged, record = await ask(
        llm, record_step, "reviewer", "review", data.model_dump(), ModelReview
    )
    findings = check_copy(data.copies, data.brand)
    channels = {c.channel for c in data.copies}
    requests = [r for r in judged.revision_requests if r.channel in channels]
    combined = Review(
        scores=judged.scores,
        issues=[*judged.issues, *(f"{f.channel}: {f.request}" for f in findings)],
        approved=judged.approved and not findings,
        revision_requests=[*requests, *findings],
        rule_findings=len(findings),
    )
    return combined, record
