"""`/api/v1/brand-kits`: a brand's voice, words, claims to avoid, colours, type and example
copy, kept once and named by campaigns. A kit is its maker's, or shared with everyone by an
admin; members read shared kits but cannot change them (403), and another member's kit is a
404 to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from sparklio.api.auth import PrincipalDep
from sparklio.api.deps import SessionsDep
from sparklio.services.brand_kits import BrandKitStore, StoredBrandKit
from sparklio.wire.brand import BrandKit

router = APIRouter(prefix="/brand-kits", tags=["brand kits"])

KitId = Annotated[
    str,
    Path(description="The kit's id, from GET /api/v1/brand-kits.",
         json_schema_extra={"pattern": "^[0-9a-f]{32}$"}),
]  # fmt: skip


class BrandKitIn(BrandKit):
    """A kit to create or replace."""

    shared: bool | None = Field(
        default=None,
        description="Shared with everyone (admins only). On create, absent means false; on "
        "replace, absent leaves it as it is.",
    )


class BrandKitOut(BrandKit):
    id: str
    shared: bool = Field(description="Shared with everyone (an admin's), or the owner's.")
    owner_id: str | None = Field(description="The owner's user id; null for a shared kit.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, stored: StoredBrandKit) -> BrandKitOut:
        return cls(id=stored.id, shared=stored.shared, owner_id=stored.owner,
                   created_at=stored.created_at, updated_at=stored.updated_at,
                   **stored.kit.model_dump())  # fmt: skip


class BrandKitsOut(BaseModel):
    brand_kits: list[BrandKitOut]


def _kit(body: BrandKitIn) -> BrandKit:
    return BrandKit.model_validate(body.model_dump(exclude={"shared"}))


@router.post(
    "",
    status_code=201,
    responses={403: {"description": "shared: true from a member (only admins share kits)."}},
)
async def create_brand_kit(
    body: BrandKitIn, principal: PrincipalDep, sessions: SessionsDep
) -> BrandKitOut:
    """A new brand kit: the caller's, or with `shared: true` (admins) everyone's."""
    stored = await BrandKitStore(sessions).create(
        _kit(body), user_id=principal.user_id, admin=principal.role == "admin",
        shared=bool(body.shared),
    )  # fmt: skip
    return BrandKitOut.of(stored)


@router.get("")
async def list_brand_kits(principal: PrincipalDep, sessions: SessionsDep) -> BrandKitsOut:
    """The caller's kits and the shared ones, by name."""
    kits = await BrandKitStore(sessions).list(user_id=principal.user_id)
    return BrandKitsOut(brand_kits=[BrandKitOut.of(k) for k in kits])


@router.get("/{kit_id}", responses={404: {"description": "No such kit of yours or shared."}})
async def get_brand_kit(
    kit_id: KitId, principal: PrincipalDep, sessions: SessionsDep
) -> BrandKitOut:
    """One kit: the caller's, a shared one, or (for admins) anyone's."""
    stored = await BrandKitStore(sessions).get(
        kit_id, user_id=principal.user_id, admin=principal.role == "admin"
    )
    return BrandKitOut.of(stored)


@router.put(
    "/{kit_id}",
    responses={
        403: {"description": "A shared kit (or sharing) and the caller is not an admin."},
        404: {"description": "No such kit of yours or shared."},
    },
)
async def replace_brand_kit(
    kit_id: KitId, body: BrandKitIn, principal: PrincipalDep, sessions: SessionsDep
) -> BrandKitOut:
    """Replace a kit with the body (every field; the ones left out become empty)."""
    stored = await BrandKitStore(sessions).replace(
        kit_id, _kit(body), user_id=principal.user_id, admin=principal.role == "admin",
        shared=body.shared,
    )  # fmt: skip
    return BrandKitOut.of(stored)


@router.delete(
    "/{kit_id}",
    status_code=204,
    response_class=Response,
    responses={
        403: {"description": "A shared kit and the caller is not an admin."},
        404: {"description": "No such kit of yours or shared."},
    },
)
async def delete_brand_kit(
    kit_id: KitId, principal: PrincipalDep, sessions: SessionsDep
) -> Response:
    """Delete a kit. Campaigns that used it keep the profile they made from it."""
    await BrandKitStore(sessions).delete(
        kit_id, user_id=principal.user_id, admin=principal.role == "admin"
    )
    return Response(status_code=204)
