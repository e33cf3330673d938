"""Exception handlers: every error leaves as a JSON error body, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from sparklio.api.middleware import too_large_message
from sparklio.exceptions import (
    GatewayError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)

log = logging.getLogger("sparklio.api")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: PayloadTooLargeError.type,
}


def error_response(
    request: Request,
    status: int,
    error_type: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The JSON error body every failure uses."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = details
    body = {"error": error, "request_id": getattr(request.state, "request_id", None)}
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    if err.get("type") == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON ({reason})"
    if err.get("type") == "extra_forbidden":
        return f"{where}: unknown field; remove it or check its spelling"
    if err.get("type") == "missing":
        return f"{where or 'body'}: field required"
    return f"{where or 'body'}: {err.get('msg', 'invalid')}"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    problems = [_describe(e) for e in errors]
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "problem": e.get("msg"),
            "type": e.get("type"),
        }
        for e in errors
    ]
    message = "Invalid request: " + "; ".join(problems) + ". See /docs for the request schema."
    return error_response(request, 422, "invalid_request", message, details)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    exc.request_id = exc.request_id or getattr(request.state, "request_id", None)
    headers: dict[str, str] | None = None
    if isinstance(exc, ServiceUnavailableError):
        headers = {"Retry-After": "1"}
    elif isinstance(exc, TooManyRequestsError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    elif isinstance(exc, UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    error = exc.to_body()["error"]
    return error_response(
        request, exc.status, error["type"], error["message"], error.get("details"), headers
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:
        message = too_large_message(request.app.state.settings.max_request_bytes)
    elif exc.status_code == 404:
        message = f"No such endpoint: {request.method} {request.url.path}. See /docs."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}. See /docs."
    else:
        message = str(exc.detail)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, error_type, message, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unexpected error on %s %s [%s]", request.method, request.url.path, request_id, exc_info=exc
    )
    return error_response(
        request,
        500,
        "internal_error",
        f"Internal error. The server log has the details under request id {request_id}.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map our exception tree, FastAPI's and Starlette's errors to JSON error bodies."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
