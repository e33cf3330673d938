"""The body of every error answer: `{"error": {"type", "message", "details"}, "request_id"}`.

`type` names the class in `sparklio.exceptions` that the clients raise again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    """What went wrong."""

    type: str = Field(
        description="A stable name to branch on: invalid_request, unauthorized, forbidden, "
        "not_found, payload_too_large, too_many_requests, database_unavailable, "
        "provider_error, internal_error, ..."
    )
    message: str = Field(description="What went wrong and what to do about it.")
    details: Any = Field(
        default=None, description="Where applicable: the fields at fault, the attempts made."
    )


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo
    request_id: str | None = Field(
        description="The request's id (also in the X-Request-ID header): the server log has it."
    )


class OpenAIErrorInfo(BaseModel):
    """What went wrong, as OpenAI's API says it."""

    message: str = Field(description="What went wrong and what to do about it.")
    type: str = Field(
        description="OpenAI's error type: invalid_request_error, authentication_error, "
        "permission_error, rate_limit_error, server_error."
    )
    param: str | None = Field(default=None, description="The request field at fault, if one.")
    code: str | None = Field(default=None, description="Sparklio's error type (see ErrorInfo).")
    details: Any = Field(
        default=None, description="Where applicable: the fields at fault, the attempts made."
    )


class OpenAIErrorBody(BaseModel):
    """The body of every error answer of the OpenAI-compatible API (paths under /v1/)."""

    error: OpenAIErrorInfo
    request_id: str | None = Field(
        default=None,
        description="The request's id (also in the X-Request-ID header): the server log has it.",
    )


__all__ = ["ErrorBody", "ErrorInfo", "OpenAIErrorBody", "OpenAIErrorInfo"]
