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

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from sparklio.exceptions import (
    GatewayError,
    GatewayResponseError,
    OutputValidationError,
    ProviderError,
    error_class_for,
)
from sparklio.services.clients.base import GatewayHTTPClient
from sparklio.wire.llm import (
    LLMProviderResponse,
    OutputMode,
    StreamDelta,
    StreamDone,
    StreamFailed,
)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class GatewayResult(Generic[M]):
    """A typed answer with the response it came in (provider, model, usage, meta)."""

    data: M
    response: LLMProviderResponse


class LLMGatewayClient(GatewayHTTPClient):
    """Client for the LLM Gateway's HTTP API."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, transport)
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}

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
        json_schema: dict[str, Any] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> GatewayResult[M]:
        """A typed call that also returns the response, for callers that report its meta.

        `json_schema` sends a stricter schema than the model's own (e.g. a channel's length
        limits); the answer is still validated into `schema`. With `on_delta` the answer
        streams, and each piece (raw JSON text) is handed to it as the model writes it.
        """
        if json_schema is None:
            json_schema = self._schemas.get(schema)
            if json_schema is None:
                json_schema = self._schemas[schema] = schema.model_json_schema()
        if on_delta is None:
            response = await self._generate(
                role, task, payload, json_schema, "json", options, request_id
            )
        else:
            response = await self._streamed(
                role, task, payload, json_schema, options, request_id, on_delta
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
        return self._model(LLMProviderResponse, data, "POST /api/v1/llm/generate")

    async def _streamed(
        self,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: dict[str, Any] | None,
        options: dict[str, Any] | None,
        request_id: str | None,
        on_delta: Callable[[str], None],
    ) -> LLMProviderResponse:
        async for event in self.stream(role=role, task=task, payload=payload, schema=schema,
                                       options=options, request_id=request_id):  # fmt: skip
            if isinstance(event, StreamDone):
                return event.response
            on_delta(event.text)
        raise AssertionError("stream() ends with its done event or raises")  # pragma: no cover

    async def stream(
        self,
        *,
        role: str,
        task: str,
        payload: dict[str, Any],
        schema: dict[str, Any] | None = None,
        mode: OutputMode = "json",
        options: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """Ask the gateway and follow the answer as the model writes it: `StreamDelta`s
        (text pieces; raw JSON text in json mode), then one `StreamDone` with the whole
        LLMProviderResponse. A failure before the first piece raises like `generate`; a
        stream that breaks after it raises the error it ended with (a ProviderError naming
        provider, model and outcome), never a silent end. Leaving the loop early closes the
        connection, which cancels the upstream call."""
        body: dict[str, Any] = {"role": role, "task": task, "payload": payload, "mode": mode,
                                "stream": True}  # fmt: skip
        if options:
            body["options"] = options
        if schema is not None:
            body["output_schema"] = schema
        where = "POST /api/v1/llm/generate (stream)"
        async with self._streaming("POST", "/api/v1/llm/generate", body, request_id) as response:
            ended = False
            async for name, data in server_sent_events(response.aiter_lines()):
                if name == "delta":
                    yield self._model(StreamDelta, data, where)
                elif name == "done":
                    ended = True
                    yield self._model(StreamDone, data, where)
                elif name == "error":
                    raise stream_error(self._model(StreamFailed, data, where), response)
            if not ended:
                raise GatewayResponseError(
                    f"The gateway at {self.base_url} ended the stream without its final event.",
                    request_id=response.headers.get("x-request-id"),
                )

    async def routes(self) -> dict[str, Any]:
        """The effective routing table."""
        return await self._request("GET", "/api/v1/llm/routes")

    async def providers(self) -> dict[str, Any]:
        """The providers the routing file names, with their health."""
        return await self._request("GET", "/api/v1/llm/providers")


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """(event name, parsed data) for each event of a `text/event-stream`."""
    name, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield name, orjson.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def stream_error(failed: StreamFailed, response: httpx.Response) -> GatewayError:
    """The exception a stream's error event stands for."""
    error = failed.error
    found = error.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    status = error.get("status")
    cls = error_class_for(error.get("type"), status if isinstance(status, int) else 502)
    kwargs: dict[str, Any] = {}
    if issubclass(cls, ProviderError):
        kwargs = {k: details[k] for k in ("provider", "model", "outcome") if k in details}
    return cls(str(error.get("message", "the stream failed")), details=details,
               request_id=response.headers.get("x-request-id"), **kwargs)  # fmt: skip
