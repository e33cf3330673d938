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
from typing import Any, Protocol

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
    UpstreamTimeoutError,
)
from sparklio.services.jsonvalues import check_json_value
from sparklio.services.llm.options import check_options
from sparklio.services.llm.prompt_builder import PromptBuilder, RenderedPrompt
from sparklio.services.llm.providers.base import LLMProvider, LLMProviderResponse, OutputMode
from sparklio.services.llm.providers.registry import ProviderRegistry, ProviderUnavailableError
from sparklio.services.llm.resilience import (
    ENDPOINT_FAILURES,
    EndpointGuard,
    Guards,
    QueueFullError,
    RetryPolicy,
)
from sparklio.services.llm.router import Route, Router
from sparklio.services.llm.routing import (
    NAME_RE,
    Candidate,
    RoutingFile,
    load_routing_file,
    shipped_routing_file,
)
from sparklio.services.llm.schemas import SchemaCache

log = logging.getLogger("sparklio.gateway")


class CallSink(Protocol):
    """Where call records go: the call log (sparklio.services.calllog)."""

    def record(self, entry: dict[str, Any]) -> None: ...


#: Options a caller may not set: the routing file picks the model; the gateway fills the rest.
RESERVED_OPTIONS = frozenset({"model", "schema", "payload"})
#: Failures a second look by the model can fix: it answered, but not with usable JSON.
REPAIRABLE = frozenset({"invalid_json", "schema_invalid"})
#: Failures that say "busy or switched off", not "broken": the caller should come back.
CAPACITY = frozenset({"queue_full", "circuit_open"})


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
    queue_ms: float = 0.0
    deadline: float = 0.0


