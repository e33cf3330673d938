"""Variants over HTTP: a channel asks for N headlines and M descriptions and gets exactly
that many, each within its channel's limits; a variant that breaks a rule goes back to the
copywriter and keeps the campaign from `approved`, and the report marks it; a bad ask is a
422 that names the field and the range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparklio.agents.copywriter_agent import (
    LIMITS,
    VARIANT_RANGES,
    ChannelCopy,
    VariantCounts,
    copy_schema,
)
from sparklio.agents.report import LABELS, md_inline
from sparklio.agents.rules import check, find, pattern
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from tests.conftest import client_for, make_settings
from tests.fakes.base import Answer, Recorded, Reply
from tests.fakes.campaign import MockOllama
from tests.test_campaigns import events_of, live_app, paused, start

SEARCH_AD = {"naver_search": {"headlines": 5, "descriptions": 3}}


def search_copy(result: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = next(c for c in result["copies"] if c["channel"] == "naver_search")
    return copy


def assert_within_limits(copy: dict[str, Any], headlines: int, descriptions: int) -> None:
    variants = copy["variants"]
    assert len(variants["headlines"]) == headlines
    assert len(variants["descriptions"]) == descriptions
    assert all(0 < len(h) <= 30 for h in variants["headlines"]), variants["headlines"]
    assert all(0 < len(d) <= 90 for d in variants["descriptions"]), variants["descriptions"]


async def test_a_search_ad_gets_exactly_the_headlines_and_descriptions_it_asks_for(
    http: httpx.AsyncClient,
) -> None:
    campaign_id = await start(http, channels=["naver_search", "instagram"], variants=SEARCH_AD)
    assert (await events_of(http, campaign_id))[-1]["event"] == "done"
    campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert campaign["status"] == "succeeded"
    assert campaign["options"]["variants"] == SEARCH_AD  # kept for a resumed campaign
    result = campaign["result"]
    copy = search_copy(result)
    assert_within_limits(copy, 5, 3)
    # a channel that asked for none has none, and its copy looks as it always did
    instagram = next(c for c in result["copies"] if c["channel"] == "instagram")
    assert "variants" not in instagram

    # the report lists them, numbered, under the search ad's copy
    t = LABELS[result["brief"]["language"]]
    md = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.md")).text
    listed = md.split(f"**{t['headline_variants']}**")[1].split("\n## ")[0]
    headlines, descriptions = listed.split(f"**{t['description_variants']}**")
    numbered = [line for line in headlines.splitlines() if line[:1].isdigit()]
    assert numbered == [
        f"{n}. {md_inline(h)}" for n, h in enumerate(copy["variants"]["headlines"], 1)
    ]
    numbered = [line for line in descriptions.splitlines() if line[:1].isdigit()]
    assert (
        len(numbered) == 3 and numbered[2] == f"3. {md_inline(copy['variants']['descriptions'][2])}"
    )
    html = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.html")).text
    assert t["headline_variants"] in html and t["description_variants"] in html


async def test_variants_are_asked_of_the_model_only_when_a_channel_wants_them() -> None:
    """Without variants, the schema and the copy are what they were before variants: a
    cached answer still answers the same request."""
    schema = copy_schema("naver_search")
    assert "variants" not in schema["properties"] and "variants" not in schema["required"]
    copy = ChannelCopy(channel="naver_search", headline="H", body="B", cta="Go")
    assert copy.model_dump_json() == (
        '{"channel":"naver_search","headline":"H","body":"B","cta":"Go","hashtags":[]}'
    )
    asked = copy_schema("naver_search", VariantCounts(headlines=5, descriptions=3))
    headlines = asked["properties"]["variants"]["properties"]["headlines"]
    assert (headlines["minItems"], headlines["maxItems"]) == (5, 5)
    assert headlines["items"]["maxLength"] == LIMITS["naver_search"].headline == 30
    descriptions = asked["properties"]["variants"]["properties"]["descriptions"]
    assert (descriptions["minItems"], descriptions["items"]["maxLength"]) == (3, 90)


@pytest.mark.parametrize("channel", sorted(VARIANT_RANGES))
async def test_the_mock_writes_the_most_variants_each_channel_takes_within_its_limits(
    llm: LLMGatewayClient, channel: str
) -> None:
    most = VARIANT_RANGES[channel]
    asked = VariantCounts(headlines=most.headlines[1], descriptions=most.descriptions[1])
    result = await llm.generate_result(
        role="copywriter", task="channel_copy", schema=ChannelCopy,
        payload={"channel": channel, "product": "Dawon tea", "variants": asked.model_dump()},
        json_schema=copy_schema(channel, asked),
    )  # fmt: skip
    variants, limits = result.data.variants, LIMITS[channel]
    assert variants is not None
    assert len(variants.headlines) == asked.headlines
    assert len(variants.descriptions) == asked.descriptions
    assert all(0 < len(h) <= limits.headline for h in variants.headlines)
    assert all(0 < len(d) <= limits.body for d in variants.descriptions)
    assert check([result.data], [], {channel: asked}) == []


@pytest.mark.parametrize(
    ("variants", "channels", "field", "says"),
    [
        ({"naver_search": {"headlines": 2}}, None, "variants.naver_search.headlines", "3 to 15"),
        ({"naver_search": {"headlines": 16}}, None, "variants.naver_search.headlines", "3 to 15"),
        ({"naver_search": {"descriptions": 5}}, None, "variants.naver_search.descriptions",
         "2 to 4"),
        ({"instagram": {"headlines": 0}}, None, "variants.instagram.headlines", "1 to 5"),
        ({"naver_search": {"headlines": 5}}, ["instagram"], "variants.naver_search",
         "instagram"),
        ({"fax": {"headlines": 5}}, None, "variants", "naver_search"),
        ({"naver_search": {"headline": 5}}, None, "headline", "Extra inputs"),
        ({"naver_search": {"headlines": "many"}}, None, "headlines", "integer"),
        ({"naver_search": {"headlines": True}}, None, "headlines", "integer"),
    ],
)  # fmt: skip
async def test_a_bad_variant_ask_is_a_422_that_names_the_field_and_the_range(
    http: httpx.AsyncClient,
    variants: dict[str, Any],
    channels: list[str] | None,
    field: str,
    says: str,
) -> None:
    body: dict[str, Any] = {"brief": "Oat latte for office workers.", "variants": variants}
    if channels:
        body["channels"] = channels
    response = await http.post("/api/v1/campaigns", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text and says in response.text, response.text
    assert (await http.get("/api/v1/campaigns")).json()["campaigns"] == []  # none started


async def test_a_resumed_campaign_and_a_reviewers_change_keep_the_variant_counts(
    tmp_path: Path,
) -> None:
    """Paused before the copy, the server stops; the campaign resumed by another app still
    asks for the variants, and a change to the search ad's copy keeps their number."""
    settings = make_settings(sparklio_home=tmp_path / "home")
    app = create_app(settings)
    try:
        async with await client_for(app) as http:
            campaign_id = await start(http, channels=["naver_search"], variants=SEARCH_AD,
                                      options={"review": "manual"})  # fmt: skip
            assert (await paused(app, http, campaign_id))[-1].data["gate"] == "strategy"
    finally:
        await close_app(app)

    app = create_app(settings)
    try:
        await app.state.services.campaigns.recover()
        async with await client_for(app) as http:
            base = f"/api/v1/campaigns/{campaign_id}"
            assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
            events = await paused(app, http, campaign_id)
            shown = events[-1].data["copies"][0]
            assert events[-1].data["gate"] == "copy"
            assert_within_limits(shown, 5, 3)
            change = {"channel": "naver_search", "note": "Name the price in one headline."}
            answer = await http.post(f"{base}/review", json={"changes": [change]})
            assert answer.status_code == 200, answer.text
            events = await paused(app, http, campaign_id)
            assert_within_limits(events[-1].data["copies"][0], 5, 3)  # the revision's
            assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
            assert (await events_of(http, campaign_id))[-1]["event"] == "done"
            result = (await http.get(base)).json()["result"]
            assert_within_limits(search_copy(result), 5, 3)
    finally:
        await close_app(app)


