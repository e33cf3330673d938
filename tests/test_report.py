"""The campaign report: the files a marketer opens, from a campaign the real pipeline made in
mock mode (a Korean brief and an English one)."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from sparklio.agents.pipeline import Campaign, run_campaign
from sparklio.agents.report import ReportPaths, collect_images, write_report
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from tests.conftest import make_settings, token_for

BRIEFS = {
    "ko": (
        "다원 녹차의 봄 신제품 '첫물 녹차'를 알리는 캠페인을 준비해 주세요.\n"
        "주요 타깃은 오후에 차분하게 쉬고 싶은 서울의 30대 직장인입니다.\n"
        "인스타그램과 네이버 검색 광고를 중심으로, 톤은 따뜻하고 차분하게.\n"
    ),
    "en": (
        "We are launching Aurora Trail, a lightweight waterproof running shoe for city runners.\n"
        "Audience: runners aged 25-40 in Seoul who train before or after work.\n"
        "Channels: Instagram, YouTube and our newsletter. Tone: energetic but honest.\n"
        # pasted from the client's web page as is: the report must show it, never run it
        'Notes: <script>alert("pwned")</script>\n'
    ),
}
DATA_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
HANGUL = re.compile(r"[가-힣]")
STATUS = {
    ("ko", "approved"): "상태: 승인",
    ("ko", "needs_changes"): "상태: 수정 필요",
    ("en", "approved"): "Status: Approved",
    ("en", "needs_changes"): "Status: Needs changes",
}


@dataclass
class Made:
    campaign: Campaign
    images: dict[str, bytes]


#: One pipeline run per brief for the whole module: it is deterministic, the report tests only
#: read it, and rendering the mock images is the slow part.
_MADE: dict[str, Made] = {}


async def make(language: str, tmp_path: Path) -> Made:
    """The campaign for the brief in this language, made once."""
    if language not in _MADE:
        app = create_app(make_settings(sparklio_home=tmp_path / "home"))
        transport = httpx.ASGITransport(app=app)
        token = await token_for(app)
        try:
            async with (
                LLMGatewayClient(base_url="http://gw", api_key=token, transport=transport) as llm,
                MediaGatewayClient(
                    base_url="http://gw", api_key=token, transport=transport
                ) as media,
            ):
                campaign = await run_campaign(llm, media, BRIEFS[language])
                _MADE[language] = Made(campaign, await collect_images(media, campaign))
        finally:
            await close_app(app)
    made = _MADE[language]
    assert made.campaign.brief.language == language
    return made


@pytest.fixture(params=["ko", "en"])
async def made(request: pytest.FixtureRequest, tmp_path: Path) -> Made:
    return await make(request.param, tmp_path)


@pytest.fixture
def report(made: Made, tmp_path: Path) -> ReportPaths:
    return write_report(made.campaign, tmp_path / "report", made.images)


def as_text(markdown: str) -> str:
    """The markdown as a reader sees it: backslash escapes removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_collect_images_downloads_every_asset_as_its_png(made: Made) -> None:
    campaign = made.campaign
    assert len(campaign.images) == len(campaign.concepts) >= 1
    assert set(made.images) == {image.asset_id for image in campaign.images}
    for image in campaign.images:
        png = Image.open(io.BytesIO(made.images[image.asset_id]))
        assert png.format == "PNG"
        assert png.size == (image.width, image.height)


def test_the_folder_has_the_three_files_and_the_images(made: Made, report: ReportPaths) -> None:
    assert report.folder.is_dir()
    assert [p.name for p in (report.data, report.markdown, report.html)] == [
        "campaign.json",
        "campaign.md",
        "campaign.html",
    ]
    assert all(p.is_file() and p.parent == report.folder for p in (report.data, report.markdown,
                                                                    report.html))  # fmt: skip
    assert len(report.images) == len(made.campaign.images)
    for path, image in zip(report.images, made.campaign.images, strict=True):
        assert path.name == f"{image.concept + 1}-{image.asset_id[:12]}.png"
        assert path.parent == report.folder / "images"
        assert path.read_bytes() == made.images[image.asset_id]


def test_campaign_json_loads_back_into_the_campaign(made: Made, report: ReportPaths) -> None:
    raw = report.data.read_text(encoding="utf-8")
    assert Campaign.model_validate_json(raw) == made.campaign
    assert raw.startswith('{\n  "brief_text": ')  # indented for a person to read
    if made.campaign.brief.language == "ko":
        assert made.campaign.brief.product in raw  # Korean as characters, not \u escapes
        assert "\\u" not in raw


