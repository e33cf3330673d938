"""The LLM Gateway: the one door every model call goes through.

`generate(role, task, payload)` renders the prompt, routes to a provider and model, calls it
with a timeout, checks a json answer against the output schema and reports every attempt in
`meta`. What to do when an attempt fails (retry, fall back, repair) lives in `_run_route`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema_rs import Validator

from sparklio.core.config import Settings
from sparklio.exceptions import (
    GatewayError,
    InvalidRequestError,
    OutputValidationError,
    ProviderError,
    UpstreamTimeoutError,
)
from sparklio.services.llm.prompt_builder import PromptBuilder, RenderedPrompt
from sparklio.services.llm.providers.base import LLMProviderResponse, OutputMode
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.llm.router import Route, Router
from sparklio.services.llm.routing import (
    NAME_RE,
    Candidate,
    load_routing_file,
    shipped_routing_file,
)
from sparklio.services.llm.schemas import SchemaCache

log = logging.getLogger("sparklio.gateway")

#: Options a caller may not set: the routing file picks the model; the gateway fills the rest.
RESERVED_OPTIONS = frozenset({"model", "schema", "payload"})


@dataclass(slots=True)
class _Call:
    """What one generate() call carries through routing and its attempts."""

    role: str
    task: str
    payload: dict[str, Any]
    mode: OutputMode
    options: dict[str, Any]
    schema: dict[str, Any] | None
    validator: Validator | None
    prompt: RenderedPrompt | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


class LLMGateway:
    """Routes, prompts, calls and checks. Build one per app and share it."""

    def __init__(
        self,
        settings: Settings,
        registry: ProviderRegistry,
        router: Router,
        prompts: PromptBuilder,
        schemas: SchemaCache | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router
        self.prompts = prompts
        self.schemas = schemas or SchemaCache()

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: ProviderRegistry | None = None
    ) -> LLMGateway:
        """Build the gateway the settings describe; ConfigError if the routing file is bad."""
        registry = registry or ProviderRegistry(settings)
        path = settings.llm_routing_file or shipped_routing_file()
        routing = load_routing_file(path, registry.names())
        router = Router(routing, settings.generator_mode, path)
        return cls(settings, registry, router, PromptBuilder(settings.prompts_dir))

    async def aclose(self) -> None:
        """Close the providers' connections."""
        await self.registry.aclose()

    async def generate(
        self,
        role: str,
        task: str,
        payload: Mapping[str, Any],
        mode: OutputMode = "json",
        options: Mapping[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> LLMProviderResponse:
        """Answer one call. Raises a GatewayError subclass that says what went wrong."""
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        call: _Call | None = None
        try:
            call = self._prepare(role, task, payload, mode, options, output_schema)
            route = self.router.route(role, task)
            prompt = call.prompt = self.prompts.render(
                role, task, call.payload, mode, output_schema
            )
            if log.isEnabledFor(logging.INFO):
                log.info("→ %s.%s via %s [%s]", role, task, route.candidates[0].label, request_id)
            response = await self._run_route(route, call)
        except GatewayError as exc:
            exc.request_id = request_id
            if call is not None and call.attempts and isinstance(exc, ProviderError):
                exc.details = {**(exc.details or {}), "attempts": call.attempts}
            log.info("✗ %s.%s %s: %s [%s]", role, task, exc.type, exc.message, request_id)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        response.meta.update(
            request_id=request_id,
            role=role,
            task=task,
            generator_mode=self.router.mode,
            rule=route.rule,
            attempts=call.attempts,
            latency_ms=round(latency_ms, 2),
            template=prompt.template,
            prompt_hash=prompt.hash,
        )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "← %s.%s %.1fms %d tok via %s/%s [%s]",
                role,
                task,
                latency_ms,
                response.usage.get("total_tokens", 0),
                response.provider,
                response.model,
                request_id,
            )
        return response

    def _prepare(
        self,
        role: str,
        task: str,
        payload: Mapping[str, Any],
        mode: OutputMode,
        options: Mapping[str, Any] | None,
        output_schema: dict[str, Any] | None,
    ) -> _Call:
        for name, value in (("role", role), ("task", task)):
            if not isinstance(value, str) or not NAME_RE.match(value):
                raise InvalidRequestError(
                    f"{name} must be a lowercase name of letters, digits and '_' (got {value!r})."
                )
        if mode not in ("json", "text"):
            raise InvalidRequestError(f"mode must be 'json' or 'text' (got {mode!r}).")
        reserved = RESERVED_OPTIONS.intersection(options or ())
        if reserved:
            raise InvalidRequestError(
                f"options may not set {', '.join(sorted(reserved))}: the routing file picks the "
                "model, and the schema and payload have fields of their own."
            )
        if not isinstance(payload, Mapping):
            raise InvalidRequestError(
                f"payload must be a JSON object (got {type(payload).__name__})."
            )
        # a bad schema is an error in either mode; only json answers are checked against it
        validator = self.schemas.validator(output_schema) if output_schema is not None else None
        if mode == "text":
            validator = None
        return _Call(
            role=role,
            task=task,
            payload=dict(payload),
            mode=mode,
            options=dict(options or {}),
            schema=output_schema,
            validator=validator,
        )

    async def _run_route(self, route: Route, call: _Call) -> LLMProviderResponse:
        """Try the route's candidates. For now the primary only; this is where retries,
        fallbacks and JSON repair go."""
        return await self._attempt(route.candidates[0], call)

    async def _attempt(self, candidate: Candidate, call: _Call) -> LLMProviderResponse:
        """One call to one candidate, timed, checked and recorded in `call.attempts`."""
        provider = self.registry.get(candidate.provider)
        options: dict[str, Any] = {**candidate.options, **call.options}
        timeout = float(options.pop("timeout", None) or provider.timeout)
        options.update(model=candidate.model, payload=call.payload)
        if call.mode == "json" and call.schema is not None:
            options["schema"] = call.schema
        where = f"{candidate.provider}/{candidate.model}"
        assert call.prompt is not None, "render the prompt before the attempt"
        prompt = call.prompt
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(timeout):
                response = await provider.generate(
                    prompt.text, call.role, call.task, call.mode, options
                )
            if call.validator is not None:
                errors = self.schemas.errors(call.validator, response.output)
                if errors:
                    raise OutputValidationError(
                        f"{where} answered, but the output does not match output_schema: "
                        + "; ".join(errors[:3]),
                        provider=candidate.provider,
                        model=candidate.model,
                        outcome="schema_invalid",
                        details={"errors": errors},
                    )
        except TimeoutError:
            outcome = "timeout"
            raise UpstreamTimeoutError(
                f"{where} did not answer within {timeout:g} s.",
                provider=candidate.provider,
                model=candidate.model,
                outcome=outcome,
            ) from None
        except ProviderError as exc:
            outcome = exc.outcome
            raise
        except GatewayError:
            outcome = "rejected"
            raise
        except Exception as exc:  # a provider bug must not become a 500 without a name on it
            outcome = "error"
            log.exception("provider %s failed", where)
            raise ProviderError(
                f"{where} failed: {type(exc).__name__}: {exc}",
                provider=candidate.provider,
                model=candidate.model,
            ) from exc
        finally:
            call.attempts.append(
                {
                    "provider": candidate.provider,
                    "model": candidate.model,
                    "outcome": outcome,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            )
        return response
