"""What the gateway clients share: one pooled httpx client, auth, and errors turned back into
the exceptions the gateway raised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from sparklio.exceptions import (
    GatewayConnectionError,
    GatewayError,
    GatewayResponseError,
    ProviderError,
    UpstreamTimeoutError,
    error_class_for,
)
from sparklio.services.clients.settings import load_client_settings
from sparklio.wire.jsonvalues import check_json_value

M = TypeVar("M", bound=BaseModel)

#: Model calls can be slow (a cold model on the desktop GPU); connecting should not be.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class GatewayHTTPClient:
    """A client for the gateway's HTTP API. Base URL from GATEWAY_BASE_URL and key from
    GATEWAY_API_KEY unless given; `transport=httpx.ASGITransport(app=...)` runs in-process."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if base_url is None or api_key is None:
            settings = load_client_settings()
            base_url = base_url or settings.gateway_base_url
            api_key = api_key if api_key is not None else settings.gateway_api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def health(self) -> dict[str, Any]:
        """The gateway's /health answer."""
        return await self._request("GET", "/health")

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send a request and return its JSON answer, or raise the error it stands for;
        GatewayResponseError for an answer that is not JSON."""
        response = await self._send(method, path, body, request_id, params)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._not_ours(response, "a body that is not JSON") from None

    def _model(self, model: type[M], data: Any, response_of: str) -> M:
        """`data` as `model`; GatewayResponseError when the JSON is not of that shape."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise GatewayResponseError(
                f"The gateway at {self.base_url} answered {response_of} with JSON that is not a "
                f"{model.__name__} ({exc.error_count()} problems, first: "
                f"{exc.errors()[0]['msg']}); is GATEWAY_BASE_URL a Sparklio gateway of this "
                "version?"
            ) from None

    def _not_ours(self, response: httpx.Response, what: str) -> GatewayResponseError:
        request = response.request
        kind = response.headers.get("content-type", "no content type")
        start = response.content[:200].decode("utf-8", "replace")
        return GatewayResponseError(
            f"The gateway at {self.base_url} answered {request.method} {request.url.path} "
            f"({response.status_code}, {kind}) with {what}: {start!r}. Is GATEWAY_BASE_URL the "
            "Sparklio gateway, and not a proxy or another server?",
            request_id=response.headers.get("x-request-id"),
        )

    def _unreachable(
        self, exc: httpx.TransportError, request_id: str | None, *, streaming: bool
    ) -> GatewayError:
        """What a failure to reach the gateway (or to hear it out) stands for."""
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeoutError(
                f"The gateway at {self.base_url} did not answer in time ({type(exc).__name__}).",
                request_id=request_id,
            )
        if streaming:
            return GatewayConnectionError(
                f"Lost the Sparklio gateway at {self.base_url} mid-stream or before: {exc}.",
                request_id=request_id,
            )
        return GatewayConnectionError(
            f"Cannot reach the Sparklio gateway at {self.base_url}: {exc}. Start it with "
            "`make run` (or `sparklio serve`), or set GATEWAY_BASE_URL.",
            request_id=request_id,
        )

    async def _request_bytes(self, method: str, path: str) -> bytes:
        """Send a request and return its raw body (a file), or raise the error it stands for."""
        return (await self._send(method, path)).content

    @asynccontextmanager
    async def _streaming(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request whose answer streams; the error it stands for when it is not a
        success (read whole: an error answer is JSON)."""
        headers = {"Accept": "text/event-stream", **(headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if request_id:
            headers["X-Request-ID"] = request_id
        content = _dumps(body) if body is not None else None
        try:
            async with self._http.stream(
                method, path, content=content, headers=headers
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise _error_from(response)
                yield response
        except httpx.TransportError as exc:  # timeouts included
            raise self._unreachable(exc, request_id, streaming=True) from None

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if request_id:
            headers["X-Request-ID"] = request_id
        content = _dumps(body) if body is not None else None
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TransportError as exc:  # timeouts included
            raise self._unreachable(exc, request_id, streaming=False) from None
        if response.is_success:
            return response
        raise _error_from(response)


def _dumps(body: dict[str, Any]) -> bytes:
    """The request body; the gateway's own 422 (naming the field) for a value JSON tools
    cannot take, such as an integer beyond 64 bits."""
    try:
        return orjson.dumps(body)
    except TypeError:
        for name, value in body.items():
            check_json_value(value, name)
        raise


def _error_from(response: httpx.Response) -> GatewayError:
    """The exception an error response stands for, rebuilt from its JSON body."""
    request_id = response.headers.get("x-request-id")
    try:
        body = orjson.loads(response.content)
        error = body["error"]
        error_type, message = error.get("type"), str(error["message"])
        details = error.get("details")
        request_id = body.get("request_id") or request_id
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        error_type, details = None, None
        message = f"HTTP {response.status_code}: {response.text[:500] or response.reason_phrase}"
    cls = error_class_for(error_type, response.status_code)
    kwargs: dict[str, Any] = {}
    if issubclass(cls, ProviderError) and isinstance(details, dict):
        kwargs = {k: details[k] for k in ("provider", "model", "outcome") if k in details}
    return cls(
        message, details=details, request_id=request_id, status=response.status_code, **kwargs
    )
