"""Campaigns over HTTP: start one, list yours, follow its steps live, cancel it, read its report;
and read a brief file into the fields that start one.

A campaign belongs to the user who started it: anyone else but an admin gets 404, as for a
campaign that does not exist. That holds for its images too: they are served under the
campaign (`.../images/{asset_id}`), and the campaign's answers and reports link them there.
It runs as a durable workflow (sparklio.services.campaigns).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import FileResponse, Response

from sparklio.agents.brief_agent import Channel
from sparklio.agents.brief_file import STRUCTURED, TEXT, parse_brief
from sparklio.agents.copywriter_agent import variant_counts
from sparklio.agents.pipeline import Campaign, Change, Decision
from sparklio.agents.report import render_report
from sparklio.api.auth import PrincipalDep
from sparklio.api.deps import ServicesDep
from sparklio.api.responses import EventStream, json_response, sse
from sparklio.db.models import CampaignEvent, CampaignRow
from sparklio.exceptions import BriefError, ConflictError, InvalidRequestError, NotFoundError
from sparklio.services.auth import Principal
from sparklio.services.brand_kits import BrandKitStore
from sparklio.services.campaigns.engine import resuming
from sparklio.services.campaigns.store import LAST_EVENTS, CampaignStore, seconds_between
from sparklio.services.container import Services
from sparklio.services.jsonvalues import check_json_value
from sparklio.services.media.assets import EXTENSIONS

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

#: Seconds between two looks for new events while a stream waits.
POLL = 0.05

CampaignId = Annotated[str, Path(description="The campaign's id, from POST /api/v1/campaigns.")]


class VariantAsk(BaseModel):
    """How many headline and description variants a channel asks for (an omitted count:
    the least the channel takes)."""

    model_config = ConfigDict(extra="forbid")

    # strict: a JSON number, never true or "5"
    headlines: int | None = Field(default=None, strict=True)
    descriptions: int | None = Field(default=None, strict=True)


class CampaignRequest(BaseModel):
    """What a campaign starts from."""

    model_config = ConfigDict(extra="forbid")

    brief: str = Field(min_length=1, max_length=20_000)
    product_facts: dict[str, Any] = Field(default_factory=dict)
    brand_guide: str | None = Field(default=None, max_length=20_000)
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=4)
    brand_kit_id: str | None = Field(
        default=None, max_length=64, description="A brand kit of yours or a shared one."
    )
    words_to_avoid: list[str] = Field(
        default_factory=list, max_length=30,
        description="Words and claims no copy may contain (checked on every piece of copy).",
    )  # fmt: skip
    options: dict[str, Any] = Field(default_factory=dict)
    variants: dict[Channel, VariantAsk] | None = Field(
        default=None,
        description="Headline and description variants to test, per channel: e.g. "
        '{"naver_search": {"headlines": 5, "descriptions": 3}} (a search ad takes 3-15 '
        "headlines of at most 30 characters and 2-4 descriptions of at most 90).",
    )

    @field_validator("brief", "brand_guide")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        """Text a database keeps as it is: Unicode (no lone surrogate), no NUL character."""
        if text is not None:
            if "\x00" in text:
                raise ValueError("contains a NUL character (\\u0000); remove it")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains a lone UTF-16 surrogate, which is not Unicode") from None
        return text


class ReviewRequest(BaseModel):
    """A reviewer's decision on a paused campaign: approve it, or name changes to make."""

    model_config = ConfigDict(extra="forbid")

    approve: bool = False
    changes: list[Change] = Field(default_factory=list, max_length=8)


def _links(campaign_id: str) -> dict[str, str]:
    base = f"/api/v1/campaigns/{campaign_id}"
    return {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel",
            "report": f"{base}/report.html", "review": f"{base}/review"}  # fmt: skip


def _summary(row: CampaignRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "brief": row.brief,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "duration_s": seconds_between(row.started_at, row.finished_at),
        "links": _links(row.id),
    }


def _event_body(event: CampaignEvent) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "step": event.step, "data": event.data,
            "at": event.created_at.isoformat()}  # fmt: skip


async def _campaign(services: Services, campaign_id: str, principal: Principal) -> CampaignRow:
    """The campaign if the caller may see it (its owner, or an admin); 404 otherwise."""
    row = await services.campaigns.store.get(campaign_id)
    if row is None or (principal.role != "admin" and row.user_id != principal.user_id):
        raise NotFoundError(f"No campaign {campaign_id!r}")
    return row


