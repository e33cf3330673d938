"""What every agent shares: the record of a step, and one typed call through the gateway.

Agents reach models only through the gateway clients: no provider SDK, no HTTP library, no
model name. What a step cost (provider, model, latency, tokens, USD) comes back in its record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from sparklio.exceptions import AgentError, GatewayError
from sparklio.services.clients.llm_client import LLMGatewayClient

M = TypeVar("M", bound=BaseModel)


class StepRecord(BaseModel):
    """How one step of the pipeline went."""

    step: str
    role: str
    task: str
    provider: str = ""
    model: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: what the gateway priced the call at (its routing file's prices; 0 for local models)
    cost_usd: float = 0.0
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    fallback: bool = False
    repaired: bool = False


async def ask(
    llm: LLMGatewayClient,
    step: str,
    role: str,
    task: str,
    payload: dict[str, Any],
    schema: type[M],
    json_schema: dict[str, Any] | None = None,
    on_delta: Callable[[str], None] | None = None,
) -> tuple[M, StepRecord]:
    """One typed call: the validated answer and its record; AgentError naming the step.
    With `on_delta`, the answer streams and each piece is handed to it as it is written."""
    try:
        result = await llm.generate_result(role=role, task=task, payload=payload, schema=schema,
                                           json_schema=json_schema,
                                           on_delta=on_delta)  # fmt: skip
    except GatewayError as exc:
        raise AgentError(step, exc) from exc
    meta, usage = result.response.meta, result.response.usage
    record = StepRecord(
        step=step,
        role=role,
        task=task,
        provider=result.response.provider,
        model=result.response.model,
        latency_ms=float(meta.get("latency_ms", 0.0)),
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        cost_usd=float(meta.get("cost_usd", 0.0)),
        attempts=list(meta.get("attempts", [])),
        fallback=bool(meta.get("fallback", False)),
        repaired=bool(meta.get("repaired", False)),
    )
    return result.data, record
