"""GET /studio (and every client-side route under it) answers the HTML shell; GET
/studio/static/{file} the files under `static/`.

No credentials are needed for either: the shell's script asks GET /api/v1/auth/me and shows
the login form on 401. The shell and the files go out with a strict Content-Security-Policy
(every asset from Sparklio itself, no inline script or style, no framing).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
SHELL = STATIC_DIR / "index.html"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
#: on the shell and on every static file
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


@router.get("/studio")
@router.get("/studio/{path:path}")
async def shell(path: str = "") -> Response:
    """The studio's one page; its script routes on `location.pathname`."""
    # never kept: a new release's shell must name the new release's scripts
    return FileResponse(SHELL, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})  # fmt: skip


class StudioFiles(StaticFiles):
    """Starlette's static files (ETag, Last-Modified, no path outside the folder), with the
    studio's headers. Kept by the browser, but revalidated on each load (a 304 when
    unchanged), so a new release is never mixed with the last one's modules."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
        status_code: int = 200,
    ) -> Response:  # fmt: skip
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-cache"})
        return response


def install_studio(app: FastAPI) -> None:
    """Serve the studio on `app`: the static files first, so the shell's catch-all route
    does not answer for them."""
    app.mount("/studio/static", StudioFiles(directory=STATIC_DIR), name="studio-static")
    app.include_router(router)
