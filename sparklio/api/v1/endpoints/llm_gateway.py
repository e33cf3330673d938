"""HTTP endpoints of the LLM Gateway: generate, routes, providers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from sparklio.api.budgets import AccountDep
from sparklio.api.deps import GatewayDep
from sparklio.api.responses import HEALTH_TIMEOUT, event_stream, json_response
from sparklio.services.jsonvalues import check_json_value, may_hold_nonfinite
from sparklio.services.llm.options import OPTIONS_SCHEMA
from sparklio.services.llm.providers.base import LLMProviderResponse
from sparklio.wire.llm import GenerateRequest

router = APIRouter(prefix="/llm", tags=["llm"])


# The body is parsed by pydantic straight from bytes (no dependency injection, no stdlib json):
# this route carries every model call, and FastAPI's own body handling cost ~15 % of its time.
def _generate_body_schema() -> dict[str, Any]:
    schema = GenerateRequest.model_json_schema()
    options = schema["properties"]["options"]
    # the options every provider understands, with their types and ranges (checked on a call)
    options["anyOf"] = [OPTIONS_SCHEMA, {"type": "null"}]
    return schema


_GENERATE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _generate_body_schema()}},
}


def _check_floats(body: GenerateRequest) -> None:
    for name in ("payload", "output_schema", "options"):
        check_json_value(getattr(body, name), name, floats=True)


@router.post(
    "/generate",
    response_class=Response,
    openapi_extra={"requestBody": _GENERATE_BODY},
    responses={
        200: {
            "model": LLMProviderResponse,
            "description": "The answer and what it took; with `stream: true`, a "
            "text/event-stream of `delta` events, then `done` (the whole answer) or `error`.",
            "content": {
                "text/event-stream": {
                    "schema": {  # one server-sent event; `data` is the event's JSON
                        "type": "object",
                        "properties": {
                            "event": {"enum": ["delta", "done", "error"]},
                            "data": {"type": "string"},
                        },
                        "required": ["event", "data"],
                    }
                }
            },
        },
        404: {"description": "No route for the role/task."},
        413: {"description": "The body is larger than MAX_REQUEST_BYTES."},
        422: {"description": "The request or its output_schema is invalid."},
        502: {"description": "The provider failed or its output did not match the schema."},
        503: {"description": "Every candidate is busy; retry after Retry-After seconds."},
        504: {"description": "The provider did not answer in time."},
    },
)
async def generate(request: Request, gateway: GatewayDep, account: AccountDep) -> Response:
    """Route, prompt and call a model; the answer's `meta` says how it was made."""
    raw = await request.body()
    try:
        body = GenerateRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    if may_hold_nonfinite(raw):  # pydantic reads NaN and 1e999; JSON cannot write them back
        await asyncio.to_thread(_check_floats, body)  # a walk of up to a megabyte: off the loop
    call = gateway.open_stream if body.stream else gateway.generate
    result = await call(
        body.role,
        body.task,
        body.payload,
        mode=body.mode,
        options=body.options,
        output_schema=body.output_schema,
        request_id=request.state.request_id,
        user_id=request.state.principal.user_id,
        account=account,
    )
    if isinstance(result, LLMProviderResponse):
        return json_response(result.model_dump())
    # the first piece came (a failure before it was an ordinary error answer, above)
    return event_stream(result)


@router.get("/routes")
async def routes(gateway: GatewayDep) -> Response:
    """The effective routing table for the current generator mode."""
    router_ = gateway.router
    return json_response(
        {
            "generator_mode": router_.mode,
            "routing_file": str(router_.path),
            "tasks": router_.catalogue,
            "routes": router_.table(),
        }
    )


@router.get("/providers")
async def providers(gateway: GatewayDep) -> Response:
    """Each endpoint the routing file names or declares: its kind and address, a health
    check with its models, and its load (circuit, calls in flight and waiting)."""
    named = gateway.routing.models_by_endpoint()
    results = await gateway.endpoints.report(named, HEALTH_TIMEOUT)
    return json_response({"generator_mode": gateway.router.mode, "providers": results})
