"""The OpenAPI document as the server behaves: its security scheme, every error status an
operation can answer, and the one error body they all use.

FastAPI documents a 422 with its own `HTTPValidationError` body, which this server never sends,
and knows nothing of the bearer credentials checked inside dependencies; this completes the
document FastAPI generates, once, the first time it is asked for.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sparklio.api.responses import OPENAI_PREFIX
from sparklio.wire.errors import ErrorBody, ErrorInfo, OpenAIErrorBody

#: Operations anyone may call, without credentials.
PUBLIC = frozenset({
    ("get", "/health"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/session"),
    ("delete", "/api/v1/auth/session"),
})  # fmt: skip
SECURITY_SCHEME = "bearer"
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
#: the OpenAI-compatible API's errors (paths under /v1/) are in OpenAI's format
OPENAI_ERROR_REF = {"$ref": "#/components/schemas/OpenAIErrorBody"}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}


#: status -> (description, headers) for the statuses added to operations that can answer them
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "No credentials, or ones that are not valid (unknown key, expired token).",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: ("Valid credentials that may not do this: a revoked key, an inactive user, "
          "a member on an admin's endpoint.", {}),
    404: ("Nothing with that id (or not yours).", {}),
    413: ("The body is larger than MAX_REQUEST_BYTES.", {}),
    422: ("The request is not valid: the message names the field and how to fix it.", {}),
    429: ("Too many attempts; wait Retry-After seconds.", RETRY_AFTER),
    500: ("A bug: the message names the request id to find in the server log.", {}),
    503: ("The database (or the provider's queue) cannot take the call now; retry after "
          "Retry-After seconds.", RETRY_AFTER),
}  # fmt: skip


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) return the completed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            complete(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def complete(schema: dict[str, Any]) -> None:
    """Add the security scheme, the error statuses and the error body to `schema`."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas["ErrorBody"] = body
    openai = OpenAIErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(openai.pop("$defs", {}))
    schemas["OpenAIErrorBody"] = openai
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (sk-spk-..., from POST /api/v1/auth/api-keys or "
            "`sparklio create-test-users`) or a token from POST /api/v1/auth/login. A browser "
            "may send the studio's session cookie instead (POST /api/v1/auth/session), with "
            "the X-CSRF-Token header on a POST, PUT, PATCH or DELETE.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(method, path, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses = {500}
    if (method, path) not in PUBLIC:
        operation["security"] = [{SECURITY_SCHEME: []}]
        statuses |= {401, 403, 503}
    if path == "/api/v1/auth/login" or (method, path) == ("post", "/api/v1/auth/session"):
        statuses |= {401, 429, 503}
    if (method, path) == ("delete", "/api/v1/auth/session"):
        statuses |= {403, 503}  # a live session's logout without its CSRF token
    if "requestBody" in operation:
        statuses |= {413, 422}
    parameters = operation.get("parameters", [])
    if parameters:
        statuses.add(422)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if (method, path) == ("get", "/health"):
        statuses = set()  # liveness: it answers, or the server is not there
    for status in sorted(statuses):
        description, headers = _ERRORS[status]
        responses.setdefault(str(status), {"description": description})
        if headers:
            responses[str(status)].setdefault("headers", headers)
    ref = OPENAI_ERROR_REF if path.startswith(OPENAI_PREFIX) else ERROR_REF
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = {"application/json": {"schema": ref}}


__all__ = ["ErrorBody", "ErrorInfo", "complete", "install_openapi"]
