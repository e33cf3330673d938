"""The campaign report a marketer opens: campaign.json (everything, for tools), campaign.md (to
read or paste) and campaign.html (one self-contained page: styles and images inline).

```python
images = await collect_images(media, campaign)
paths = write_report(campaign, Path("out/aurora"), images)
```

A server renders the same report as one text with `render_report`, its images linked by URL
rather than inlined (the page stays small, and the link checks who asks).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
import orjson
from pydantic import BaseModel

from sparklio.agents.pipeline import Campaign
from sparklio.agents.vision_generator_agent import CampaignImage
from sparklio.services.clients.media_client import MediaGatewayClient

HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_SAFE = re.compile(r"[^0-9A-Za-z_-]")
#: What CommonMark would read as markup (raw HTML, links, emphasis, code, table cells):
#: escaped with a backslash, so user text shows as written and cannot inject anything. An
#: underscore inside a word (naver_search) is plain text already, and stays unescaped.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|]|(?<![^\W_])_|_(?![^\W_]))")

#: The report's own words, in the brief's language. No key is a dict method's name (values,
#: copy, items): in a template `t.values` would find the method, not the label.
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "report": "campaign report", "status": "Status", "approved": "Approved",
        "needs_changes": "Needs changes", "scores": "Review scores", "average": "average",
        "brief": "Brief", "client_brief": "The client's brief", "product": "Product",
        "audience": "Audience", "objectives": "Objectives", "key_messages": "Key messages",
        "tone": "Tone", "channels": "Channels", "constraints": "Constraints",
        "deliverables": "Deliverables", "brand": "Brand profile", "personality": "Personality",
        "voice": "Voice", "brand_values": "Values", "words_to_use": "Words to use",
        "words_to_avoid": "Words to avoid", "palette": "Palette", "typography": "Typography",
        "strategy": "Strategy", "positioning": "Positioning", "big_idea": "Big idea",
        "segments": "Target segments", "channel_plan": "Channel plan", "channel": "Channel",
        "objective": "Objective", "formats": "Formats", "kpis": "KPIs", "timeline": "Timeline",
        "week": "When", "milestone": "Milestone", "copies": "Copy by channel",
        "headline": "Headline", "body": "Body", "cta": "Call to action", "hashtags": "Hashtags",
        "headline_variants": "Headline variants", "description_variants": "Description variants",
        "variants.headlines": "Headline variant", "variants.descriptions": "Description variant",
        "revised": "Revised after the first review", "visuals": "Visual concepts",
        "prompt": "Prompt", "negative_prompt": "Avoid", "aspect_ratio": "Aspect ratio",
        "style": "Style", "no_image": "No image was downloaded for this concept.",
        "review": "Review", "issues": "Issues", "revision_requests": "Revision requests",
        "rule_findings": "found by rule checks", "first_review": "First review (before revision)",
        "none": "None", "steps": "Steps", "step": "Step", "provider": "Provider",
        "model": "Model", "latency": "Latency (ms)", "tokens": "Tokens (prompt / completion)",
        "cost": "Cost (USD)", "attempts": "Attempts", "fallback": "fallback",
        "repaired": "repaired", "total": "Total", "pipeline": "pipeline",
        "violations": "Rule violations", "no_violations": "The copy breaks no rule.",
        "violations_note": "The copy still breaks these rules after the revision: the "
        "campaign cannot be approved until they are fixed.",
        "rule": "Rule", "field": "Field", "offending": "Offending text", "term": "Term",
        "source": "Source", "breaks_rules": "breaks a rule",
    },
    "ko": {
        "report": "캠페인 리포트", "status": "상태", "approved": "승인",
        "needs_changes": "수정 필요", "scores": "검토 점수", "average": "평균",
        "brief": "브리프", "client_brief": "고객 브리프 원문", "product": "제품",
        "audience": "타깃", "objectives": "목표", "key_messages": "핵심 메시지",
        "tone": "톤", "channels": "채널", "constraints": "제약 사항",
        "deliverables": "산출물", "brand": "브랜드 프로필", "personality": "개성",
        "voice": "보이스", "brand_values": "가치", "words_to_use": "권장 표현",
        "words_to_avoid": "금지 표현", "palette": "컬러 팔레트", "typography": "타이포그래피",
        "strategy": "전략", "positioning": "포지셔닝", "big_idea": "빅 아이디어",
        "segments": "타깃 세그먼트", "channel_plan": "채널 계획", "channel": "채널",
        "objective": "목표", "formats": "포맷", "kpis": "KPI", "timeline": "일정",
        "week": "시기", "milestone": "마일스톤", "copies": "채널별 카피",
        "headline": "헤드라인", "body": "본문", "cta": "CTA", "hashtags": "해시태그",
        "headline_variants": "헤드라인 변형안", "description_variants": "설명 변형안",
        "variants.headlines": "헤드라인 변형안", "variants.descriptions": "설명 변형안",
        "revised": "1차 검토 후 수정됨", "visuals": "비주얼 콘셉트",
        "prompt": "프롬프트", "negative_prompt": "제외 요소", "aspect_ratio": "화면 비율",
        "style": "스타일", "no_image": "이 콘셉트의 이미지를 받지 못했습니다.",
        "review": "검토", "issues": "지적 사항", "revision_requests": "수정 요청",
        "rule_findings": "규칙 검사로 발견", "first_review": "1차 검토 (수정 전)",
        "none": "없음", "steps": "단계별 실행 기록", "step": "단계", "provider": "제공자",
        "model": "모델", "latency": "지연 (ms)", "tokens": "토큰 (프롬프트 / 생성)",
        "cost": "비용 (USD)", "attempts": "시도", "fallback": "대체 경로", "repaired": "보정됨",
        "total": "합계", "pipeline": "파이프라인",
        "violations": "규칙 위반", "no_violations": "규칙을 어긴 카피가 없습니다.",
        "violations_note": "수정 후에도 카피가 아래 규칙을 어깁니다. 고치기 전에는 캠페인을 "
        "승인할 수 없습니다.",
        "rule": "규칙", "field": "항목", "offending": "문제 표현", "term": "금지어",
        "source": "출처", "breaks_rules": "규칙 위반",
    },
}  # fmt: skip
NAMES: dict[str, dict[str, str]] = {
    "en": {
        "instagram": "Instagram", "naver_search": "Naver search ads", "youtube": "YouTube",
        "kakao": "KakaoTalk", "email": "Email", "blog": "Blog", "brand_fit": "Brand fit",
        "clarity": "Clarity", "claims_and_compliance": "Claims & compliance",
        "channel_fit": "Channel fit",
        "forbidden_word": "Forbidden word", "forbidden_claim": "Forbidden claim",
        "length": "Too long", "hashtags": "Too many hashtags", "missing_cta": "No call to action",
        "variant_count": "Wrong number of variants",
        "brief": "brief", "brand_kit": "brand kit", "brand": "brand profile",
        "built_in": "built-in rule", "channel": "channel limits",
    },
    "ko": {
        "instagram": "인스타그램", "naver_search": "네이버 검색광고", "youtube": "유튜브",
        "kakao": "카카오톡", "email": "이메일", "blog": "블로그", "brand_fit": "브랜드 적합성",
        "clarity": "명확성", "claims_and_compliance": "표현·규정 준수",
        "channel_fit": "채널 적합성",
        "forbidden_word": "금지어", "forbidden_claim": "금지 표현(주장)",
        "length": "길이 초과", "hashtags": "해시태그 초과", "missing_cta": "CTA 없음",
        "variant_count": "변형안 개수 불일치",
        "brief": "브리프", "brand_kit": "브랜드 키트", "brand": "브랜드 프로필",
        "built_in": "기본 규칙", "channel": "채널 한도",
    },
}  # fmt: skip


class ReportPaths(BaseModel):
    """Where the report's files were written."""

    folder: Path
    data: Path  # campaign.json
    markdown: Path
    html: Path
    images: list[Path]


