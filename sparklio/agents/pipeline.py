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
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field

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
from sparklio.agents.brief_file import BriefFile as BriefFile  # where callers import it from
from sparklio.agents.brief_file import load_brief as load_brief
from sparklio.agents.copywriter_agent import ChannelCopy, CopyDelta, VariantCounts
from sparklio.agents.reviewer_agent import Review
from sparklio.agents.rules import Rule, Violation
from sparklio.agents.strategist_agent import Strategy
from sparklio.agents.vision_generator_agent import CampaignImage, OnImage, VisualConcept
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.wire.brand import BrandKit

#: Called as each step starts ("running") and ends ("done"), for a progress display.
StepCallback = Callable[[str, str], None]

T = TypeVar("T")


class StepRunner(Protocol):
    """Runs one step: its name (e.g. "brief", "copywriter:instagram") and the call that makes
    it. The default just awaits the call; a durable runner (sparklio.services.campaigns)
    records each output so that a finished step is never run, nor paid for, twice."""

    async def __call__(self, name: str, call: Callable[[], Awaitable[T]]) -> T: ...


async def run_directly(name: str, call: Callable[[], Awaitable[T]]) -> T:
    """The default StepRunner: run the step."""
    return await call()


class Change(BaseModel):
    """One change a reviewer asks for at a gate: a channel's copy, or the strategy."""

    channel: str | None = None
    step: Literal["strategy", "copy"] | None = None
    note: str = Field(min_length=1, max_length=2000)


class Decision(BaseModel):
    """A reviewer's answer at a gate: approve, or the changes to make (then the gate again)."""

    approve: bool = False
    changes: list[Change] = Field(default_factory=list)