@router.post("", status_code=202, response_class=Response)
async def create(body: CampaignRequest, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Start a campaign; it runs in the background. 202 with its id, status and links."""
    check_json_value(body.product_facts, "product_facts")
    check_json_value(body.options, "options")
    options = body.model_dump(mode="json", exclude={"brief", "brand_kit_id"})
    for word in body.words_to_avoid:
        if not word.strip() or len(word) > 80:
            raise InvalidRequestError("words_to_avoid: each word is 1 to 80 characters.")
    options.pop("variants")
    if body.variants:  # kept with the options, so a resumed campaign asks for the same
        options["variants"] = _variants(body)
    if body.brand_kit_id is not None:
        # the kit as it is now: a resumed campaign goes on with the kit it started with
        stored = await BrandKitStore(services.db_sessions).get(
            body.brand_kit_id, user_id=principal.user_id, admin=principal.role == "admin"
        )
        options["brand_kit"] = {"id": stored.id, **stored.kit.model_dump(mode="json")}
    review = body.options.get("review", "auto")
    if review not in ("auto", "manual"):
        raise InvalidRequestError(
            "options.review is 'auto' (the default) or 'manual' (pause for a reviewer "
            "after the strategy and after the copy).",
            details=[{"field": "options.review", "value": str(review)[:64]}],
        )
    store: CampaignStore = services.campaigns.store
    row = await store.create(principal.user_id, body.brief, options)
    await services.campaigns.submit(row.id)
    return json_response({"id": row.id, "status": row.status, "links": _links(row.id)}, 202)


def _variants(body: CampaignRequest) -> dict[str, dict[str, int]]:
    """The variants each channel asks for, as counts (422 naming the field and the range a
    channel allows, or a channel the campaign does not run)."""
    asked: dict[str, dict[str, int]] = {}
    for channel, ask in (body.variants or {}).items():
        if body.channels is not None and channel not in body.channels:
            raise InvalidRequestError(
                f"variants.{channel}: {channel} is not one of the campaign's channels "
                f"{body.channels}; add it to channels or ask one of them for variants.",
                details=[{"field": f"variants.{channel}", "allowed": body.channels}],
            )
        asked[channel] = variant_counts(channel, ask.headlines, ask.descriptions).model_dump()
    return asked


SUFFIXES = (*STRUCTURED, *TEXT)


def _known_suffix(name: str) -> str:
    if not name.lower().endswith(SUFFIXES) or "\x00" in name:
        raise PydanticCustomError(
            "brief_file_name", f"a brief file's name ends in one of {', '.join(SUFFIXES)}"
        )
    return name


class BriefFileIn(BaseModel):
    """A brief file as the browser read it."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, AfterValidator(_known_suffix)] = Field(
        min_length=1, max_length=255, examples=["brief.yaml"],
        description=".yaml, .yml or .json: its fields; .md or .txt: the text is the brief.",
    )  # fmt: skip
    text: str = Field(max_length=500_000, description="The file's content (UTF-8 text).")


class BriefFileOut(BaseModel):
    """The fields of POST /api/v1/campaigns the file gives."""

    brief: str
    product_facts: dict[str, Any]
    brand_guide: str | None
    words_to_avoid: list[str]
    channels: list[str] | None
    variants: dict[str, Any] | None


@router.post("/brief-file", responses={422: {"description": "The file cannot be read as a brief."}})
async def brief_file(body: BriefFileIn) -> BriefFileOut:
    """Read a brief file the way `sparklio campaign --brief FILE` does: a .yaml or .json
        file's fields (brief, product_facts, brand_guide, words_to_avoid, channels, variants),
        or a .md or .txt file's text as the brief. 422 saying what is wrong with the file,
    including what POST /api/v1/campaigns would refuse (an unknown channel, a brief too long)."""
    # a long YAML file takes a while to parse: not on the event loop
    parsed = await asyncio.to_thread(parse_brief, body.text, body.filename)
    fields = parsed.model_dump(exclude_none=True)
    for field in ("product_facts", "variants"):
        # YAML has values JSON cannot carry back (.inf, 2**70, !!set)
        check_json_value(fields.get(field), field, floats=True)
    try:  # what POST /api/v1/campaigns would refuse, said now, before the form is sent
        CampaignRequest.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise BriefError(f"{body.filename}: {problems}") from None
    return BriefFileOut.model_validate(parsed.model_dump())


