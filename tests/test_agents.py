"""The agents and the pipeline, in mock mode and with a scripted provider."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from sparklio.agents import brand_agent, brief_agent, strategist_agent, vision_generator_agent
from sparklio.agents.copywriter_agent import LIMITS, ChannelCopy, copy_schema
from sparklio.agents.pipeline import Campaign, load_brief, run_campaign
from sparklio.agents.reviewer_agent import ModelReview, check_copy
from sparklio.exceptions import AgentError, ProviderError
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.services.llm.providers.base import LLMProviderResponse, OutputMode
from sparklio.services.llm.providers.mock import MockProvider
from sparklio.services.llm.providers.registry import ProviderRegistry
from tests.conftest import make_settings, token_for

ROOT = Path(__file__).resolve().parent.parent
KOREAN = load_brief(str(ROOT / "examples" / "brief_ko.yaml"))
ENGLISH = load_brief(str(ROOT / "examples" / "brief_en.yaml"))


@pytest.fixture
async def clients(app: FastAPI) -> AsyncIterator[tuple[LLMGatewayClient, MediaGatewayClient]]:
    transport = httpx.ASGITransport(app=app)
    token = await token_for(app)
    async with (
        LLMGatewayClient(base_url="http://gw", api_key=token, transport=transport) as llm,
        MediaGatewayClient(base_url="http://gw", api_key=token, transport=transport) as media,
    ):
        yield llm, media


def hangul(text: str) -> bool:
    return bool(re.search(r"[가-힣]", text))


@pytest.mark.parametrize(
    "model",
    [
        brief_agent.Brief,
        brand_agent.BrandProfile,
        strategist_agent.Strategy,
        vision_generator_agent.Concepts,
        ModelReview,
    ],
)
async def test_each_agent_model_round_trips_through_the_mock(
    clients: tuple[LLMGatewayClient, MediaGatewayClient], model: type[BaseModel]
) -> None:
    llm, _ = clients
    answer = await llm.generate(
        role="brief", task="analyze", payload={"brief": KOREAN.brief}, schema=model
    )
    assert isinstance(answer, model)
    assert model.model_validate(answer.model_dump()) == answer


@pytest.mark.parametrize("channel", sorted(LIMITS))
async def test_copy_schema_holds_the_mock_to_each_channels_limits(
    clients: tuple[LLMGatewayClient, MediaGatewayClient], channel: str
) -> None:
    llm, _ = clients
    result = await llm.generate_result(
        role="copywriter",
        task="channel_copy",
        payload={"channel": channel, "product": "Dawon tea"},
        schema=ChannelCopy,
        json_schema=copy_schema(channel),
    )
    limits = LIMITS[channel]
    copy = result.data
    assert copy.channel == channel
    assert len(copy.headline) <= limits.headline and len(copy.body) <= limits.body
    assert len(copy.hashtags) <= limits.hashtags


async def test_korean_brief_gives_a_korean_campaign_with_images(
    clients: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = clients
    campaign = await run_campaign(
        llm, media, KOREAN.brief, product_facts=KOREAN.product_facts, brand_guide=KOREAN.brand_guide
    )
    assert campaign.brief.language == "ko"
    assert campaign.copies and all(hangul(c.headline + c.body) for c in campaign.copies)
    assert "다원 첫물 녹차" in " ".join(c.body for c in campaign.copies)
    assert len(campaign.images) == len(campaign.concepts) >= 1
    assert all(i.provider == "mock" for i in campaign.images)
    assert {s.role for s in campaign.steps} == {
        "brief",
        "brand",
        "strategist",
        "copywriter",
        "vision_generator",
        "reviewer",
    }
    assert all(s.provider == "mock" and s.latency_ms >= 0 for s in campaign.steps)
    assert campaign.pipeline_ms < 5000


async def test_english_brief_gives_english_copy(
    clients: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = clients
    campaign = await run_campaign(llm, media, ENGLISH.brief, product_facts=ENGLISH.product_facts)
    assert campaign.brief.language == "en"
    assert not any(hangul(c.body) for c in campaign.copies)
    assert "Aurora Trail" in " ".join(c.body + c.headline for c in campaign.copies)


async def test_the_copywriter_can_show_copy_as_it_is_written(
    clients: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = clients
    pieces: dict[str, list[str]] = {}
    campaign = await run_campaign(
        llm,
        media,
        ENGLISH.brief,
        on_copy=lambda channel, piece: pieces.setdefault(channel, []).append(piece),
    )
    first = {c.channel: c for c in campaign.copies}
    assert set(pieces) == {str(c) for c in campaign.brief.channels}
    for channel, written in pieces.items():
        streamed = ChannelCopy.model_validate_json("".join(written))
        # what the studio showed as it came is the copy the campaign started from
        assert streamed.headline and streamed.channel == channel
        assert channel in first


def test_rule_checks_find_what_small_models_miss() -> None:
    brand = brand_agent.BrandProfile(
        personality=["calm", "honest"],
        voice="Warm.",
        values=["care"],
        words_to_avoid=["miracle"],
        palette=["#2E7D32", "#F5F5DC"],
        typography="serif",
    )
    long_headline = ChannelCopy(
        channel="naver_search", headline="x" * 31, body="ok", cta="Buy", hashtags=[]
    )
    avoided = ChannelCopy(
        channel="instagram", headline="A Miracle cup", body="calm", cta="", hashtags=[]
    )
    findings = [f"{f.channel}: {f.request}" for f in check_copy([long_headline, avoided], brand)]
    assert (
        "naver_search: The headline has 31 characters; naver_search shows at most 30. "
        "Shorten it." in findings
    )
    assert "instagram: Add a call to action." in findings
    assert "instagram: Remove 'miracle': the brand avoids that word." in findings


class ScriptedReviewer(MockProvider):
    """The mock, except the reviewer: it asks for one revision of the Instagram copy first,
    then approves; and the strategist can be told to fail."""

    reviews = 0
    fail_role: str | None = None

    @property
    def vendor(self) -> str:
        return "scripted"

    async def generate(
        self, prompt: str, role: str, task: str, mode: OutputMode, options: dict[str, Any]
    ) -> LLMProviderResponse:
        if role == ScriptedReviewer.fail_role:
            raise ProviderError(
                "scripted/m1 answered 500: the runner crashed",
                provider="scripted",
                model="m1",
                outcome="http_500",
            )
        response = await super().generate(prompt, role, task, mode, options)
        if role == "reviewer":
            ScriptedReviewer.reviews += 1
            approve = ScriptedReviewer.reviews > 1
            response.output = {
                "scores": [{"criterion": "clarity", "score": 8, "comment": "clear"}],
                "issues": [] if approve else ["The Instagram copy buries the offer."],
                "approved": approve,
                "revision_requests": []
                if approve
                else [{"channel": "instagram", "request": "Lead with the 20% launch offer."}],
            }
        elif role == "brand":
            response.output["words_to_avoid"] = []  # no rule findings: the script decides
        elif role == "brief":
            response.output["channels"] = ["instagram", "email"]
        return response


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[LLMGatewayClient, MediaGatewayClient]]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: scripted, model: m1}]\n"
        "media:\n  modes:\n    mock:\n      default: [{provider: mock, model: img}]\n"
    )
    ScriptedReviewer.reviews, ScriptedReviewer.fail_role = 0, None
    registry = ProviderRegistry()
    registry.register("scripted", ScriptedReviewer)
    app = create_app(make_settings(llm_routing_file=routes), registry=registry)
    transport = httpx.ASGITransport(app=app)
    token = await token_for(app)
    async with (
        LLMGatewayClient(base_url="http://gw", api_key=token, transport=transport) as llm,
        MediaGatewayClient(base_url="http://gw", api_key=token, transport=transport) as media,
    ):
        yield llm, media
    await close_app(app)


async def test_a_revision_round_rewrites_the_channel_then_reviews_again(
    scripted: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = scripted
    campaign: Campaign = await run_campaign(llm, media, ENGLISH.brief)
    assert ScriptedReviewer.reviews == 2
    assert campaign.first_review is not None and not campaign.first_review.approved
    assert campaign.revised_channels == ["instagram"]
    assert [c.channel for c in campaign.copies] == ["instagram", "email"]
    steps = [s.step for s in campaign.steps]
    assert steps.count("review") == 1 and steps.count("review:2") == 1
    assert [s for s in steps if s.startswith("revise:")] == [
        f"revise:{c}" for c in campaign.revised_channels
    ]
    assert campaign.review.approved and campaign.status == "approved"


async def test_a_failing_step_is_named_with_the_gateways_error(
    scripted: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = scripted
    ScriptedReviewer.fail_role = "strategist"
    with pytest.raises(AgentError) as info:
        await run_campaign(llm, media, ENGLISH.brief)
    assert info.value.step == "strategist"
    assert "the runner crashed" in str(info.value)
    assert info.value.error.status == 502