class LLMGateway:
    """Routes, prompts, calls and checks. Build one per app and share it."""

    def __init__(
        self,
        settings: Settings,
        registry: ProviderRegistry,
        router: Router[Candidate],
        prompts: PromptBuilder,
        schemas: SchemaCache | None = None,
    ) -> None:
        self.settings = settings
        self.routing: RoutingFile | None = None  # the file the router came from, if any
        self.registry = registry
        self.router = router
        self.prompts = prompts
        self.schemas = schemas or SchemaCache()
        self.retry = RetryPolicy.from_settings(settings)
        self.guards = Guards(settings)
        #: where every call's record goes (the call log); set by the app, None in-process
        self.call_log: CallSink | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: ProviderRegistry | None = None
    ) -> LLMGateway:
        """Build the gateway the settings describe; ConfigError if the routing file is bad."""
        from sparklio.services.media.providers.registry import MediaRegistry

        registry = registry or ProviderRegistry(settings)
        path = settings.llm_routing_file or shipped_routing_file()
        media_names = MediaRegistry(settings, load_entry_points=True).names()
        return cls.build(settings, load_routing_file(path, registry.names(), media_names), path,
                         registry)  # fmt: skip

    @classmethod
    def build(
        cls, settings: Settings, routing: RoutingFile, path: Path, registry: ProviderRegistry
    ) -> LLMGateway:
        """The gateway for a loaded routing file; ConfigError for bad provider settings."""
        registry.configure(routing.providers)
        problems: list[str] = []
        named = routing.models_by_provider()
        for name in {*named, *(p for p in routing.providers if p in registry)}:
            try:
                provider = registry.get(name)
            except ProviderUnavailableError:
                continue  # /api/v1/llm/providers says why, and routing skips it
            except ConfigError as exc:
                problems.append(f"providers.{name}: {exc}")
                continue
            problems.extend(f"{name}: {p}" for p in provider.check_models(named.get(name, [])))
        if problems:
            raise ConfigError(f"Routing file {path} is invalid:\n  " + "\n  ".join(problems))
        router = Router(routing.modes, settings.generator_mode, catalogue=routing.tasks, path=path)
        gateway = cls(settings, registry, router, PromptBuilder(settings.prompts_dir))
        gateway.routing = routing
        return gateway

    async def start(self) -> None:
        """Let each provider routed in this mode prepare (e.g. preload a local model)."""
        for name, models in self.router.models_by_provider().items():
            try:
                provider = self.registry.get(name)
            except ProviderUnavailableError:
                continue
            if provider.unavailable_reason() is None:
                await provider.start(models)

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
            prompt = call.prompt = self.prompts.render(
                role, task, call.payload, mode, output_schema
            )
            # the start of a call is a debug line: at thousands of calls a second, one INFO
            # line per call (its end, below) is what a person can follow (bench: -17 % for two)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("→ %s.%s via %s [%s]", role, task, route.candidates[0].label, request_id)
            response = await self._run_route(route, call)
        except GatewayError as exc:
            exc.request_id = request_id
            if (
                call is not None
                and call.attempts
                and isinstance(exc, ProviderError | ServiceUnavailableError)
            ):
                exc.details = {**(exc.details or {}), "attempts": call.attempts}
            log.info("✗ %s.%s %s: %s [%s]", role, task, exc.type, exc.message, request_id)
            self._log_call(role, task, request_id, user_id, started, call, None, exc)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        response.meta.update(
            request_id=request_id,
            role=role,
            task=task,
            generator_mode=self.router.mode,
            rule=route.rule,
            attempts=call.attempts,
            fallback=call.attempts[-1]["provider"] != route.candidates[0].provider
            or call.attempts[-1]["model"] != route.candidates[0].model,
            queue_ms=round(call.queue_ms, 2),
            latency_ms=round(latency_ms, 2),
            template=prompt.template,
            prompt_hash=prompt.hash,
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
        attempts = call.attempts if call is not None else []
        last = attempts[-1] if attempts else {}
        usage = response.usage if response is not None else {}
        provider = response.provider if response is not None else last.get("provider")
        model = response.model if response is not None else last.get("model")
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        cost = self.routing.cost(provider, model, prompt, completion) if self.routing else 0.0
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

    async def _run_route(self, route: Route[Candidate], call: _Call) -> LLMProviderResponse:
        """Try the candidates in order until one answers; then say what each one did."""
        loop = asyncio.get_running_loop()
        call.deadline = loop.time() + self.settings.llm_deadline
        failures: list[ProviderError] = []
        for candidate in route.candidates:
            try:
                return await self._run_candidate(candidate, call)
            except ProviderError as exc:
                failures.append(exc)
            if loop.time() >= call.deadline:
                break
        raise self._all_failed(route, call, failures)

    async def _run_candidate(self, candidate: Candidate, call: _Call) -> LLMProviderResponse:
        """One candidate: skipped if unavailable or its circuit is open, else tried with
        retries and at most one JSON repair."""
        provider, guard = self._provider_for(candidate, call)
        # admitted for the whole candidate: a probe that ends without a verdict (cancelled,
        # queue full, a bad request) is given back on the way out, whatever the way out is
        with guard.breaker.admit() as allowed:
            if not allowed:
                self._record(call, candidate, "circuit_open", 0.0)
                raise ProviderError(
                    f"{candidate.label} skipped: its circuit is open after "
                    f"{guard.breaker.failures} failures in a row; one probe call is let "
                    f"through after {guard.breaker.cooldown:g} s.",
                    provider=candidate.provider, model=candidate.model, outcome="circuit_open",
                )  # fmt: skip
            return await self._retrying(candidate, provider, guard, call)

    async def _retrying(
        self, candidate: Candidate, provider: LLMProvider, guard: EndpointGuard, call: _Call
    ) -> LLMProviderResponse:
        """Attempts on one admitted candidate until one answers or retrying is pointless."""
        loop = asyncio.get_running_loop()
        assert call.prompt is not None
        prompt, repaired, retry = call.prompt, False, 0
        while True:
            try:
                response = await self._attempt(candidate, provider, guard, call, prompt)
            except ProviderError as exc:
                if exc.outcome in ENDPOINT_FAILURES:
                    guard.breaker.failure()
                elif exc.outcome not in CAPACITY:
                    guard.breaker.success()  # it answered: the endpoint itself is fine
                if exc.outcome in REPAIRABLE and exc.raw is not None and not repaired:
                    repaired = True
                    prompt = self.prompts.render_repair(call.prompt, exc.raw, exc.message)
                    continue
                delay = self.retry.delay(retry, exc)
                if delay is None or loop.time() + delay >= call.deadline:
                    raise
                retry += 1
                await asyncio.sleep(delay)
                continue
            guard.breaker.success()
            response.meta["repaired"] = repaired
            return response

    def _provider_for(self, candidate: Candidate, call: _Call) -> tuple[LLMProvider, EndpointGuard]:
        try:
            provider = self.registry.get(candidate.provider)
            reason = provider.unavailable_reason()
        except ProviderUnavailableError as exc:
            reason = str(exc)
        if reason:
            self._record(call, candidate, "unavailable", 0.0)
            raise ProviderError(f"{candidate.label} is unavailable: {reason}",
                                provider=candidate.provider, model=candidate.model,
                                outcome="unavailable")  # fmt: skip
        return provider, self.guards.get(candidate.provider, provider.max_concurrency)

    async def _attempt(
        self,
        candidate: Candidate,
        provider: LLMProvider,
        guard: EndpointGuard,
        call: _Call,
        prompt: RenderedPrompt,
    ) -> LLMProviderResponse:
        """One call to one candidate, timed, checked and recorded in `call.attempts`."""
        options: dict[str, Any] = {**candidate.options, **call.options}
        per_attempt = float(options.pop("timeout", None) or provider.timeout)
        remaining = call.deadline - asyncio.get_running_loop().time()
        timeout = max(0.0, min(per_attempt, remaining))
        options.update(model=candidate.model, payload=call.payload)
        if call.mode == "json" and call.schema is not None:
            options["schema"] = call.schema
        where = candidate.label
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(timeout), guard.limiter.slot() as waited:
                call.queue_ms += waited
                response = await provider.generate(
                    prompt.text, call.role, call.task, call.mode, options
                )
            if call.validator is not None:
                self._check(call.validator, response, candidate)
        except TimeoutError:
            outcome = "timeout"
            raise UpstreamTimeoutError(
                f"{where} did not answer within {timeout:g} s.",
                provider=candidate.provider, model=candidate.model, outcome=outcome,
                retryable=True,
            ) from None  # fmt: skip
        except QueueFullError:
            outcome = "queue_full"
            raise ProviderError(
                f"{where} is busy: {guard.limiter.limit} calls in flight and "
                f"{guard.limiter.waiting} waiting (the most it queues).",
                provider=candidate.provider, model=candidate.model, outcome=outcome,
            ) from None  # fmt: skip
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
                provider=candidate.provider, model=candidate.model,
            ) from exc  # fmt: skip
        finally:
            self._record(call, candidate, outcome, (time.perf_counter() - started) * 1000)
        return response

    def _check(
        self, validator: Validator, response: LLMProviderResponse, candidate: Candidate
    ) -> None:
        errors = self.schemas.errors(validator, response.output)
        if errors:
            raise OutputValidationError(
                f"{candidate.label} answered, but the output does not match output_schema: "
                + "; ".join(errors[:3]),
                provider=candidate.provider, model=candidate.model, outcome="schema_invalid",
                details={"errors": errors}, raw=orjson.dumps(response.output).decode(),
            )  # fmt: skip

    @staticmethod
    def _record(call: _Call, candidate: Candidate, outcome: str, latency_ms: float) -> None:
        call.attempts.append({
            "provider": candidate.provider,
            "model": candidate.model,
            "outcome": outcome,
            "latency_ms": round(latency_ms, 2),
        })  # fmt: skip

    def _all_failed(
        self, route: Route[Candidate], call: _Call, failures: list[ProviderError]
    ) -> GatewayError:
        """One error for a call whose every candidate failed, naming what each one did."""
        last = failures[-1]
        busy = all(f.outcome in CAPACITY or f.outcome == "unavailable" for f in failures) and any(
            f.outcome in CAPACITY for f in failures
        )  # nothing broke: every candidate is busy or resting, so the caller should come back
        if len(failures) == 1 and len(call.attempts) == 1:
            # one attempt: its own error says it best
            return ServiceUnavailableError(last.message, details=last.details) if busy else last
        parts = []
        for candidate, failure in zip(route.candidates, failures, strict=False):
            outcomes = [
                a["outcome"]
                for a in call.attempts
                if (a["provider"], a["model"]) == (candidate.provider, candidate.model)
            ]
            tries = f"{len(outcomes)} attempt{'s' * (len(outcomes) != 1)}"
            parts.append(
                f"{candidate.label}: {tries} ({', '.join(outcomes)}), last: {failure.message}"
            )
        summary = (f"Every candidate for {call.role}/{call.task} failed. " + " ".join(
            f"{i}) {p}" for i, p in enumerate(parts, 1)))  # fmt: skip
        details: dict[str, Any] = {
            "failures": [
                {"provider": f.provider, "model": f.model, "outcome": f.outcome,
                 "message": f.message}
                for f in failures
            ]
        }  # fmt: skip
        if isinstance(last.details, dict) and "errors" in last.details:
            details["errors"] = last.details["errors"]  # the schema errors of the last answer
        if busy:
            return ServiceUnavailableError(summary, details=details)
        # the last failure's class keeps its status: 504 after a timeout, 502 otherwise
        return type(last)(summary, provider=last.provider, model=last.model,
                          outcome=last.outcome, details=details)  # fmt: skip
