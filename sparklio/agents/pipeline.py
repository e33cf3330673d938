"""The campaign pipeline: brief -> brand -> strategy -> copy -> concepts -> images and review
(in parallel) -> one bounded revision round when the reviewer asks for one.

Rules a model cannot break (sparklio.agents.rules: channel limits, and the words and claims the
brief, the brand kit and the built-in rules forbid) are checked by code on every piece of copy
at each review: a violation is a revision request to the copywriter, and copy that still breaks
a rule after the revision keeps the campaign from `approved` (its `violations` say where).

Every step's output is validated into its model; a failure names the step and the gateway's
error (AgentError). The Campaign keeps every output, the image assets, and per step the
provider, model, latency and tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from sparklio.agents import (
    brand_agent,
    brief_agent,
    copywriter_agent,
    reviewer_agent,
    rules,
    strategist_agent,
    vision_generator_agent,
)
from sparklio.agents.base import StepRecord
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.brief_agent import Brief
from sparklio.agents.copywriter_agent import ChannelCopy, CopyDelta
from sparklio.agents.reviewer_agent import Review
from sparklio.agents.rules import Rule, Violation
from sparklio.agents.strategist_agent import Strategy
from sparklio.agents.vision_generator_agent import CampaignImage, VisualConcept
from sparklio.exceptions import BriefError
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.wire.brand import BrandKit, Term

#: Called as each step starts ("running") and ends ("done"), for a progress display.
StepCallback = Callable[[str, str], None]


class BriefFile(BaseModel):
    """A brief as a marketer hands it over: the text, and optionally facts, a brand guide,
    and words no copy may contain."""

    brief: str = Field(min_length=1)
    product_facts: dict[str, Any] = Field(default_factory=dict)
    brand_guide: str | None = None
    words_to_avoid: list[Term] = Field(default_factory=list, max_length=30)


def load_brief(source: str) -> BriefFile:
    """A brief from a .yaml/.json file (keys brief, product_facts, brand_guide), a text
    file, or the text itself. A missing file that looks like a path is an error, not text."""
    path = Path(source).expanduser()
    try:
        is_file = len(source) < 4096 and "\n" not in source and path.is_file()
    except OSError:  # a long text is not a valid path
        is_file = False
    if not is_file:
        if not source.strip():
            raise BriefError("the brief is empty")
        if " " not in source and path.suffix.lower() in (".yaml", ".yml", ".json", ".txt", ".md"):
            raise BriefError(f"no such file: {source}")  # a mistyped path, not a brief
        return BriefFile(brief=source.strip())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BriefError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return BriefFile(brief=text.strip())
    try:
        return BriefFile.model_validate(yaml.safe_load(text))  # YAML reads JSON too
    except yaml.YAMLError as exc:
        raise BriefError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                             for e in exc.errors())  # fmt: skip
        raise BriefError(f"{path}: {problems} (expected keys: brief, product_facts, "
                         "brand_guide, words_to_avoid)") from None  # fmt: skip


class Campaign(BaseModel):
    """Everything the pipeline made, and what each step took."""

    brief_text: str
    brief: Brief
    brand: BrandProfile
    strategy: Strategy
    copies: list[ChannelCopy]
    concepts: list[VisualConcept]
    images: list[CampaignImage]
    review: Review
    first_review: Review | None = None  # the review that asked for the revision round
    revised_channels: list[str] = Field(default_factory=list)
    #: the brand kit the brand profile started from, by name
    brand_kit: str | None = None
    #: the rules the copy was held to (terms and where each comes from)
    rules: list[Rule] = Field(default_factory=list)
    #: the rules the final copy still breaks: while there is one, the campaign is not approved
    violations: list[Violation] = Field(default_factory=list)
    status: Literal["approved", "needs_changes"]
    steps: list[StepRecord]
    pipeline_ms: float


async def run_campaign(
    llm: LLMGatewayClient,
    media: MediaGatewayClient,
    brief_text: str,
    *,
    product_facts: dict[str, Any] | None = None,
    brand_guide: str | None = None,
    brand_kit: BrandKit | None = None,
    words_to_avoid: list[str] | None = None,
    on_step: StepCallback | None = None,
    on_copy: CopyDelta | None = None,
) -> Campaign:
    """Run every step; AgentError names the step that failed. `on_copy(channel, piece)`
    follows each channel's copy as the copywriter writes it (the calls then stream).

    With `brand_kit`, the brand profile comes from the kit (the model fills only what it
    lacks). `words_to_avoid` are the brief's forbidden words, on top of those its text
    quotes as forbidden ("never use 'miracle'"), the kit's and the built-in
    rules: all are checked on every piece of copy."""
    started = time.perf_counter()
    steps: list[StepRecord] = []
    note = on_step or (lambda step, status: None)
    held_to = rules.rules_for(brief_text=brief_text, brief_words=words_to_avoid or (),
                              brand_kit=brand_kit)  # fmt: skip

    note("brief", "running")
    brief, record = await brief_agent.analyze(
        llm, brief_agent.BriefInput(brief=brief_text, product_facts=product_facts or {})
    )
    steps.append(record)
    note("brand", "running")
    brand, record = await brand_agent.profile(
        llm, brand_agent.BrandInput(brief=brief, brand_guide=brand_guide, brand_kit=brand_kit)
    )
    steps.append(record)
    note("strategist", "running")
    strategy, record = await strategist_agent.plan(
        llm, strategist_agent.StrategyInput(brief=brief, brand=brand)
    )
    steps.append(record)
    note("copywriter", "running")
    copies, records = await copywriter_agent.channel_copy(
        llm,
        copywriter_agent.CopyInput(
            brief=brief, brand=brand, strategy=strategy, avoid=_told(held_to)
        ),
        on_copy,
    )
    steps.extend(records)
    note("concepts", "running")
    concepts, record = await vision_generator_agent.concepts(
        llm,
        vision_generator_agent.ConceptInput(
            product=brief.product, strategy=strategy, copies=copies, brand=brand
        ),
    )
    steps.append(record)

    # the images need only the concepts, the review only the text: they run side by side
    note("images + review", "running")
    rendering = asyncio.create_task(vision_generator_agent.render(media, concepts, brand.palette))
    try:
        review, record = await reviewer_agent.review(
            llm,
            reviewer_agent.ReviewInput(brief=brief, brand=brand, copies=copies, concepts=concepts),
            rules=held_to,
        )
    except BaseException:
        rendering.cancel()
        await asyncio.gather(rendering, return_exceptions=True)
        raise
    steps.append(record)

    first_review: Review | None = None
    revised: list[str] = []
    if not review.approved and review.revision_requests:
        note("revision", "running")
        first_review = review
        copies, revised, records = await _revise(llm, copies, review, brand, _told(held_to))
        steps.extend(records)
        review, record = await reviewer_agent.review(
            llm,
            reviewer_agent.ReviewInput(brief=brief, brand=brand, copies=copies, concepts=concepts),
            record_step="review:2",
            rules=held_to,
        )
        steps.append(record)

    images, records = await rendering
    steps.extend(records)
    note("done", "done")
    return Campaign(
        brief_text=brief_text,
        brief=brief,
        brand=brand,
        strategy=strategy,
        copies=copies,
        concepts=concepts,
        images=images,
        review=review,
        first_review=first_review,
        revised_channels=revised,
        brand_kit=brand_kit.name if brand_kit else None,
        rules=held_to,
        violations=review.violations,
        status="approved" if review.approved and not review.violations else "needs_changes",
        steps=steps,
        pipeline_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _told(held_to: list[Rule]) -> list[str]:
    """The forbidden terms the copywriter is told of up front: the brief's and the kit's (the
    built-in claims are checked, and come back as revision requests when they are used)."""
    return [r.term for r in held_to if r.source in ("brief", "brand_kit")]


async def _revise(
    llm: LLMGatewayClient,
    copies: list[ChannelCopy],
    review: Review,
    brand: BrandProfile,
    avoid: list[str],
) -> tuple[list[ChannelCopy], list[str], list[StepRecord]]:
    """One revision of every channel the review asked about, in parallel."""
    requests: dict[str, list[str]] = {}
    for item in review.revision_requests:
        requests.setdefault(item.channel, []).append(item.request)
    targets = [c for c in copies if c.channel in requests]
    results = await asyncio.gather(
        *(
            copywriter_agent.revise(
                llm,
                copywriter_agent.RevisionInput(
                    copy=c, requests=requests[c.channel], brand=brand, avoid=avoid
                ),
            )
            for c in targets
        )
    )
    revised = {new.channel: new for new, _ in results}
    return (
        [revised.get(c.channel, c) for c in copies],
        list(revised),
        [record for _, record in results],
    )
