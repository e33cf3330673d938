"""The agents and the pipeline, in mock mode and with a scripted provider."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from sparklio.agents import brand_agent, brief_agent, strategist_agent, vision_generator_agent
from sparklio.agents.copywriter_agent import LIMITS, ChannelCopy, copy_schema
from sparklio.agents.pipeline import Campaign, load_brief, run_campaign
from sparklio.agents.report import LABELS, NAMES, write_report
from sparklio.agents.reviewer_agent import ModelReview, check_copy
from sparklio.agents.rules import find
from sparklio.exceptions import AgentError, ProviderError
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.services.llm.providers.base import LLMProviderResponse, OutputMode
from sparklio.services.llm.providers.mock import MockProvider
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.wire.brand import BrandKit
from tests.conftest import app_with, make_settings, token_for

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


class StubbornCopywriter(MockProvider):
    """The mock, except that every copy the copywriter writes or revises uses the word the
    brief forbids, and the reviewer always approves: only the rules stand in the way."""

    word: ClassVar[dict[str, str]] = {}
    calls: ClassVar[list[tuple[str, str, str]]] = []

    @property
    def vendor(self) -> str:
        return "stubborn"

    async def generate(
        self, prompt: str, role: str, task: str, mode: OutputMode, options: dict[str, Any]
    ) -> LLMProviderResponse:
        StubbornCopywriter.calls.append((role, task, prompt))
        response = await super().generate(prompt, role, task, mode, options)
        out = response.output
        if role == "copywriter":
            out["headline"] = StubbornCopywriter.word["headline"]
            out["body"] = StubbornCopywriter.word["body"] + " " + out["body"][:200]
        elif role == "reviewer":
            score = {"criterion": "clarity", "score": 9, "comment": "great"}
            out.update(approved=True, issues=[], revision_requests=[], scores=[score])
        elif role == "brief":
            out["channels"] = ["instagram", "email"]
        elif role == "brand":
            out["words_to_avoid"] = []
        return response


@pytest.fixture
async def stubborn(tmp_path: Path) -> AsyncIterator[tuple[LLMGatewayClient, MediaGatewayClient]]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: stubborn, model: m1}]\n"
        "media:\n  modes:\n    mock:\n      default: [{provider: mock, model: img}]\n"
    )
    StubbornCopywriter.calls = []
    app = app_with(make_settings(llm_routing_file=routes, sparklio_home=tmp_path / "home"),
                   stubborn=StubbornCopywriter)  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    token = await token_for(app)
    async with (
        LLMGatewayClient(base_url="http://gw", api_key=token, transport=transport) as llm,
        MediaGatewayClient(base_url="http://gw", api_key=token, transport=transport) as media,
    ):
        yield llm, media
    await close_app(app)


FORBIDDING = {
    "en": (
        ENGLISH.brief + "\nNever use the word 'miracle' in any copy.",
        "miracle",
        {"headline": "Miracles on every trail", "body": "A miracle for your morning run."},
    ),
    "ko": (
        KOREAN.brief + "\n'기적'이라는 단어는 절대 쓰지 마세요.",
        "기적",
        {"headline": "오후의 작은 기적", "body": "매일 기적을 만나는 한 잔."},
    ),
}


@pytest.mark.parametrize("language", ["en", "ko"])
async def test_a_word_the_brief_forbids_keeps_the_campaign_from_approved_whatever_the_model_does(
    stubborn: tuple[LLMGatewayClient, MediaGatewayClient], tmp_path: Path, language: str
) -> None:
    llm, media = stubborn
    brief, word, written = FORBIDDING[language]
    StubbornCopywriter.word = written
    campaign = await run_campaign(llm, media, brief)

    # the copywriter was asked to revise each channel, told which word to remove
    revisions = [p for role, task, p in StubbornCopywriter.calls if (role, task) ==
                 ("copywriter", "revise")]  # fmt: skip
    assert len(revisions) == 2 and all(f"Remove '{word}'" in p for p in revisions)
    assert sorted(campaign.revised_channels) == ["email", "instagram"]
    # ...kept using it, so the campaign is not approved, though the reviewer model approved
    assert all(find(word, c.headline + " " + c.body) for c in campaign.copies)
    assert campaign.review.approved is False and campaign.status == "needs_changes"
    offending = {(v.channel, v.field, v.term, v.source) for v in campaign.violations}
    assert offending == {(channel, field, word, "brief") for channel in ("instagram", "email")
                         for field in ("headline", "body")}  # fmt: skip
    assert all(find(word, v.text) for v in campaign.violations)
    # the report marks each violation: channel, rule, the offending text
    paths = write_report(campaign, tmp_path / "report", {})
    markdown = paths.markdown.read_text(encoding="utf-8")
    html = paths.html.read_text(encoding="utf-8")
    t, names = LABELS[language], NAMES[language]
    section = markdown.split(f"## {t['violations']}")[1].split("## ")[0]
    for v in campaign.violations:
        rule = f"{names['forbidden_word']}: {v.term}"
        row = f"| {names[v.channel]} | {rule} | {t[v.field]} | {v.text} |"
        assert row in section
        assert f"<mark>{v.text}</mark>" in html
    assert f"**{t['status']}: {t['needs_changes']}**" in markdown


async def test_a_campaign_whose_copy_keeps_to_the_rules_is_approved(
    stubborn: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = stubborn
    StubbornCopywriter.word = {"headline": "Light on every trail", "body": "Run the city."}
    campaign = await run_campaign(llm, media, FORBIDDING["en"][0])
    assert campaign.violations == [] and campaign.status == "approved"
    assert not [c for c in StubbornCopywriter.calls if c[1] == "revise"]


async def test_the_brand_profile_starts_from_a_brand_kit(
    clients: tuple[LLMGatewayClient, MediaGatewayClient],
) -> None:
    llm, media = clients
    kit = BrandKit(
        name="Dawon Tea",
        voice="Calm, warm and honest.",
        words_to_use=["느린 한 잔"],
        words_to_avoid=["최고", "기적"],
        claims_to_avoid=["피로 회복"],
        palette=["#2E7D32"],
        typography="Serif headlines",
    )
    campaign = await run_campaign(llm, media, KOREAN.brief, brand_kit=kit)
    brand = campaign.brand
    assert (brand.voice, brand.words_to_use, brand.words_to_avoid, brand.claims_to_avoid) == (
        kit.voice, kit.words_to_use, kit.words_to_avoid, kit.claims_to_avoid)  # fmt: skip
    assert brand.palette[0] == "#2E7D32" and len(brand.palette) == 2  # the model filled one
    assert brand.typography == "Serif headlines"
    assert brand.personality and brand.values  # what the kit has not: the model's
    assert campaign.brand_kit == "Dawon Tea"
    assert {(r.term, r.source) for r in campaign.rules} >= {
        ("최고", "brand_kit"), ("기적", "brand_kit"), ("피로 회복", "brand_kit")}  # fmt: skip