@dataclass(frozen=True)
class Figure:
    """One image as the templates show it."""

    image: CampaignImage
    path: str  # relative to the report folder (or the image's URL), for the markdown
    data_uri: str  # the bytes inline (or the image's URL), for the HTML


async def collect_images(media: MediaGatewayClient, campaign: Campaign) -> dict[str, bytes]:
    """Every image of the campaign, by asset id, downloaded in parallel."""
    ids = list(dict.fromkeys(image.asset_id for image in campaign.images))
    blobs = await asyncio.gather(*(media.download(asset_id) for asset_id in ids))
    return dict(zip(ids, blobs, strict=True))


def write_report(campaign: Campaign, out_dir: Path, images: dict[str, bytes]) -> ReportPaths:
    """Write campaign.json, campaign.md, campaign.html and images/ into out_dir (created).

    Images missing from `images` are left out (the report says so for their concept).
    """
    figures: dict[int, list[Figure]] = {}
    files: list[tuple[Path, bytes]] = []
    for image in campaign.images:
        data = images.get(image.asset_id)
        if data is None:
            continue
        # the id comes from a server: only its word characters go into a file name
        name = f"images/{image.concept + 1}-{_SAFE.sub('', image.asset_id)[:12]}.png"
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.setdefault(image.concept, []).append(Figure(image, name, uri))
        files.append((out_dir / name, data))

    context = _context(campaign, figures)
    # rendered before anything is written: a template error leaves no half-written report
    markdown = _environment().get_template("campaign.md").render(context)
    html = _environment().get_template("campaign.html").render(context)

    out_dir.mkdir(parents=True, exist_ok=True)
    if files:
        (out_dir / "images").mkdir(exist_ok=True)
    for path, data in files:
        path.write_bytes(data)
    paths = ReportPaths(
        folder=out_dir,
        data=out_dir / "campaign.json",
        markdown=out_dir / "campaign.md",
        html=out_dir / "campaign.html",
        images=[path for path, _ in files],
    )
    # orjson writes UTF-8 as is: Korean stays readable in the file
    paths.data.write_bytes(
        orjson.dumps(
            campaign.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
    )
    paths.markdown.write_text(markdown, encoding="utf-8", newline="\n")
    paths.html.write_text(html, encoding="utf-8", newline="\n")
    return paths


def render_report(campaign: Campaign, kind: Literal["md", "html"], urls: dict[str, str]) -> str:
    """The report as one markdown or HTML text, each image shown from its URL in `urls` (by
    asset id; images without one are left out, as write_report leaves out missing bytes)."""
    figures: dict[int, list[Figure]] = {}
    for image in campaign.images:
        url = urls.get(image.asset_id)
        if url is not None:
            figures.setdefault(image.concept, []).append(Figure(image, url, url))
    name = "campaign.md" if kind == "md" else "campaign.html"
    return _environment().get_template(name).render(_context(campaign, figures))


def _context(campaign: Campaign, figures: dict[int, list[Figure]]) -> dict[str, object]:
    language = campaign.brief.language
    scores = [s.score for s in campaign.review.scores]
    return {
        "c": campaign,
        "lang": language,
        "t": LABELS[language],
        "names": NAMES[language],
        "figures": figures,
        # a palette entry goes into a style attribute only when it is a colour: anything else
        # could smuggle CSS (a url() fetching from the network) into the page
        "palette": [(code, bool(HEX_COLOUR.fullmatch(code))) for code in campaign.brand.palette],
        "average": round(sum(scores) / len(scores), 1) if scores else None,
        "broken": {v.channel for v in campaign.violations},
        # the variants that break a rule, each marked where the copy lists it
        "flagged": {(v.channel, v.field, v.variant) for v in campaign.violations if v.variant},
        "prompt_tokens": sum(s.prompt_tokens for s in campaign.steps),
        "cost_usd": sum(s.cost_usd for s in campaign.steps),
        "completion_tokens": sum(s.completion_tokens for s in campaign.steps),
    }


def md_inline(value: object) -> str:
    """Text for one line of markdown (a table cell, a list item): escaped, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_quote(value: object) -> str:
    """Text as a markdown block quote, its lines kept."""
    lines = [_MD_SPECIAL.sub(r"\\\1", line.strip()) for line in str(value).strip().splitlines()]
    return "\n".join(f"> {line}" if line else ">" for line in lines)


@functools.cache
def _environment() -> jinja2.Environment:
    """The report templates; autoescape for everything but markdown, which escapes its own."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sparklio.agents", "templates"),
        autoescape=lambda name: not (name or "").endswith(".md"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_inline
    env.filters["md_quote"] = md_quote
    return env
