"""The LLM Gateway: the one door every model call goes through.

`generate(role, task, payload)` renders the prompt, routes to the candidates, and tries them
in order: each with a timeout, retried on transient failures (honouring Retry-After), a json
answer that does not parse or match its schema repaired once, a candidate whose circuit is
open skipped, calls beyond an endpoint's concurrency limit queued. Every attempt is reported
in `meta.attempts`; when all candidates fail, one error says what each did.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from jsonschema_rs import Validator

from sparklio.core.config import Settings
from sparklio.exceptions import (
    ConfigError,
    GatewayError,
    InvalidRequestError,
    OutputValidationError,
    ProviderError,
    ServiceUnavailableError,
)
from sparklio.services.gateway.attempts import AttemptLoop, Plan, Trail, Try
from sparklio.services.gateway.endpoints import Endpoint, Endpoints
from sparklio.services.gateway.guard import RetryPolicy
from sparklio.services.gateway.providers import Registry
from sparklio.services.gateway.routing import NAME_RE, Candidate, RoutingFile
from sparklio.services.jsonvalues import check_json_value
from sparklio.services.llm.options import check_options
from sparklio.services.llm.prompt_builder import PromptBuilder, RenderedPrompt
from sparklio.services.llm.providers.base import (
    GATEWAY_OPTIONS,
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    ProviderOptions,
)
from sparklio.services.llm.router import LLMRouter
from sparklio.services.llm.schemas import SchemaCache

log = logging.getLogger("sparklio.gateway")


class CallSink(Protocol):
    """Where call records go: the call log (sparklio.services.calllog)."""

    def record(self, entry: dict[str, Any]) -> None: ...


#: Failures a second look by the model can fix: it answered, but not with usable JSON.
REPAIRABLE = frozenset({"invalid_json", "schema_invalid"})


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
    prompt: RenderedPrompt | None = None  # rendered once the call is routed
    trail: Trail = field(default_factory=Trail)
    repaired: bool = False


class LLMGateway:
    """Routes, prompts, calls and checks. Build one per app (`build`) and share it."""

    def __init__(
        self,
        settings: Settings,
        routing: RoutingFile,
        endpoints: Endpoints[LLMProvider],
        router: LLMRouter,
        prompts: PromptBuilder,
        call_log: CallSink | None,
        schemas: SchemaCache | None = None,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self.endpoints = endpoints
        self.router = router
        self.prompts = prompts
        #: where every call's record goes (the call log); None in a bare in-process gateway
        self.call_log = call_log
        self.schemas = schemas or SchemaCache()
        self.loop = AttemptLoop(endpoints, RetryPolicy.from_settings(settings))

    @classmethod
    def build(
        cls,
        settings: Settings,
        routing: RoutingFile,
        path: Path,
        registry: Registry[LLMProvider],
        call_log: CallSink | None,
    ) -> LLMGateway:
        """The gateway for a loaded routing file, over the endpoints it declares and each
        kind's default one; ConfigError for bad endpoint settings."""
        max_queue = settings.llm_max_queue
        endpoints = Endpoints(registry, settings, routing.providers, max_queue=max_queue)
        problems = endpoints.check(routing.models_by_endpoint())
        if problems:
            raise ConfigError(f"Routing file {path} is invalid:\n  " + "\n  ".join(problems))
        router = LLMRouter(routing, settings.generator_mode, path=path)
        return cls(settings, routing, endpoints, router, PromptBuilder(settings.prompts_dir),
                   call_log)  # fmt: skip

    async def start(self) -> None:
        """Let each endpoint routed in this mode prepare (e.g. preload a local model)."""
        await self.endpoints.start(self.router.models_by_endpoint())

    async def aclose(self) -> None:
        """Close the providers' connections."""
        await self.endpoints.aclose()

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
        user_id: str | None = None,
    ) -> LLMProviderResponse:
        """Answer one call. Raises a GatewayError subclass that says what went wrong."""
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        call: _Call | None = None
        try:
            try:  # compiling a large schema takes up to ~100 ms: fill the cache off the loop
                large = output_schema is not None and len(orjson.dumps(output_schema)) > 20_000
            except TypeError:  # an integer past 64 bits: left to the schema check below
                large = False
            if large and output_schema is not None:
                await asyncio.to_thread(self.schemas.validator, output_schema)
            call = self._prepare(role, task, payload, mode, options, output_schema)
            route = self.router.route(role, task)
            call.prompt = self.prompts.render(role, task, call.payload, mode, output_schema)
            # the start of a call is a debug line: at thousands of calls a second, one INFO
            # line per call (its end, below) is what a person can follow (bench: -17 % for two)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("→ %s.%s via %s [%s]", role, task, route.candidates[0].label, request_id)
            response = await self.loop.run(self._plan(route.candidates, call), call.trail)
        except GatewayError as exc:
            exc.request_id = request_id
            attempts = call.trail.attempts if call is not None else []
            if attempts and isinstance(exc, ProviderError | ServiceUnavailableError):
                exc.details = {**(exc.details or {}), "attempts": attempts}
            log.info("✗ %s.%s %s: %s [%s]", role, task, exc.type, exc.message, request_id)
            self._log_call(role, task, request_id, user_id, started, call, None, exc)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        attempts, prompt = call.trail.attempts, call.prompt
        assert prompt is not None
        primary = route.candidates[0]
        response.meta.update(
            request_id=request_id,
            role=role,
            task=task,
            generator_mode=self.router.mode,
            rule=route.rule,
            attempts=attempts,
            fallback=attempts[-1]["provider"] not in primary.targets
            or attempts[-1]["model"] != primary.model,
            queue_ms=round(call.trail.queue_ms, 2),
            latency_ms=round(latency_ms, 2),
            template=prompt.template,
            prompt_hash=prompt.hash,
            repaired=call.repaired,
        )
        self._log_call(role, task, request_id, user_id, started, call, response, None)
        if log.isEnabledFor(logging.INFO):
            log.info("← %s.%s %.1fms %d tok via %s/%s [%s]", role, task, latency_ms,
                     response.usage.get("total_tokens", 0), response.provider, response.model,
                     request_id)  # fmt: skip
        return response

    def _log_call(
        self,
        role: str,
        task: str,
        request_id: str,
        user_id: str | None,
        started: float,
        call: _Call | None,
        response: LLMProviderResponse | None,
        error: GatewayError | None,
    ) -> None:
        """Hand the call's record to the call log; it never blocks and never raises."""
        if self.call_log is None:
            return
        attempts = call.trail.attempts if call is not None else []
        last = attempts[-1] if attempts else {}
        usage = response.usage if response is not None else {}
        provider = response.provider if response is not None else last.get("provider")
        model = response.model if response is not None else last.get("model")
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        kind = self.routing.kind_of(provider) if provider else None
        cost = self.routing.cost((provider, kind), model, prompt, completion)
        self.call_log.record({
            "id": uuid.uuid4().hex,
            "request_id": request_id,
            "user_id": user_id,
            "role": role,
            "task": task,
            "generator_mode": self.router.mode,
            "provider": provider,
            "model": model,
            "attempts": attempts,
            "outcome": "ok" if error is None else str(getattr(error, "outcome", error.type)),
            "fallback": bool(response is not None and response.meta.get("fallback")),
            "status_code": 200 if error is None else error.status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": cost,
            "created_at": datetime.now(UTC),
        })  # fmt: skip

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
        reserved = GATEWAY_OPTIONS.intersection(options or ())
        if reserved:
            raise InvalidRequestError(
                f"options may not set {', '.join(sorted(reserved))}: the routing file picks the "
                "model, and the schema and payload have fields of their own."
            )
        if not isinstance(payload, Mapping):
            raise InvalidRequestError(
                f"payload must be a JSON object (got {type(payload).__name__})."
            )
        # before anything serialises them: orjson refuses integers beyond 64 bits (a 500 once)
        check_json_value(payload, "payload")
        check_json_value(output_schema, "output_schema")
        check_json_value(options, "options")
        check_options(options or {}, self.settings.llm_deadline)
        # a bad schema is an error in either mode; only json answers are checked against it
        validator = self.schemas.validator(output_schema) if output_schema is not None else None
        return _Call(role=role, task=task, payload=dict(payload), mode=mode,
                     options=dict(options or {}), schema=output_schema,
                     validator=validator if mode == "json" else None)  # fmt: skip

    def _plan(
        self, candidates: tuple[Candidate, ...], call: _Call
    ) -> Plan[Candidate, LLMProviderResponse]:
        """How the attempt loop runs this call."""

        def timeout(candidate: Candidate, endpoint: Endpoint[Any]) -> float:
            chosen = call.options.get("timeout", candidate.options.get("timeout"))
            return float(chosen or endpoint.config.timeout)

        def again(error: ProviderError) -> bool:
            """A JSON answer that does not parse or match: one more look, with the errors."""
            if error.outcome in REPAIRABLE and error.raw is not None and not call.repaired:
                assert call.prompt is not None
                call.repaired = True
                call.prompt = self.prompts.render_repair(call.prompt, error.raw, error.message)
                return True
            return False

        deadline = asyncio.get_running_loop().time() + self.settings.llm_deadline
        return Plan(what=f"{call.role}/{call.task}", candidates=candidates,
                    attempt=lambda attempt: self._attempt(attempt, call), timeout=timeout,
                    deadline=deadline, again=again)  # fmt: skip

    async def _attempt(self, attempt: Try[Candidate], call: _Call) -> LLMProviderResponse:
        """One call to one endpoint, its answer checked against the schema."""
        candidate = attempt.candidate
        merged = {**candidate.options, **call.options}
        merged.pop("timeout", None)  # the attempt loop's, not the provider's
        options = cast(ProviderOptions, merged)
        options["model"] = candidate.model
        options["payload"] = call.payload
        if call.mode == "json" and call.schema is not None:
            options["schema"] = call.schema
        provider: LLMProvider = attempt.endpoint.provider
        assert call.prompt is not None
        response = await provider.generate(
            call.prompt.text, call.role, call.task, call.mode, options
        )
        if call.validator is not None:
            errors = self.schemas.errors(call.validator, response.output)
            if errors:
                raise OutputValidationError(
                    f"{candidate.label_on(attempt.endpoint.name)} answered, but the output does "
                    "not match output_schema: " + "; ".join(errors[:3]),
                    provider=attempt.endpoint.name, model=candidate.model,
                    outcome="schema_invalid", details={"errors": errors},
                    raw=orjson.dumps(response.output).decode(),
                )  # fmt: skip
        return response
