"""POST /api/v1/campaigns/brief-file: a brief file's fields, read as `sparklio campaign
--brief FILE` reads it, so the studio's new-campaign form can be filled from an upload."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from sparklio.agents.brief_file import STRUCTURED, TEXT, parse_brief
from sparklio.api.v1.endpoints.campaigns import CampaignRequest
from sparklio.exceptions import BriefError
from sparklio.services.jsonvalues import check_json_value

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

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