class StubbornOllama(MockOllama):
    """The mock's answers, but the copywriter always writes `headline` (which has `word`)
    as the second headline variant, whatever it is asked (a revision included), and `word`
    nowhere else; the reviewer model always approves. Only that variant breaks a rule."""

    def __init__(self, word: str, headline: str) -> None:
        super().__init__()
        self.word, self.headline = word, headline

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        content = self._content.get(id(rec))
        if content is not None:
            answer = json.loads(content)
            if isinstance(answer.get("variants"), dict):  # the copywriter's
                # the mock writes with the prompt's words, the forbidden one among them
                text = pattern(self.word).sub("차", json.dumps(answer, ensure_ascii=False))
                answer = json.loads(text)
                answer["variants"]["headlines"][1] = self.headline
            elif "approved" in answer:  # the reviewer's
                answer.update(approved=True, revision_requests=[])
            self._content[id(rec)] = json.dumps(answer, ensure_ascii=False)
        return super().render_reply(rec, reply, elapsed)


FORBIDDING = {
    "en": ("Launch our oat latte in Seoul. Never use the word 'miracle' in any copy.",
           "miracle", "A small miracle in every cup"),
    "ko": ("서울의 직장인에게 귀리 라떼를 알려 주세요. '기적'이라는 단어는 절대 쓰지 마세요.",
           "기적", "매일 아침 작은 기적을 한 잔"),
}  # fmt: skip


