"""The studio's login: POST /api/v1/auth/session sets the session cookies, DELETE ends the
session (see `sparklio.api.session`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from sparklio.api.auth import ClientAddressDep, HttpsDep
from sparklio.api.deps import AuthServiceDep
from sparklio.api.session import (
    check_csrf,
    clear_session_cookies,
    credential_of,
    csrf_token,
    set_session_cookies,
)
from sparklio.api.v1.endpoints.auth import LoginRequest
from sparklio.exceptions import ForbiddenError, UnauthorizedError

router = APIRouter(prefix="/auth", tags=["auth"])


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
