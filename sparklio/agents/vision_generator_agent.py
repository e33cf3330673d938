"""vision_generator / concepts (through the LLM Gateway), then vision_generator / image for
each concept (through the Media Gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from sparklio.agents.base import StepRecord, ask
from sparklio.agents.brand_agent import BrandProfile
from sparklio.agents.copywriter_agent import ChannelCopy
from sparklio.agents.strategist_agent import Strategy
from sparklio.exceptions import AgentError, GatewayError
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.wire.media import MediaJob

AspectRatio = Literal["1:1", "4:5", "16:9", "9:16"]
#: Sizes in 8-pixel blocks that image models render well, by aspect ratio.
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "4:5": (832, 1040), "16:9": (1344, 768), "9:16": (768, 1344),
}  # fmt: skip


class ConceptInput(BaseModel):
    product: str
    strategy: Strategy
    copies: list[ChannelCopy]
    brand: BrandProfile


class VisualConcept(BaseModel):
    title: str = Field(max_length=80)
    prompt: str = Field(max_length=400)
    negative_prompt: str = Field(default="", max_length=200)
    aspect_ratio: AspectRatio
    style: str = Field(max_length=100)


class Concepts(BaseModel):
    concepts: list[VisualConcept] = Field(min_length=1, max_length=3)


class ImageProgress(BaseModel):
    """Where one concept's image stands while it renders."""

    index: int  # the concept's index, as CampaignImage.concept
    status: str  # queued | running | succeeded | failed | cancelled
    progress: float  # 0 to 1
    message: str = ""


#: Called each time an image's job changes status or progress (a sync callback).
OnImage = Callable[[ImageProgress], None]


class CampaignImage(BaseModel):
    """One rendered concept."""

    concept: int
    asset_id: str
    url: str
    width: int
    height: int
    provider: str
    model: str


async def concepts(
    llm: LLMGatewayClient, data: ConceptInput
) -> tuple[list[VisualConcept], StepRecord]:
    """Visual concepts for the campaign, in the brand's palette."""
    payload = {
        "product": data.product,
        "big_idea": data.strategy.big_idea,
        "headlines": [c.headline for c in data.copies],
        "palette": data.brand.palette,
        "personality": data.brand.personality,
    }
    result, record = await ask(llm, "concepts", "vision_generator", "concepts", payload, Concepts)
    return result.concepts, record


async def render(
    media: MediaGatewayClient,
    items: list[VisualConcept],
    palette: list[str],
    on_image: OnImage | None = None,
) -> tuple[list[CampaignImage], list[StepRecord]]:
    """One image per concept, rendered in parallel by the Media Gateway; `on_image` follows
    each image's job as it goes."""

    async def one(index: int, concept: VisualConcept) -> tuple[CampaignImage, StepRecord]:
        width, height = SIZES[concept.aspect_ratio]
        step = f"image:{index + 1}"

        def report(job: MediaJob) -> None:
            if on_image is not None:
                on_image(ImageProgress(index=index, status=job.status, progress=job.progress,
                                       message=job.message))  # fmt: skip

        try:
            job = await media.generate_image(
                role="vision_generator", task="image", prompt=f"{concept.prompt}, {concept.style}",
                negative_prompt=concept.negative_prompt, width=width, height=height,
                options={"palette": palette}, progress=report,
            )  # fmt: skip
        except GatewayError as exc:
            raise AgentError(step, exc) from exc
        asset = job.assets[0]
        took = ((job.finished_at or 0) - (job.started_at or job.created_at)) * 1000
        image = CampaignImage(concept=index, asset_id=asset.id, url=asset.url, width=asset.width,
                              height=asset.height, provider=job.provider or "",
                              model=job.model or "")  # fmt: skip
        record = StepRecord(step=step, role="vision_generator", task="image",
                            provider=image.provider, model=image.model,
                            latency_ms=round(took, 1), attempts=job.attempts,
                            fallback=len(job.attempts) > 1)  # fmt: skip
        return image, record

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(items)))
    return [r[0] for r in results], [r[1] for r in results]