def copywriter_calls(fake: MockOllama) -> list[dict[str, Any]]:
    """The bodies of the calls that asked the model for variants."""
    bodies = [r.body for r in fake.model_calls() if isinstance(r.body, dict)]
    return [b for b in bodies if "variants" in (b.get("format") or {}).get("properties", {})]


@pytest.mark.parametrize("language", ["en", "ko"])
async def test_a_forbidden_word_in_one_variant_keeps_the_campaign_from_approved(
    tmp_path: Path, language: str
) -> None:
    brief, word, headline = FORBIDDING[language]
    async with StubbornOllama(word, headline) as fake:
        app = live_app(tmp_path, fake.url)
        try:
            async with await client_for(app) as http:
                campaign_id = await start(http, brief=brief, channels=["naver_search"],
                                          variants=SEARCH_AD)  # fmt: skip
                assert (await events_of(http, campaign_id))[-1]["event"] == "done"
                base = f"/api/v1/campaigns/{campaign_id}"
                result = (await http.get(base)).json()["result"]
                md = (await http.get(f"{base}/report.md")).text
                html = (await http.get(f"{base}/report.html")).text
        finally:
            await close_app(app)

    # the copywriter was asked for the variants, then to revise them, told what to remove
    asked = copywriter_calls(fake)
    assert len(asked) == 2
    for body in asked:
        headlines = body["format"]["properties"]["variants"]["properties"]["headlines"]
        assert headlines["minItems"] == headlines["maxItems"] == 5
    revision = json.dumps(asked[1]["messages"], ensure_ascii=False)
    assert f"Remove '{word}' from headline variant 2" in revision

    # it kept the word, so the campaign is not approved, though the reviewer model approved
    copy = search_copy(result)
    assert_within_limits(copy, 5, 3)
    assert copy["variants"]["headlines"][1] == headline
    assert result["status"] == "needs_changes" and result["review"]["approved"] is False
    assert result["revised_channels"] == ["naver_search"]
    [violation] = result["violations"]  # that variant, and nothing else
    assert (violation["field"], violation["variant"], violation["term"], violation["source"]) == (
        "variants.headlines", 2, word, "brief")  # fmt: skip
    assert find(word, violation["text"])

    # the report marks the variant where it lists it, and in the violations table
    t = LABELS[result["brief"]["language"]]
    line = next(line for line in md.splitlines() if line.startswith("2. ") and word in line)
    assert line.endswith(f"⚠ {t['breaks_rules']}")
    assert f"| {t['variants.headlines']} 2 |" in md
    assert f"<mark>{headline}</mark>" in html
