"""Authentication dependencies: who is calling, from `Authorization: Bearer <key or token>`.

`create_app` puts one `AuthService` in `app.state.auth`; these hand it and the caller's
`Principal` to endpoints. Async on purpose (see `sparklio.api.deps`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sparklio.exceptions import ForbiddenError
from sparklio.services.auth import AuthService, Principal


async def get_auth(request: Request) -> AuthService:
    auth: AuthService = request.app.state.auth
    return auth


async def require_principal(request: Request) -> Principal:
    """The caller, or UnauthorizedError (401) / ForbiddenError (403). Also kept in
    `request.state.principal`, for logging and the call log."""
    auth: AuthService = request.app.state.auth
    principal = await auth.authenticate(request.headers.get("authorization"))
    request.state.principal = principal
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    """The caller when an admin; ForbiddenError (403) for a member."""
    if principal.role != "admin":
        raise ForbiddenError(f"This needs an admin; {principal.email} is a {principal.role}")
    return principal


AuthServiceDep = Annotated[AuthService, Depends(get_auth)]
PrincipalDep = Annotated[Principal, Depends(require_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]

__all__ = [
    "AdminDep",
    "AuthServiceDep",
    "PrincipalDep",
    "get_auth",
    "require_admin",
    "require_principal",
]
