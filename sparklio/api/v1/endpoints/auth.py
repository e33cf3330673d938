"""HTTP endpoints of authentication: log in, who am I, and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from sparklio.api.auth import ClientAddressDep, PrincipalDep
from sparklio.api.deps import AuthServiceDep
from sparklio.db.models import ApiKey
from sparklio.services.auth import utc
from sparklio.services.auth_input import text_problem

router = APIRouter(prefix="/auth", tags=["auth"])


def _plain_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError("plain_text", problem)
    return value


def _encodable(value: str) -> str:
    problem = text_problem(value, controls=True)
    if problem is not None:
        raise PydanticCustomError("plain_text", problem)
    return value


#: text that is stored or looked up: no control character (PostgreSQL refuses NUL)
PlainText = Annotated[str, AfterValidator(_plain_text)]
#: a password: any character that can be encoded
Password = Annotated[str, AfterValidator(_encodable)]

KeyId = Annotated[
    str,
    Path(
        max_length=32,
        pattern="^[0-9A-Za-z_-]+$",
        description="The key's id, from GET /api/v1/auth/api-keys.",
    ),
]


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: PlainText = Field(min_length=1, max_length=320, examples=["member@sparklio.local"])
    password: Password = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    expires_in: int = Field(description="Seconds the token is valid for.")


class MeOut(BaseModel):
    id: str
    email: str
    role: str
    active: bool
    via: Literal["key", "token"]
    key_id: str | None = Field(default=None, description="The API key used, if one was.")


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field(min_length=1, max_length=100, examples=["campaign-runner"])


class ApiKeyOut(BaseModel):
    """An API key as listed; the key itself is never stored, so never shown again."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=utc(key.created_at),
            last_used_at=key.last_used_at and utc(key.last_used_at),
            revoked_at=key.revoked_at and utc(key.revoked_at),
        )


class NewKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    key: str = Field(description="The key. Shown this once: keep it now.")
    created_at: datetime


class ApiKeysOut(BaseModel):
    api_keys: list[ApiKeyOut]


@router.post(
    "/login",
    responses={401: {"description": "Wrong email or password."}, 429: {"description": "Wait."}},
)
async def login(body: LoginRequest, client: ClientAddressDep, auth: AuthServiceDep) -> TokenOut:
    """A token for an email and password; send it as `Authorization: Bearer <token>`.
    Failed logins are limited per account and address, and per address."""
    token = await auth.login(body.email, body.password, client)
    return TokenOut(
        access_token=token.access_token, expires_at=token.expires_at, expires_in=token.expires_in
    )


@router.get("/me")
async def me(principal: PrincipalDep) -> MeOut:
    """Who the credentials belong to."""
    return MeOut(
        id=principal.user_id,
        email=principal.email,
        role=principal.role,
        active=True,  # an inactive user's credentials are refused before this
        via=principal.via,
        key_id=principal.key_id,
    )


@router.post("/api-keys", status_code=201)
async def create_api_key(
    body: NewKeyRequest, principal: PrincipalDep, auth: AuthServiceDep
) -> NewKeyOut:
    """A new API key for the caller. The key is in this answer only."""
    key, record = await auth.create_api_key(principal.user_id, body.name)
    return NewKeyOut(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        key=key,
        created_at=utc(record.created_at),
    )


@router.get("/api-keys")
async def list_api_keys(principal: PrincipalDep, auth: AuthServiceDep) -> ApiKeysOut:
    """The caller's keys, revoked ones included, without the keys themselves."""
    keys = await auth.list_api_keys(principal.user_id)
    return ApiKeysOut(api_keys=[ApiKeyOut.of(key) for key in keys])


@router.delete("/api-keys/{key_id}", responses={404: {"description": "No such key of yours."}})
async def revoke_api_key(key_id: KeyId, principal: PrincipalDep, auth: AuthServiceDep) -> ApiKeyOut:
    """Revoke a key: it is refused (403) from the next request. Admins may revoke any key."""
    key = await auth.revoke_api_key(principal.user_id, key_id, as_admin=principal.role == "admin")
    return ApiKeyOut.of(key)