@router.get("", response_class=Response)
async def list_campaigns(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The caller's campaigns, newest first: each with its brand, channels and cost so far."""
    store: CampaignStore = services.campaigns.store
    rows = await store.owned_by(principal.user_id, limit, offset)
    costs = await store.costs([row.id for row in rows])
    listed = [_summary(row) | _at_a_glance(row) | {"cost_usd": costs[row.id]} for row in rows]
    return json_response({"campaigns": listed, "limit": limit, "offset": offset})


def _at_a_glance(row: CampaignRow) -> dict[str, Any]:
    """The brand (its brand kit's name; None without a kit) and the channels (as asked,
    else as the brief step chose them, once the copy exists)."""
    kit, result = row.options.get("brand_kit"), row.result or {}
    brand = kit.get("name") if isinstance(kit, dict) else None
    channels = row.options.get("channels") or [c.get("channel") for c in result.get("copies", [])]
    return {"brand": brand, "channels": channels}


@router.get("/{campaign_id}", response_class=Response)
async def get_campaign(
    campaign_id: CampaignId, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """The campaign: its status, each step's status and output so far, tokens and cost per
    step and in total, and its images (once rendered) with their download links."""
    row = await _campaign(services, campaign_id, principal)
    steps: dict[str, dict[str, Any]] = {}
    events = await services.campaigns.store.events(campaign_id)
    for event in events:
        if event.step is None:
            continue
        step = steps.setdefault(event.step, {"step": event.step})
        if event.type == "step_started":
            step.update(status="running", started_at=event.created_at.isoformat())
        elif event.type == "step_finished":
            records = event.data.get("records", [])
            step.update(
                status="succeeded",
                finished_at=event.created_at.isoformat(),
                output=event.data.get("output"),
                records=records,
                **_spent(records),
            )
        elif event.type == "step_failed":
            step.update(status="failed", error=event.data.get("error"))
    body = _summary(row) | {
        "options": row.options,
        "steps": list(steps.values()),
        "totals": _spent(list(steps.values())),
        "images": _linked_images(campaign_id, _rendered(row, events)),
        "result": _linked(campaign_id, row.result),
        "error": row.error,
    }
    return json_response(body)


def _spent(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The tokens and cost (USD) of step records, or of steps."""
    return {
        "prompt_tokens": sum(p.get("prompt_tokens", 0) for p in parts),
        "completion_tokens": sum(p.get("completion_tokens", 0) for p in parts),
        "cost_usd": round(sum(p.get("cost_usd", 0.0) for p in parts), 10),
    }


def _rendered(row: CampaignRow, events: list[CampaignEvent]) -> Any:
    """The campaign's images: its result's, or while it runs, what its images step made."""
    if row.result is not None:
        return row.result.get("images")
    finished = [e for e in events if e.type == "step_finished" and e.step == "images"]
    return finished[-1].data.get("output") if finished else None


def _image_url(campaign_id: str, asset_id: str) -> str:
    return f"/api/v1/campaigns/{campaign_id}/images/{asset_id}"


def _linked_images(campaign_id: str, images: Any) -> list[dict[str, Any]]:
    """A campaign's images, each with `url` its download link under the campaign (which
    answers only those who may see the campaign)."""
    if not isinstance(images, list):
        return []
    return [
        {**image, "url": _image_url(campaign_id, image["asset_id"])}
        for image in images
        if isinstance(image, dict) and isinstance(image.get("asset_id"), str)
    ]


def _linked(campaign_id: str, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The campaign's result with its images linked under the campaign."""
    if result is None:
        return None
    return {**result, "images": _linked_images(campaign_id, result.get("images"))}


@router.get(
    "/{campaign_id}/images/{asset_id}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The image.",
            "content": {
                mime: {"schema": {"type": "string", "format": "binary"}} for mime in EXTENSIONS
            },
        }
    },
)
async def image(
    campaign_id: CampaignId,
    asset_id: Annotated[str, Path(description="The image's asset id, from the campaign.")],
    principal: PrincipalDep,
    services: ServicesDep,
) -> FileResponse:
    """One of the campaign's images. 404 for anyone who may not see the campaign, and for
    an asset that is not one of its images."""
    row = await _campaign(services, campaign_id, principal)
    events = [] if row.result is not None else await services.campaigns.store.events(campaign_id)
    if not any(
        i["asset_id"] == asset_id for i in _linked_images(campaign_id, _rendered(row, events))
    ):
        raise NotFoundError(f"Campaign {campaign_id!r} has no image {asset_id!r}")
    path, mime = services.media.assets.find(asset_id)
    # the bytes never change, but who may read them does: only the browser keeps them
    return FileResponse(
        path, media_type=mime, headers={"Cache-Control": "private, max-age=31536000, immutable"}
    )


