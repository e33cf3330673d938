"""LLMGatewayClient: how agents reach models. The only way.

```python
async with LLMGatewayClient() as llm:
    brief = await llm.generate(role="brief", task="analyze", payload={...}, schema=Brief)
```

It speaks to the gateway's HTTP API over one pooled `httpx.AsyncClient`. Pass
`transport=httpx.ASGITransport(app=create_app())` to run the gateway in-process, with no
server. Error bodies come back as the same exceptions the gateway raised (see
`sparklio.exceptions`), carrying status, message and request id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from sparklio.core.config import load_settings
from sparklio.exceptions import (
    GatewayConnectionError,
    GatewayError,
    OutputValidationError,
    ProviderError,
    UpstreamTimeoutError,
    error_class_for,
)
from sparklio.services.llm.providers.base import LLMProviderResponse, OutputMode

M = TypeVar("M", bound=BaseModel)

#: Model calls can be slow (a cold model on the desktop GPU); connecting should not be.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


@dataclass(frozen=True)
class GatewayResult(Generic[M]):
    """A typed answer with the response it came in (provider, model, usage, meta)."""

    data: M
    response: LLMProviderResponse


class LLMGatewayClient:
    """Client for the LLM Gateway's HTTP API."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if base_url is None or api_key is None:
            settings = load_settings()
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
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}

    async def __aenter__(self) -> LLMGatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @overload
    async def generate(
        self,
        *,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: type[M],
        mode: OutputMode = "json",
        options: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> M: ...

    @overload
    async def generate(
        self,
        *,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: dict[str, Any] | None = None,
        mode: OutputMode = "json",
        options: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> LLMProviderResponse: ...

    async def generate(
        self,
        *,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: type[BaseModel] | dict[str, Any] | None = None,
        mode: OutputMode = "json",
        options: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> BaseModel | LLMProviderResponse:
        """Ask the gateway. With a pydantic model as `schema`, returns a validated instance;
        otherwise the whole LLMProviderResponse."""
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            result = await self.generate_result(
                role=role,
                task=task,
                payload=payload,
                schema=schema,
                options=options,
                request_id=request_id,
            )
            return result.data
        return await self._generate(role, task, payload, schema, mode, options, request_id)

    async def generate_result(
        self,
        *,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: type[M],
        options: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> GatewayResult[M]:
        """A typed call that also returns the response, for callers that report its meta."""
        json_schema = self._schemas.get(schema)
        if json_schema is None:
            json_schema = self._schemas[schema] = schema.model_json_schema()
        response = await self._generate(
            role, task, payload, json_schema, "json", options, request_id
        )
        try:
            data = schema.model_validate(response.output)
        except ValidationError as exc:
            raise OutputValidationError(
                f"{response.provider}/{response.model} answered, but the output is not a valid "
                f"{schema.__name__}: {exc}",
                provider=response.provider,
                model=response.model,
                outcome="schema_invalid",
                request_id=response.meta.get("request_id"),
            ) from None
        return GatewayResult(data=data, response=response)

    async def _generate(
        self,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: dict[str, Any] | None,
        mode: OutputMode,
        options: dict[str, Any] | None,
        request_id: str | None,
    ) -> LLMProviderResponse:
        body: dict[str, Any] = {"role": role, "task": task, "payload": payload, "mode": mode}
        if options:
            body["options"] = options
        if schema is not None:
            body["output_schema"] = schema
        data = await self._request("POST", "/api/v1/llm/generate", body, request_id)
        return LLMProviderResponse.model_validate(data)

    async def routes(self) -> dict[str, Any]:
        """The effective routing table."""
        return await self._request("GET", "/api/v1/llm/routes")

    async def providers(self) -> dict[str, Any]:
        """The providers the routing file names, with their health."""
        return await self._request("GET", "/api/v1/llm/providers")

    async def health(self) -> dict[str, Any]:
        """The gateway's /health answer."""
        return await self._request("GET", "/health")

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if request_id:
            headers["X-Request-ID"] = request_id
        try:
            response = await self._http.request(
                method,
                path,
                content=orjson.dumps(body) if body is not None else None,
                headers=headers,
            )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(
                f"The gateway at {self.base_url} did not answer in time ({type(exc).__name__}).",
                request_id=request_id,
            ) from None
        except httpx.TransportError as exc:
            raise GatewayConnectionError(
                f"Cannot reach the Sparklio gateway at {self.base_url}: {exc}. Start it with "
                "`make run` (or `sparklio serve`), or set GATEWAY_BASE_URL.",
                request_id=request_id,
            ) from None
        if response.is_success:
            return orjson.loads(response.content)
        raise _error_from(response)


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