#: Called at each pause point ("strategy", "copy") with what the reviewer decides on; its
#: Decision says whether to go on or what to redo first. None: no pauses.
Gate = Callable[[str, dict[str, Any]], Awaitable[Decision]]


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
    on_image: OnImage | None = None,
    runner: StepRunner | None = None,
    channels: list[str] | None = None,
    gate: Gate | None = None,
    variants: Mapping[str, Mapping[str, int | None]] | None = None,
) -> Campaign:
    """Run every step; AgentError names the step that failed. `on_copy(channel, piece)`
    follows each channel's copy as the copywriter writes it (the calls then stream), and
    `on_image(progress)` each image's job as it renders;
    `runner` runs each step (see StepRunner); `channels`, when given, replace the channels
    the brief agent chose; `gate`, when given, is asked after the strategy and after the
    copy, and the pipeline redoes only what its changes name before asking again.

    With `brand_kit`, the brand profile comes from the kit (the model fills only what it
    lacks). `words_to_avoid` are the brief's forbidden words, on top of those its text
    quotes as forbidden ("never use 'miracle'"), the kit's and the built-in
    rules: all are checked on every piece of copy.

    `variants` ({channel: {"headlines": N, "descriptions": M}}) asks those channels for
    exactly that many headline and description variants, each held to the same rules as
    the copy (InvalidRequestError, before any call, for counts a channel does not allow); a
    channel the campaign does not run is left out."""
    started = time.perf_counter()
    asks = {channel: copywriter_agent.variant_counts(channel, ask.get("headlines"),
                                                     ask.get("descriptions"))
            for channel, ask in (variants or {}).items()}  # fmt: skip
    steps: list[StepRecord] = []
    note = on_step or (lambda step, status: None)
    run: StepRunner = runner or run_directly
    held_to = rules.rules_for(brief_text=brief_text, brief_words=words_to_avoid or (),
                              brand_kit=brand_kit)  # fmt: skip

    note("brief", "running")
    brief_input = brief_agent.BriefInput(brief=brief_text, product_facts=product_facts or {})
    brief, record = await run("brief", partial(brief_agent.analyze, llm, brief_input))
    steps.append(record)
    if channels:
        brief = Brief.model_validate({**brief.model_dump(), "channels": channels})
    note("brand", "running")
    brand_input = brand_agent.BrandInput(brief=brief, brand_guide=brand_guide, brand_kit=brand_kit)
    brand, record = await run("brand", partial(brand_agent.profile, llm, brand_input))
    steps.append(record)
    note("strategist", "running")
    strategy_input = strategist_agent.StrategyInput(brief=brief, brand=brand)
    strategy, record = await run("strategist", partial(strategist_agent.plan, llm, strategy_input))
    steps.append(record)
    round_ = 0
    while gate is not None:
        decision = await gate("strategy", {"strategy": strategy.model_dump(mode="json")})
        notes = [c.note for c in decision.changes if c.step == "strategy"]
        if decision.approve or not notes:
            break
        round_ += 1
        strategy_input = strategist_agent.StrategyInput(brief=brief, brand=brand, notes=notes)
        strategy, record = await run(
            f"strategist:{round_}", partial(strategist_agent.plan, llm, strategy_input)
        )
        steps.append(record)
    note("copywriter", "running")
    # one step per channel, written in parallel
    copy_input = copywriter_agent.CopyInput(
        brief=brief, brand=brand, strategy=strategy, avoid=_told(held_to), variants=asks
    )
    written = await asyncio.gather(
        *(
            run(
                f"copywriter:{channel}",
                partial(copywriter_agent.copy_for, llm, copy_input, channel, on_copy),
            )
            for channel in dict.fromkeys(brief.channels)
        )
    )
    copies = [copy for copy, _ in written]
    steps.extend(record for _, record in written)
    round_ = 0
    while gate is not None:
        shown = {"copies": [c.model_dump(mode="json") for c in copies]}
        decision = await gate("copy", shown)
        requests: dict[str, list[str]] = {}
        for change in decision.changes:
            if change.channel is not None:
                requests.setdefault(change.channel, []).append(change.note)
        if decision.approve or not requests:
            break
        round_ += 1
        # a reviewer's changes at the copy gate: steps `revise:<channel>:<round>`
        copies, _, records = await _revise(
            llm, copies, requests, brand, _told(held_to), run, asks, f":{round_}"
        )
        steps.extend(records)
    note("concepts", "running")
    concept_input = vision_generator_agent.ConceptInput(
        product=brief.product, strategy=strategy, copies=copies, brand=brand
    )
    concepts, record = await run(
        "concepts", partial(vision_generator_agent.concepts, llm, concept_input)
    )
    steps.append(record)

    # the images need only the concepts, the review only the text: they run side by side
    note("images + review", "running")
    rendering = asyncio.ensure_future(
        run(
            "images",
            partial(vision_generator_agent.render, media, concepts, brand.palette, on_image),
        )
    )
    review_input = reviewer_agent.ReviewInput(
        brief=brief, brand=brand, copies=copies, concepts=concepts
    )
    try:
        review, record = await run(
            "review",
            partial(reviewer_agent.review, llm, review_input, rules=held_to, variants=asks),
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
        requests = {}
        for item in review.revision_requests:
            requests.setdefault(item.channel, []).append(item.request)
        copies, revised, records = await _revise(
            llm, copies, requests, brand, _told(held_to), run, asks
        )
        steps.extend(records)
        review_input = reviewer_agent.ReviewInput(
            brief=brief, brand=brand, copies=copies, concepts=concepts
        )
        review, record = await run(
            "review:2",
            partial(
                reviewer_agent.review,
                llm,
                review_input,
                record_step="review:2",
                rules=held_to,
                variants=asks,
            ),
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
    requests: dict[str, list[str]],
    brand: BrandProfile,
    avoid: list[str],
    run: StepRunner,
    asks: Mapping[str, VariantCounts],
    suffix: str = "",
) -> tuple[list[ChannelCopy], list[str], list[StepRecord]]:
    """One revision of every channel `requests` names, in parallel, as steps
    `revise:<channel><suffix>`; the copies, the channels revised and their records."""
    targets = [c for c in copies if c.channel in requests]
    results = await asyncio.gather(
        *(
            run(
                f"revise:{c.channel}{suffix}",
                partial(
                    copywriter_agent.revise,
                    llm,
                    copywriter_agent.RevisionInput(
                        copy=c,
                        requests=requests[c.channel],
                        brand=brand,
                        avoid=avoid,
                        variants=asks.get(c.channel),
                    ),
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
