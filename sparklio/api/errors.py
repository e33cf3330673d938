"""Exception handlers: every error leaves as a JSON error body, never a stack trace.

Our own errors map to their status; a database that cannot be reached (however the driver
says so) is a 503 with Retry-After; anything else is a bug: logged once with its request id
and answered with a 500 that names that id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparklio.api.deps import services_of
from sparklio.api.responses import OPENAI_PREFIX, error_response, too_large_message
from sparklio.db.errors import is_outage, outage_error
from sparklio.exceptions import (
    DatabaseUnavailableError,
    GatewayError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)

log = logging.getLogger("sparklio.api")

#: Seconds a client should wait before retrying while the database is unreachable.
DATABASE_RETRY_AFTER = 5
#: FastAPI's detail when it cannot read a JSON body at all.
_UNPARSED_BODY = "There was an error parsing the body"
#: Modules whose exceptions come from the database (drivers and SQLAlchemy).
_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: PayloadTooLargeError.type,
}


def _error(
    request: Request,
    status: int,
    error_type: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The JSON error answer every failure uses, with the request's id (in OpenAI's format
    on the OpenAI-compatible paths)."""
    request_id = getattr(request.state, "request_id", None)
    openai = request.url.path.startswith(OPENAI_PREFIX)
    return error_response(request_id, status, error_type, message, details, headers,
                          openai=openai)  # fmt: skip


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
    return _error(request, 422, "invalid_request", message, details)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    exc.request_id = exc.request_id or getattr(request.state, "request_id", None)
    headers: dict[str, str] | None = None
    if isinstance(exc, DatabaseUnavailableError):
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
    elif isinstance(exc, ServiceUnavailableError):
        headers = {"Retry-After": "1"}
    elif isinstance(exc, TooManyRequestsError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    elif isinstance(exc, UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    error = exc.to_body()["error"]
    return _error(
        request, exc.status, error["type"], error["message"], error.get("details"), headers
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSED_BODY:
        # FastAPI's answer to a JSON body that is not UTF-8 (json.loads raises
        # UnicodeDecodeError, not JSONDecodeError): the same 422 as for any other bad JSON
        reason = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        message = f"Invalid request: the body is not valid JSON text{reason}. Send UTF-8 JSON."
        details = [{"field": "body", "problem": "not valid JSON", "type": "json_invalid"}]
        return _error(request, 422, "invalid_request", message, details)
    if exc.status_code == 413:
        message = too_large_message(services_of(request.app).settings.max_request_bytes)
    elif exc.status_code == 404:
        message = f"No such endpoint: {request.method} {request.url.path}. See /docs."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}. See /docs."
    else:
        message = str(exc.detail)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    return _error(request, exc.status_code, error_type, message, headers=exc.headers)


def database_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached: an outage error (see
    `sparklio.db.errors`) raised by SQLAlchemy or a database driver, not by a file or socket
    of our own."""
    if not is_outage(exc):
        return False
    if isinstance(exc, SQLAlchemyError):
        return True
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frame = error.__traceback__
        while frame is not None:
            module = str(frame.tb_frame.f_globals.get("__name__", ""))
            if module.startswith(_DATABASE_MODULES):
                return True
            frame = frame.tb_next
        error = error.__cause__ or error.__context__
    return False


def _outage_response(request: Request, exc: BaseException) -> Response:
    request_id = getattr(request.state, "request_id", None)
    log.warning("database unavailable on %s %s [%s]: %s: %s", request.method, request.url.path,
                request_id, type(exc).__name__, exc)  # fmt: skip
    error = outage_error(exc)
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
    return _error(request, error.status, error.type, error.message, headers=headers)


def _internal_error(request: Request, exc: BaseException) -> Response:
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unexpected error on %s %s [%s]", request.method, request.url.path, request_id, exc_info=exc
    )
    return _error(
        request,
        500,
        "internal_error",
        f"Internal error. The server log has the details under request id {request_id}.",
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    if database_outage(exc):
        return _outage_response(request, exc)
    return _internal_error(request, exc)


class CatchAllMiddleware:
    """The last line: an exception no handler took becomes a JSON 500 (or the database's 503),
    logged once here. Starlette's own catch-all would log it, then re-raise it for the server
    to log again (and for an in-process test client to raise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # too late for an error body: the server closes the connection
                raise
            request = Request(scope)
            if database_outage(exc):
                response = _outage_response(request, exc)
            else:
                response = _internal_error(request, exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Map our exception tree, FastAPI's and Starlette's errors to JSON error bodies; a
    database outage to a 503 and anything else to a 500 (CatchAllMiddleware)."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    # OSError covers TimeoutError and ConnectionError: a refused or timed-out connect
    for error in (SQLAlchemyError, OSError):
        app.add_exception_handler(error, _database_error)
    app.add_middleware(CatchAllMiddleware)