def test_the_markdown_is_the_marketers_report(made: Made, report: ReportPaths) -> None:
    campaign = made.campaign
    markdown = report.markdown.read_text(encoding="utf-8")
    text = as_text(markdown)
    assert text.startswith(f"# {campaign.brief.product}")
    assert STATUS[campaign.brief.language, campaign.status] in text.splitlines()[2]
    for copy in campaign.copies:
        assert copy.headline in text
        assert copy.cta in text
    for colour in campaign.brand.palette:
        assert f"`{colour}`" in markdown
    assert campaign.strategy.big_idea in text
    references = re.findall(r"!\[[^\]]*\]\((images/[^)]+\.png)\)", markdown)
    assert len(references) == len(campaign.images)
    assert all((report.folder / ref).is_file() for ref in references)
    for step in campaign.steps:
        assert re.search(rf"^\| {re.escape(step.step)} \| {step.provider} \|", text, re.M)
    if campaign.first_review is not None:
        assert ("1차 검토" if campaign.brief.language == "ko" else "First review") in text


def test_the_html_is_one_self_contained_page(made: Made, report: ReportPaths) -> None:
    campaign = made.campaign
    page = report.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert f'<html lang="{campaign.brief.language}">' in page
    assert '<meta charset="utf-8">' in page
    text = html.unescape(page)
    assert campaign.brief.product in text
    for copy in campaign.copies:
        assert copy.headline in text
    # every image inline, the very bytes downloaded, in the concepts' order
    inline = [base64.b64decode(data) for data in DATA_IMG.findall(page)]
    assert inline == [made.images[image.asset_id] for image in campaign.images]
    assert page.count("<img ") == len(campaign.images)
    # nothing to fetch: no links out, no external files, no stylesheets or fonts from the web
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "images/" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for colour in campaign.brand.palette:
        assert f'style="background: {colour}"' in page  # a swatch per palette colour
    if campaign.brief.language == "ko":
        assert HANGUL.search(campaign.copies[0].headline + campaign.brief.product)
        assert "검토" in page and "브랜드 프로필" in page
    else:
        assert not HANGUL.search(page)


async def test_a_script_in_the_brief_is_shown_never_run(tmp_path: Path) -> None:
    made = await make("en", tmp_path)
    assert "<script>" in made.campaign.brief_text
    report = write_report(made.campaign, tmp_path / "report", made.images)
    page = report.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page
    markdown = report.markdown.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\\)</?script", markdown, re.I)  # only as \<script\>
    assert '\\<script\\>alert("pwned")\\</script\\>' in markdown


def test_markup_in_any_field_stays_text(made: Made, tmp_path: Path) -> None:
    """What a model writes is user text too; a palette value is checked before it is CSS."""
    campaign = made.campaign
    evil = '<img src=x onerror="alert(1)">'
    copies = [campaign.copies[0].model_copy(update={"headline": evil}), *campaign.copies[1:]]
    brand = campaign.brand.model_copy(
        update={"palette": ["#2E7D32", "red; background: url(https://evil.example/x.png)"]}
    )
    brief = campaign.brief.model_copy(update={"product": f"Tea {evil}"})
    tampered = campaign.model_copy(update={"copies": copies, "brand": brand, "brief": brief})

    paths = write_report(tampered, tmp_path / "tampered", made.images)
    page = paths.html.read_text(encoding="utf-8")
    assert "<img src=x" not in page
    assert page.count("<img ") == len(campaign.images)
    assert evil in html.unescape(page)
    assert 'style="background: #2E7D32"' in page
    assert not re.search(r'style="[^"]*(red|url\()', page)  # no swatch for it
    assert ">red; background: url(https://evil.example/x.png)</div>" in page  # shown, as text
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\\)<img", markdown)
    assert evil in as_text(markdown)


def test_a_revision_round_is_reported(made: Made, tmp_path: Path) -> None:
    campaign = made.campaign
    channel = campaign.copies[0].channel
    revised = campaign.model_copy(
        update={"first_review": campaign.review, "revised_channels": [channel]}
    )
    paths = write_report(revised, tmp_path / "revised", made.images)
    ko = campaign.brief.language == "ko"
    for text in (as_text(paths.markdown.read_text(encoding="utf-8")),
                 html.unescape(paths.html.read_text(encoding="utf-8"))):  # fmt: skip
        assert ("1차 검토 후 수정됨" if ko else "Revised after the first review") in text
        assert text.count("1차 검토 (수정 전)" if ko else "First review (before revision)") == 1


def test_an_image_not_downloaded_is_left_out(made: Made, tmp_path: Path) -> None:
    paths = write_report(made.campaign, tmp_path / "no-images", {})
    assert paths.images == []
    assert not (paths.folder / "images").exists()
    page = paths.html.read_text(encoding="utf-8")
    assert "<img " not in page
    note = "이미지를 받지 못했습니다" if made.campaign.brief.language == "ko" else "No image"
    assert page.count(note) == len(made.campaign.concepts)
    assert "](images/" not in paths.markdown.read_text(encoding="utf-8")
