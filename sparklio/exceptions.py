"""Every error Sparklio raises, in one tree.

```
SparklioError                        anything Sparklio raises on purpose
├── ConfigError                      bad settings, routing file or prompt folder (at start)
│   └── ProviderUnavailableError     (services.providers) no such provider, or not installed
├── AgentError                       a pipeline step failed; has .step and the gateway's .error
└── GatewayError                     a gateway call failed; has .status, .message, .request_id
    ├── InvalidRequestError          422  the request is malformed (field, JSON, schema)
    │   ├── PayloadTooLargeError     413  the body is over MAX_REQUEST_BYTES
    │   └── BriefError               (CLI, agents) the brief cannot be read
    ├── UnauthorizedError            401  no credentials, or ones that are not valid
    ├── ForbiddenError               403  valid credentials that may not do this (revoked, inactive)
    ├── TooManyRequestsError         429  slow down (e.g. failed logins); has .retry_after
    ├── NotFoundError                404  no such job or asset
    │   └── RouteNotFoundError       404  no rule and no default for (role, task)
    ├── ServiceUnavailableError      503  the gateway cannot take the call now
    │   ├── DatabaseUnavailableError 503  the database cannot be reached; retry later
    │   └── GatewayConnectionError   503  (client side) the gateway could not be reached
    ├── GatewayResponseError         502  (client side) the answer is not the gateway's JSON
    └── ProviderError                502  the provider failed; has .provider, .model
        ├── OutputValidationError    502  the answer does not match the output schema
        ├── InvalidMediaError        502  a media provider's output is not an image we store
        └── UpstreamTimeoutError     504  the provider did not answer in time
```

The HTTP API maps each class to its status code and an error body
`{"error": {"type", "message", "details"}, "request_id"}`, written by `error_body` alone;
`LLMGatewayClient` turns that body back into the same class, so callers catch the same
exceptions in-process and over HTTP. An exception Sparklio defines outside this tree is
internal control flow that never reaches a user (tests/test_error_tree.py lists them).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "BriefError",
    "ConfigError",
    "DatabaseUnavailableError",
    "ForbiddenError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayResponseError",
    "InvalidMediaError",
    "InvalidRequestError",
    "NotFoundError",
    "OutputValidationError",
    "PayloadTooLargeError",
    "ProviderError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
    "SparklioError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UpstreamTimeoutError",
    "error_body",
    "error_class_for",
]


def error_body(
    error_type: str, message: str, details: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    """The body of every error answer, `{"error": {"type", "message", "details"},
    "request_id"}`; `details` is left out when there are none."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error, "request_id": request_id}


class SparklioError(Exception):
    """Base of every error Sparklio raises on purpose."""


class ConfigError(SparklioError):
    """Settings, the routing file or the prompts folder are wrong; raised at start."""


class GatewayError(SparklioError):
    """A gateway call failed. `status` is the HTTP status the API answers with."""

    status: int = 500
    type: ClassVar[str] = "gateway_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.request_id = request_id
        if status is not None:
            self.status = status

    def to_body(self) -> dict[str, Any]:
        """The JSON error body the HTTP API sends."""
        return error_body(self.type, self.message, self.details, self.request_id)

    def __str__(self) -> str:
        return self.message


class AgentError(SparklioError):
    """A pipeline step failed; says which step, and the gateway's error."""

    def __init__(self, step: str, error: GatewayError) -> None:
        super().__init__(f"step {step} failed: {error.type} ({error.status}): {error.message}")
        self.step = step
        self.error = error


class InvalidRequestError(GatewayError):
    """The request is malformed: a field is missing or wrong, or the schema is not a schema."""

    status = 422
    type = "invalid_request"


class BriefError(InvalidRequestError):
    """A campaign brief that cannot be read (no such file, empty, not YAML or JSON, wrong
    keys); the message says why."""


class PayloadTooLargeError(InvalidRequestError):
    """The request body is larger than the gateway accepts."""

    status = 413
    type = "payload_too_large"


class NotFoundError(GatewayError):
    """What the request names (a job, an asset) does not exist."""

    status = 404
    type = "not_found"


