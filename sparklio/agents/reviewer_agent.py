"""reviewer / review: the model's judgement, combined with checks no model should be trusted
with (length limits, words the brand avoids, a missing call to action): small models miss
such things."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief, Channel, Line
from sparklio.agents.copywriter_agent import ChannelCopy, VariantCounts
from sparklio.agents.rules import Rule, Violation, check, rules_for
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
    #: what the rule checks found, each with its channel, rule and offending text
    violations: list[Violation] = Field(default_factory=list)


def check_copy(
    copies: list[ChannelCopy], brand: BrandProfile, rules: Sequence[Rule] = ()
) -> list[RevisionRequest]:
    """What is wrong with the copy by rule, per channel, as revision requests."""
    return [RevisionRequest(channel=v.channel, request=v.message)
            for v in violations(copies, brand, rules)]  # fmt: skip


def violations(
    copies: list[ChannelCopy],
    brand: BrandProfile,
    rules: Sequence[Rule] = (),
    variants: Mapping[str, VariantCounts] | None = None,
) -> list[Violation]:
    """Every rule the copy breaks, in every variant: its channel's limits, the words the
    brand avoids, and `rules` (the brief's, the brand kit's, the built-in ones); each finding
    once. `variants`: how many variants each channel asked for."""
    brand_rules = rules_for(brand_words=brand.words_to_avoid, built_in=False)
    brand_rules += [Rule(term=c, kind="claim", source="brand") for c in brand.claims_to_avoid]
    known = {" ".join(r.term.casefold().split()) for r in rules}
    every = [*rules, *(r for r in brand_rules if " ".join(r.term.casefold().split()) not in known)]
    found: dict[tuple[str, str], Violation] = {}
    for violation in check(copies, every, variants):
        found.setdefault((violation.channel, violation.message), violation)
    return list(found.values())


async def review(
    llm: LLMGatewayClient,
    data: ReviewInput,
    record_step: str = "review",
    rules: Sequence[Rule] = (),
    variants: Mapping[str, VariantCounts] | None = None,
) -> tuple[Review, StepRecord]:
    """The model's review, with the rule checks added: any rule finding (in the copy or any
    of its `variants`) withholds approval, and becomes a revision request whatever the
    model thought."""
    judged, record = await ask(
        llm, record_step, "reviewer", "review", data.model_dump(), ModelReview
    )
    broken = violations(data.copies, data.brand, rules, variants)
    findings = [RevisionRequest(channel=v.channel, request=v.message) for v in broken]
    channels = {c.channel for c in data.copies}
    requests = [r for r in judged.revision_requests if r.channel in channels]
    combined = Review(
        scores=judged.scores,
        issues=[*judged.issues, *(f"{f.channel}: {f.request}" for f in findings)],
        approved=judged.approved and not findings,
        revision_requests=[*requests, *findings],
        rule_findings=len(findings),
        violations=broken,
    )
    return combined, record
