"""Version 1 of the HTTP API, mounted under /api/v1.

Everything but logging in needs `Authorization: Bearer <API key or token>`, or the
studio's session cookie (with its CSRF token on a change; see `sparklio.api.session`).
"""

from fastapi import APIRouter, Depends

from sparklio.api.auth import require_admin, require_principal
from sparklio.api.v1.endpoints import (
    auth,
    brand_kits,
    brief_file,
    campaigns,
    llm_gateway,
    media_gateway,
    session,
    usage,
)

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)  # /auth/login stays open; the rest check inside
api_router.include_router(session.router)  # the studio's cookie login, open too
api_router.include_router(llm_gateway.router, dependencies=[Depends(require_principal)])
api_router.include_router(media_gateway.router, dependencies=[Depends(require_principal)])
api_router.include_router(brand_kits.router, dependencies=[Depends(require_principal)])
api_router.include_router(campaigns.router, dependencies=[Depends(require_principal)])
api_router.include_router(brief_file.router, dependencies=[Depends(require_principal)])
# usage is broken down by user, so it is for admins
api_router.include_router(usage.router, dependencies=[Depends(require_admin)])
