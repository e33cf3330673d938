"""HTTP endpoints of the Media Gateway: image jobs, their files, routes and providers."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import FileResponse, Response

from sparklio.api.budgets import AccountDep, BudgetsDep
from sparklio.api.deps import MediaGatewayDep
from sparklio.api.responses import HEALTH_TIMEOUT, json_response
from sparklio.services.jsonvalues import check_json_value, may_hold_nonfinite
from sparklio.services.media.assets import EXTENSIONS
from sparklio.wire.media import GenerateImageRequest, MediaJob, MediaRequest

router = APIRouter(prefix="/media", tags=["media"])

# The id formats are documented but checked by the stores, whose 422 says what an id looks like.
JobId = Annotated[
    str,
    Path(description="The job's id, from POST /api/v1/media/generate.",
         json_schema_extra={"pattern": "^[0-9a-f]{32}$"}),
]  # fmt: skip
AssetId = Annotated[
    str,
    Path(description="The asset's id (the sha256 of its bytes), from a job's assets.",
         json_schema_extra={"pattern": "^[0-9a-f]{64}$"}),
]  # fmt: skip


def _job_body(job: MediaJob) -> dict[str, Any]:
    return job.model_dump(mode="json")


def _owner(request: Request) -> str | None:
    """Whose jobs the caller may see: its own, or (None) everyone's for an admin."""
    principal = request.state.principal
    return None if principal.role == "admin" else str(principal.user_id)


@router.post(
    "/generate",
    status_code=202,
    response_class=Response,
    responses={
        200: {"model": MediaJob, "description": "The job finished within ?wait."},
        202: {"model": MediaJob, "description": "The job is queued or running."},
        404: {"description": "No media route for the role/task."},
        422: {"description": "The request is invalid, or the workflow needs a missing value."},
        503: {"description": "Too many jobs wait for the provider; retry after Retry-After."},
    },
)
async def generate(
    body: GenerateImageRequest,
    request: Request,
    gateway: MediaGatewayDep,
    budgets: BudgetsDep,
    account: AccountDep,
    wait: Annotated[
        float, Query(ge=0, description="Seconds to wait for the job to finish (capped).")
    ] = 0,
) -> Response:
    """Start an image job. With `?wait=N` the answer waits up to N seconds for it to finish."""
    # before it is stored and echoed back (pydantic reads 1e999 and NaN, JSON cannot write them)
    if may_hold_nonfinite(await request.body()):  # a walk of up to a megabyte: off the loop
        await asyncio.to_thread(check_json_value, body.options, "options", floats=True)
    else:
        check_json_value(body.options, "options")
    if budgets is not None:  # a job is a request: it counts against requests per minute
        await budgets.reserve(account, requests_only=True)
    job = await gateway.submit(
        MediaRequest(**body.model_dump()), user_id=request.state.principal.user_id
    )
    if wait > 0:
        job = await gateway.jobs.wait(job.job_id, min(wait, gateway.settings.media_max_wait))
    return json_response(_job_body(job), status_code=200 if job.finished else 202)


@router.get("/jobs/{job_id}", responses={200: {"model": MediaJob}})
async def get_job(job_id: JobId, request: Request, gateway: MediaGatewayDep) -> Response:
    """A job's status (queued | running | succeeded | failed | cancelled), progress and files.
    Only its maker (or an admin) sees it; anyone else gets 404."""
    return json_response(_job_body(await gateway.jobs.get(job_id, owner=_owner(request))))


@router.delete("/jobs/{job_id}", responses={200: {"model": MediaJob}})
async def cancel_job(job_id: JobId, request: Request, gateway: MediaGatewayDep) -> Response:
    """Cancel a job; the work is stopped on the provider's server too. Only its maker (or an
    admin) may; anyone else gets 404 and the job runs on."""
    await gateway.jobs.get(job_id, owner=_owner(request))
    return json_response(_job_body(await gateway.cancel(job_id)))


# Assets are named by the sha256 of their bytes and shared by whoever made the same bytes: the
# id is only learnt from a job (now its maker's) and is no more guessable than a key.
@router.get(
    "/assets/{asset_id}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file.",
            "content": {
                mime: {"schema": {"type": "string", "format": "binary"}} for mime in EXTENSIONS
            },
        }
    },
)
async def get_asset(asset_id: AssetId, gateway: MediaGatewayDep) -> FileResponse:
    """A generated file, with its content type."""
    path, mime = gateway.assets.find(asset_id)
    return FileResponse(
        path, media_type=mime, headers={"Cache-Control": "max-age=31536000, immutable"}
    )


@router.get("/routes")
async def routes(gateway: MediaGatewayDep) -> Response:
    """The effective image routing table for the current generator mode."""
    router_ = gateway.router
    return json_response(
        {
            "generator_mode": gateway.settings.generator_mode,
            "routes": router_.table() if router_ else [],
            "workflows": gateway.workflows.names(),
        }
    )


@router.get("/providers")
async def providers(gateway: MediaGatewayDep) -> Response:
    """Each media provider routed in this mode, with a health check (checkpoints installed)."""
    named = gateway.router.models_by_endpoint() if gateway.router else {}
    results = await gateway.endpoints.report(named, HEALTH_TIMEOUT)
    return json_response({"generator_mode": gateway.settings.generator_mode, "providers": results})