@router.get("/{campaign_id}/events", response_class=Response)
async def events(
    campaign_id: CampaignId,
    principal: PrincipalDep,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The campaign's events as server-sent events, from the first (or after
    `Last-Event-ID`) until `done`, `failed` or `cancelled`."""
    await _campaign(services, campaign_id, principal)
    after = 0
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            raise InvalidRequestError(
                "Last-Event-ID must be an event id (an integer) from this stream",
                details=[{"field": "Last-Event-ID", "value": last_event_id[:64]}],
            ) from None
    store: CampaignStore = services.campaigns.store

    async def follow() -> AsyncIterator[bytes]:
        seen = after
        while True:
            for event in await store.events(campaign_id, seen):
                seen = event.id
                yield b"id: %d\n" % event.id + sse(event.type, _event_body(event))
                if event.type in LAST_EVENTS:
                    return
            await asyncio.sleep(POLL)

    stream = follow()
    return EventStream(stream, stream)


@router.post("/{campaign_id}/cancel", response_class=Response)
async def cancel(
    campaign_id: CampaignId, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Cancel the campaign: no step starts after this (one under way finishes). A finished
    campaign is left as it is; either way the answer is its status."""
    await _campaign(services, campaign_id, principal)
    await services.campaigns.cancel(campaign_id)
    row = await _campaign(services, campaign_id, principal)
    return json_response(_summary(row))


@router.post("/{campaign_id}/review", response_class=Response)
async def review(
    campaign_id: CampaignId, body: ReviewRequest, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Answer a campaign awaiting review (started with `options.review: "manual"`): approve
    it, or ask for changes - at the strategy gate `{"step": "strategy", "note": ...}` plans
    again with the note; at the copy gate `{"channel": ..., "note": ...}` revises only that
    channel's copy - and it pauses at the same gate again. 409 when it is not awaiting one."""
    row = await _campaign(services, campaign_id, principal)
    store: CampaignStore = services.campaigns.store
    pause = await store.last_event(campaign_id, "awaiting_review")
    if row.status != "awaiting_review" or pause is None:
        raise ConflictError(f"Campaign {campaign_id!r} is {row.status}, not awaiting review")
    _check_review(body, pause.data)
    decision = Decision(approve=body.approve, changes=body.changes)
    data = {"gate": pause.data.get("gate"), **decision.model_dump(mode="json"),
            "pause": pause.id, "workflow_id": resuming(campaign_id, pause.id)}  # fmt: skip
    if not await store.take_review(campaign_id, data):  # another review came first
        row = await _campaign(services, campaign_id, principal)
        raise ConflictError(f"Campaign {campaign_id!r} is {row.status}, not awaiting review")
    await services.campaigns.review(campaign_id, pause)
    row = await _campaign(services, campaign_id, principal)
    return json_response(_summary(row))


def _check_review(body: ReviewRequest, pause: dict[str, Any]) -> None:
    """A decision that fits the gate: approve, or changes it can make (422 otherwise)."""
    if body.approve == bool(body.changes):
        raise InvalidRequestError(
            'Send either {"approve": true} or a non-empty list of changes',
            details=[{"field": "changes" if body.changes else "approve"}],
        )
    gate = pause.get("gate")
    channels = [c.get("channel") for c in pause.get("copies", [])]
    for index, change in enumerate(body.changes):
        field = f"changes.{index}"
        if gate == "strategy" and (change.step != "strategy" or change.channel is not None):
            raise InvalidRequestError(
                'At the strategy gate a change is {"step": "strategy", "note": ...}',
                details=[{"field": f"{field}.step"}],
            )
        if gate == "copy" and change.channel not in channels:
            raise InvalidRequestError(
                f"At the copy gate a change names one of the campaign's channels: {channels}",
                details=[{"field": f"{field}.channel", "value": str(change.channel)[:64]}],
            )
        if gate == "copy" and change.step not in (None, "copy"):
            raise InvalidRequestError(
                "At the copy gate a change is about a channel's copy",
                details=[{"field": f"{field}.step"}],
            )


@router.get("/{campaign_id}/report.{kind}", response_class=Response)
async def report(
    campaign_id: CampaignId,
    kind: Literal["json", "md", "html"],
    principal: PrincipalDep,
    services: ServicesDep,
) -> Response:
    """The campaign's report (once it succeeded): the data, markdown, or a page."""
    row = await _campaign(services, campaign_id, principal)
    if row.result is None:
        raise NotFoundError(f"Campaign {campaign_id!r} has no report: it is {row.status}")
    if kind == "json":
        return Response(orjson.dumps(_linked(campaign_id, row.result)),
                        media_type="application/json")  # fmt: skip
    campaign = Campaign.model_validate(row.result)
    urls = {i.asset_id: _image_url(campaign_id, i.asset_id) for i in campaign.images}
    text = await asyncio.to_thread(render_report, campaign, kind, urls)
    media = "text/markdown" if kind == "md" else "text/html"
    return Response(text, media_type=f"{media}; charset=utf-8")
