"""HTTP endpoints of authentication: log in (for a token, or the studio's session cookie),
who am I, and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from sparklio.api.auth import AdminDep, ClientAddressDep, HttpsDep, PrincipalDep
from sparklio.api.budgets import AccountDep, BudgetsDep
from sparklio.api.deps import AuthServiceDep
from sparklio.api.session import (
    check_csrf,
    clear_session_cookies,
    credential_of,
    csrf_token,
    set_session_cookies,
)
from sparklio.db.models import ApiKey, User
from sparklio.exceptions import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from sparklio.services.auth import utc
from sparklio.services.auth_input import text_problem
from sparklio.services.budgets import Budgets, Limits, limits_of

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


UserId = Annotated[str, Path(max_length=32, pattern="^[0-9A-Za-z_-]+$")]


class LimitsIn(BaseModel):
    """A key's or user's limits; a missing or null one is unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=1, le=1_000_000, description="Requests per minute.")
    tpm: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Tokens (prompt + answer) per minute."
    )
    usd_per_day: float | None = Field(
        default=None, ge=0, le=1_000_000, allow_inf_nan=False,
        description="USD per UTC day, at the routing file's prices.",
    )  # fmt: skip
    usd_per_month: float | None = Field(
        default=None, ge=0, le=10_000_000, allow_inf_nan=False,
        description="USD per UTC month, at the routing file's prices.",
    )  # fmt: skip

    def limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.usd_per_day, self.usd_per_month)

    @classmethod
    def of(cls, row: ApiKey | User) -> LimitsIn:
        limits = limits_of(row)
        return cls(rpm=limits.rpm, tpm=limits.tpm, usd_per_day=limits.usd_per_day,
                   usd_per_month=limits.usd_per_month)  # fmt: skip


class MeOut(BaseModel):
    id: str
    email: str
    role: str
    active: bool
    via: Literal["key", "token"]
    key_id: str | None = Field(default=None, description="The API key used, if one was.")
    limits: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per key and user: each limit set, with what is used and what remains.",
    )


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainText = Field(min_length=1, max_length=100, examples=["campaign-runner"])
    limits: LimitsIn | None = Field(default=None, description="The key's limits; none: unlimited.")


class ApiKeyOut(BaseModel):
    """An API key as listed; the key itself is never stored, so never shown again."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    limits: LimitsIn = Field(default_factory=LimitsIn)

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=utc(key.created_at),
            last_used_at=key.last_used_at and utc(key.last_used_at),
            revoked_at=key.revoked_at and utc(key.revoked_at),
            limits=LimitsIn.of(key),
        )


class UserLimitsOut(BaseModel):
    id: str
    email: str
    limits: LimitsIn


class NewKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    key: str = Field(description="The key. Shown this once: keep it now.")
    created_at: datetime
    limits: LimitsIn = Field(default_factory=LimitsIn)


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


class SessionUser(BaseModel):
    id: str
    email: str
    role: str


class SessionOut(BaseModel):
    user: SessionUser
    csrf_token: str


@router.post(
    "/session",
    responses={401: {"description": "Wrong email or password."}, 429: {"description": "Wait."}},
)
async def log_in(
    body: LoginRequest, response: Response, client: ClientAddressDep, auth: AuthServiceDep,
    https: HttpsDep,
) -> SessionOut:  # fmt: skip
    """Log a browser in: sets the `sparklio_session` cookie (HttpOnly) and the `sparklio_csrf`
    cookie, whose value every POST, PUT, PATCH and DELETE sent with the session cookie must
    carry as the `X-CSRF-Token` header. Limited like POST /api/v1/auth/login."""
    token = await auth.login(body.email, body.password, client, session=True)
    principal = await auth.authenticate(f"Bearer {token.access_token}")
    csrf = csrf_token(auth, token.access_token)
    set_session_cookies(response, token.access_token, csrf, max_age=token.expires_in,
                        secure=https)  # fmt: skip
    user = SessionUser(id=principal.user_id, email=principal.email, role=principal.role)
    return SessionOut(user=user, csrf_token=csrf)


@router.delete("/session", status_code=204, response_class=Response)
async def log_out(request: Request, auth: AuthServiceDep, https: HttpsDep) -> Response:
    """Log the browser out: the session's token is refused from now on (on every gateway
    process) and both cookies are cleared. Without a live session, only the cookies go."""
    authorization, from_cookie = credential_of(request)
    if from_cookie:
        try:
            principal = await auth.authenticate(authorization)
        except (UnauthorizedError, ForbiddenError):  # expired, logged out, or inactive
            principal = None
        if principal is not None:
            check_csrf(request, auth)
            await auth.revoke_session(principal)
    response = Response(status_code=204)
    clear_session_cookies(response, secure=https)
    return response


@router.get("/me")
async def me(principal: PrincipalDep, budgets: BudgetsDep, account: AccountDep) -> MeOut:
    """Who the credentials belong to, and the limits they are held to (used, remaining)."""
    limits = await budgets.report(account) if budgets and account else []
    return MeOut(
        id=principal.user_id,
        email=principal.email,
        role=principal.role,
        active=True,  # an inactive user's credentials are refused before this
        via=principal.via,
        key_id=principal.key_id,
        limits=limits,
    )


def _budgets(budgets: Budgets | None) -> Budgets:
    if budgets is None:
        raise ServiceUnavailableError("This gateway keeps no limits.")
    return budgets


@router.post("/api-keys", status_code=201)
async def create_api_key(
    body: NewKeyRequest, principal: PrincipalDep, auth: AuthServiceDep, budgets: BudgetsDep
) -> NewKeyOut:
    """A new API key for the caller, with its limits if given. The key is in this answer
    only."""
    key, record = await auth.create_api_key(principal.user_id, body.name)
    if body.limits is not None and body.limits.limits().any():
        record = await _budgets(budgets).set_key_limits(
            principal.user_id, record.id, body.limits.limits()
        )
    return NewKeyOut(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        key=key,
        created_at=utc(record.created_at),
        limits=LimitsIn.of(record),
    )


@router.put("/api-keys/{key_id}/limits", responses={404: {"description": "No such key of yours."}})
async def set_api_key_limits(
    key_id: KeyId, body: LimitsIn, principal: PrincipalDep, budgets: BudgetsDep
) -> ApiKeyOut:
    """Set a key's limits (all of them: a missing one is unlimited). Its owner may, as may
    an admin for any key; the user's own limits hold as well."""
    key = await _budgets(budgets).set_key_limits(
        principal.user_id, key_id, body.limits(), as_admin=principal.role == "admin"
    )
    return ApiKeyOut.of(key)


@router.put("/users/{user_id}/limits", responses={404: {"description": "No such user."}})
async def set_user_limits(
    user_id: UserId, body: LimitsIn, admin: AdminDep, budgets: BudgetsDep
) -> UserLimitsOut:
    """Set a user's limits, over all their keys and tokens (admins only). A missing one
    falls back to the DEFAULT_* setting."""
    user = await _budgets(budgets).set_user_limits(user_id, body.limits())
    return UserLimitsOut(id=user.id, email=user.email, limits=LimitsIn.of(user))


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