class ConflictError(GatewayError):
    """The request does not fit the resource's state now (e.g. a review of a campaign that
    is not awaiting one)."""

    status = 409
    type = "conflict"


class UnauthorizedError(GatewayError):
    """The request has no credentials, or ones that are not valid (bad, expired)."""

    status = 401
    type = "unauthorized"


class ForbiddenError(GatewayError):
    """The credentials are valid but may not be used (a revoked key, an inactive user)."""

    status = 403
    type = "forbidden"


class TooManyRequestsError(GatewayError):
    """Too many attempts (e.g. failed logins); try again after `retry_after` seconds."""

    status = 429
    type = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float = 60.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RouteNotFoundError(NotFoundError):
    """No routing rule and no default covers the (role, task)."""

    type = "route_not_found"


class ServiceUnavailableError(GatewayError):
    """The gateway cannot take the call now; retry later."""

    status = 503
    type = "service_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database cannot be reached (down, restarting, refusing connections)."""

    type = "database_unavailable"


class GatewayConnectionError(ServiceUnavailableError):
    """The client could not reach the gateway at all (connection refused, DNS, timeout)."""

    type = "gateway_unreachable"


class GatewayResponseError(GatewayError):
    """The client got an answer that is not what the gateway sends: a body that is not JSON
    or not the expected shape (e.g. a proxy's error page, or another server at the URL)."""

    status = 502
    type = "invalid_gateway_response"


class ProviderError(GatewayError):
    """The provider failed to give a usable answer."""

    status = 502
    type = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        outcome: str = "error",
        retryable: bool = False,
        retry_after: float | None = None,
        raw: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.provider = provider
        self.model = model
        #: what happened, as recorded in meta.attempts: timeout, http_503, invalid_json, ...
        self.outcome = outcome
        #: whether the same call may succeed if tried again (busy, rate-limited, cut off)
        self.retryable = retryable
        #: seconds the upstream asked us to wait (Retry-After), if it said
        self.retry_after = retry_after
        #: the model's answer, when there was one (for a JSON repair attempt)
        self.raw = raw

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        where = {"provider": self.provider, "model": self.model, "outcome": self.outcome}
        details = self.details if isinstance(self.details, dict) else {}
        body["error"]["details"] = {**where, **details}
        return body


class OutputValidationError(ProviderError):
    """The provider answered, but the answer does not match the requested output schema."""

    type = "output_invalid"


class InvalidMediaError(ProviderError):
    """A media provider's output is not an image the asset store keeps (PNG, JPEG, WebP or
    GIF): not an image at all, or one of another type."""

    type = "media_invalid"

    def __init__(self, message: str, *, outcome: str = "invalid_image", **kwargs: Any) -> None:
        super().__init__(message, outcome=outcome, **kwargs)


class UpstreamTimeoutError(ProviderError):
    """The provider did not answer within its timeout."""

    status = 504
    type = "upstream_timeout"


_BY_TYPE: dict[str, type[GatewayError]] = {
    cls.type: cls
    for cls in (
        GatewayError,
        InvalidRequestError,
        PayloadTooLargeError,
        NotFoundError,
        RouteNotFoundError,
        UnauthorizedError,
        ForbiddenError,
        TooManyRequestsError,
        ServiceUnavailableError,
        DatabaseUnavailableError,
        GatewayConnectionError,
        ProviderError,
        OutputValidationError,
        InvalidMediaError,
        UpstreamTimeoutError,
    )
}

_BY_STATUS: dict[int, type[GatewayError]] = {
    422: InvalidRequestError,
    413: PayloadTooLargeError,
    404: NotFoundError,
    401: UnauthorizedError,
    403: ForbiddenError,
    429: TooManyRequestsError,
    503: ServiceUnavailableError,
    502: ProviderError,
    504: UpstreamTimeoutError,
}


def error_class_for(error_type: str | None, status: int) -> type[GatewayError]:
    """The exception class for an error body's `type`, else for the HTTP status."""
    if error_type and error_type in _BY_TYPE:
        return _BY_TYPE[error_type]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return InvalidRequestError
    return GatewayError
