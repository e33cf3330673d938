"""HTTP endpoints of the LLM Gateway: generate, routes, providers."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from sparklio.api.deps import GatewayDep
from sparklio.api.responses import HEALTH_TIMEOUT, json_response
from sparklio.exceptions import SparklioError
from sparklio.services.jsonvalues import check_json_value, may_hold_nonfinite
from sparklio.services.llm.options import OPTIONS_SCHEMA
from sparklio.services.llm.providers.base import LLMProviderResponse, ProviderHealth
from sparklio.services.llm.routing import NAME_PATTERN

router = APIRouter(prefix="/llm", tags=["llm"])


class GenerateRequest(BaseModel):
    """One call: who asks, what for, with which data, and the answer's shape."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "copywriter",
                    "task": "channel_copy",
                    "payload": {"product": "Dawon green tea", "channel": "instagram"},
                    "output_schema": {
                        "type": "object",
                        "properties": {"headline": {"type": "string", "maxLength": 30}},
                        "required": ["headline"],
                    },
                }
            ]
        },
    )

    role: str = Field(pattern=NAME_PATTERN, description="Who asks, e.g. 'copywriter'.")
    task: str = Field(pattern=NAME_PATTERN, description="What for, e.g. 'channel_copy'.")
    payload: dict[str, Any] = Field(description="The data the prompt is built from.")
    mode: Literal["json", "text"] = Field(default="json", description="Output mode.")
    options: dict[str, Any] | None = Field(
        default=None, description="temperature, max_tokens, seed, timeout, provider extras."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the json answer must validate against."
    )


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
        200: {"model": LLMProviderResponse, "description": "The answer and what it took."},
        404: {"description": "No route for the role/task."},
        413: {"description": "The body is larger than MAX_REQUEST_BYTES."},
        422: {"description": "The request or its output_schema is invalid."},
        502: {"description": "The provider failed or its output did not match the schema."},
        503: {"description": "Every candidate is busy; retry after Retry-After seconds."},
        504: {"description": "The provider did not answer in time."},
    },
)
async def generate(request: Request, gateway: GatewayDep) -> Response:
    """Route, prompt and call a model; the answer's `meta` says how it was made."""
    raw = await request.body()
    try:
        body = GenerateRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    if may_hold_nonfinite(raw):  # pydantic reads NaN and 1e999; JSON cannot write them back
        await asyncio.to_thread(_check_floats, body)  # a walk of up to a megabyte: off the loop
    response = await gateway.generate(
        body.role,
        body.task,
        body.payload,
        mode=body.mode,
        options=body.options,
        output_schema=body.output_schema,
        request_id=request.state.request_id,
        user_id=request.state.principal.user_id,
    )
    return json_response(response.model_dump())


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
    """Each provider the routing file names, with a health check and its models."""
    named = (gateway.routing or gateway.router).models_by_provider()

    async def check(name: str, models: list[str]) -> dict[str, Any]:
        try:
            provider = gateway.registry.get(name)
            async with asyncio.timeout(HEALTH_TIMEOUT):
                health = await provider.health(models)
        except TimeoutError:
            health = ProviderHealth(available=False, message=f"no answer in {HEALTH_TIMEOUT:g} s")
        except SparklioError as exc:
            health = ProviderHealth(available=False, message=str(exc))
        return {"name": name, **health.model_dump(), "models_named": models}

    results = await asyncio.gather(*(check(n, m) for n, m in named.items()))
    return json_response({"generator_mode": gateway.router.mode, "providers": results})
