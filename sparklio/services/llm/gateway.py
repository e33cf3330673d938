"""The LLM Gateway: the one door every model call goes through.

`generate(role, task, payload)` renders the prompt, routes to the candidates, and tries them
in order: each with a timeout, retried on transient failures (honouring Retry-After), a json
answer that does not parse or match its schema repaired once, a candidate whose circuit is
open skipped, calls beyond an endpoint's concurrency limit queued. Every attempt is reported
in `meta.attempts`; when all candidates fail, one error says what each did.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
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
    RouteNotFoundError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
)
from sparklio.services import telemetry
from sparklio.services.budgets import Account, Budgets, Ticket
from sparklio.services.gateway.attempts import AttemptLoop, Plan, Trail, Try
from sparklio.services.gateway.endpoints import Endpoint, Endpoints
from sparklio.services.gateway.guard import ENDPOINT_FAILURES, RetryPolicy
from sparklio.services.gateway.providers import Registry
from sparklio.services.gateway.router import Route
from sparklio.services.gateway.routing import NAME_RE, Candidate, RoutingFile
from sparklio.services.jsonvalues import check_json_value
from sparklio.services.llm import cache as caching
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
from sparklio.wire.llm import StreamDelta, StreamDone, StreamEvent, StreamFailed

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
    #: a chat's messages (the OpenAI-compatible API), sent as they are instead of a template
    messages: list[dict[str, Any]] | None = None
    request_id: str = ""
    user_id: str | None = None
    started: float = 0.0
    route: Route[Candidate] | None = None
    #: the caller did not bypass the response cache (`options.cache`, taken out of options)
    use_cache: bool = True
    #: what the call reserved of its key's and user's limits; settled once it ends
    ticket: Ticket | None = None
    #: (tokens, USD) it really used, once answered
    spent: tuple[int, float] = (0, 0.0)


@dataclass(slots=True)
class _Opened:
    """A stream whose first piece came: the rest of it, and the slot it holds."""

    first: str | LLMProviderResponse
    pieces: AsyncIterator[str | LLMProviderResponse]
    hold: AsyncExitStack
    endpoint: Endpoint[LLMProvider]
    candidate: Candidate


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
        *,
        cache: caching.ResponseCache | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self.endpoints = endpoints
        self.router = router
        self.prompts = prompts
        #: where every call's record goes (the call log); None in a bare in-process gateway
        self.call_log = call_log
        self.schemas = schemas or SchemaCache()
        #: answers of deterministic calls (sparklio.services.llm.cache); None: no caching
        self.cache = cache
        #: limits and budgets per key and user (sparklio.services.budgets); None: none
        self.budgets = budgets
        self.loop = AttemptLoop(endpoints, RetryPolicy.from_settings(settings))

    @classmethod
    def build(
        cls,
        settings: Settings,
        routing: RoutingFile,
        path: Path,
        registry: Registry[LLMProvider],
        call_log: CallSink | None,
        *,
        cache: caching.ResponseCache | None = None,
        budgets: Budgets | None = None,
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
                   call_log, cache=cache, budgets=budgets)  # fmt: skip

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
        messages: list[dict[str, Any]] | None = None,
        route: Route[Candidate] | None = None,
        account: Account | None = None,
    ) -> LLMProviderResponse:
        """Answer one call. Raises a GatewayError subclass that says what went wrong.

        `messages` (with `route`, from `resolve`) is a chat of the OpenAI-compatible API: the
        messages are the prompt, no template is rendered. `account`: the key's and user's
        limits the call is held to (TooManyRequestsError when one is reached)."""
        call: _Call | None = None
        started = time.perf_counter()
        try:
            try:
                call = await self._start(role, task, payload, mode, options, output_schema,
                                         request_id, user_id, messages, route, started,
                                         account)  # fmt: skip
                assert call.route is not None
                key = self._cache_key(call)
                hit = await self._cache_get(call, key) if key is not None else None
                if hit is not None:
                    return self._finish(call, hit)
                plan = self._plan(call.route.candidates, call)
                response = await self.loop.run(plan, call.trail)
            except GatewayError as exc:
                raise self._failed(role, task, request_id, user_id, started, call, exc) from None
            if key is not None:
                await self._cache_put(call, key, response)
            return self._finish(call, response)
        finally:
            if call is not None and call.ticket is not None:
                await asyncio.shield(self._settle(call))

    async def open_stream(
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
        messages: list[dict[str, Any]] | None = None,
        route: Route[Candidate] | None = None,
        account: Account | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Start a call whose answer streams. Returns once the first piece came: until then a
        failure falls back to the next candidate like any call, and when every candidate
        fails this raises the GatewayError `generate` would. The events are `StreamDelta`s,
        then one `StreamDone` with the whole response, or a `StreamFailed` naming provider,
        model and outcome when the stream broke after it began (never a silent end). Closing
        the iterator early (a client that went away) cancels the upstream call."""
        call: _Call | None = None
        started = time.perf_counter()
        try:
            call = await self._start(role, task, payload, mode, options, output_schema,
                                     request_id, user_id, messages, route, started,
                                     account)  # fmt: skip
            assert call.route is not None
            plan = self._plan(call.route.candidates, call, stream=True)
            opened = await self.loop.run(plan, call.trail)
        except BaseException as exc:
            if call is not None and call.ticket is not None:
                await asyncio.shield(self._settle(call))
            if isinstance(exc, GatewayError):
                raise self._failed(role, task, request_id, user_id, started, call, exc) from None
            raise
        return self._follow(call, opened)

    def resolve(self, model: str) -> tuple[str, str, Route[Candidate]]:
        """(role, task, route) for a model name of the OpenAI-compatible API: a route alias
        of the routing file, `role/task` (routed as the native API routes it, fallbacks and
        all), or `endpoint/model` when the routing file routes that model to that endpoint.
        RouteNotFoundError lists what is known."""
        target = self.routing.aliases.get(model, model)
        first, sep, rest = target.partition("/")
        if sep and NAME_RE.match(first) and NAME_RE.match(rest):
            try:
                return first, rest, self.router.route(first, rest)
            except RouteNotFoundError:
                pass
        if sep and first in self.endpoints:
            for candidate in self.router.candidates():
                if candidate.model == rest and first in candidate.targets:
                    direct = Candidate(provider=first, model=rest, options=candidate.options)
                    return "chat", "direct", Route(f"direct:{first}/{rest}", (direct,))
        known = sorted({*self.routing.aliases, *self.router.known_tasks(), *self.direct_models()})
        raise RouteNotFoundError(
            f"Unknown model {model!r}: name a route alias, a role/task, or an endpoint/model "
            f"the routing file routes. Known: {', '.join(known)}.",
            details={"model": model, "known": known},
        )

    def direct_models(self) -> list[str]:
        """Every `endpoint/model` the routing file routes in this mode."""
        found = {
            f"{name}/{candidate.model}"
            for candidate in self.router.candidates()
            for name in candidate.targets
        }
        return sorted(found)

    async def _start(
        self,
        role: str,
        task: str,
        payload: Mapping[str, Any],
        mode: OutputMode,
        options: Mapping[str, Any] | None,
        output_schema: dict[str, Any] | None,
        request_id: str | None,
        user_id: str | None,
        messages: list[dict[str, Any]] | None,
        route: Route[Candidate] | None,
        started: float,
        account: Account | None = None,
    ) -> _Call:
        """Check the call, route it, render its prompt and reserve its share of the limits."""
        try:  # compiling a large schema takes up to ~100 ms: fill the cache off the loop
            large = output_schema is not None and len(orjson.dumps(output_schema)) > 20_000
        except TypeError:  # an integer past 64 bits: left to the schema check below
            large = False
        if large and output_schema is not None:
            await asyncio.to_thread(self.schemas.validator, output_schema)
        call = self._prepare(role, task, payload, mode, options, output_schema)
        call.request_id = request_id or uuid.uuid4().hex
        call.user_id, call.started = user_id, started
        call.route = route or self.router.route(role, task)
        if messages is not None:
            call.messages = messages
            call.prompt = chat_prompt(messages)
        else:
            call.prompt = self.prompts.render(role, task, call.payload, mode, output_schema)
        if self.budgets is not None and account is not None and account.limited:
            tokens, usd = self._estimate(call)
            call.ticket = await self.budgets.reserve(account, tokens, usd)
        # the start of a call is a debug line: at thousands of calls a second, one INFO
        # line per call (its end) is what a person can follow (bench: -17 % for two)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("→ %s.%s via %s [%s]", role, task, call.route.candidates[0].label,
                      call.request_id)  # fmt: skip
        call.trail.span = telemetry.call_span(role, task, call.request_id)
        return call

    def _estimate(self, call: _Call) -> tuple[int, float]:
        """What a call is reserved at before it runs: its prompt (about 3 characters a
        token, on the high side) and its max_tokens (else BUDGET_MAX_TOKENS), priced at the
        dearest of its candidates; `_settle` gives back the difference."""
        assert call.route is not None and call.prompt is not None
        prompt = len(call.prompt.text) // 3 + 1
        usd = 0.0
        tokens = prompt
        for candidate in call.route.candidates:
            most = call.options.get("max_tokens", candidate.options.get("max_tokens"))
            completion = int(most) if most else self.settings.budget_max_tokens
            tokens = max(tokens, prompt + completion)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion}
            for name in candidate.targets:
                usd = max(usd, self._cost(name, candidate.model, usage))
        return tokens, usd

    async def _settle(self, call: _Call) -> None:
        """Give back what the call reserved beyond what it used (all of it on a failure)."""
        if self.budgets is not None:
            tokens, usd = call.spent
            await self.budgets.settle(call.ticket, tokens, usd)

    def _cache_key(self, call: _Call) -> str | None:
        """The response cache's key for this call, or None when it is not cached: no cache,
        bypassed, not deterministic (temperature 0 or a seed), or its route's TTL is 0."""
        if self.cache is None or not call.use_cache or not caching.wants_cache(call.options):
            return None
        assert call.route is not None and call.prompt is not None
        ttl = call.route.cache_ttl
        if (ttl if ttl is not None else self.settings.cache_ttl) <= 0:
            return None
        return caching.cache_key(self.router.mode, call.route.candidates, self.routing.kind_of,
                                 call.prompt.text, call.messages, call.payload, call.mode,
                                 call.schema, call.options)  # fmt: skip

    async def _cache_get(self, call: _Call, key: str) -> LLMProviderResponse | None:
        """The cached answer (recorded as one `cache_hit` attempt), or None."""
        assert self.cache is not None
        entry = await self.cache.get(key)
        hit = caching.answer_from(entry) if entry is not None else None
        if hit is not None:
            took = round((time.perf_counter() - call.started) * 1000, 2)
            call.trail.attempts.append({"provider": hit.provider, "model": hit.model,
                                        "outcome": "cache_hit", "latency_ms": took})  # fmt: skip
        return hit

    async def _cache_put(self, call: _Call, key: str, response: LLMProviderResponse) -> None:
        """Keep a success for the route's TTL (never a cut-off answer); meta.cache: miss."""
        assert self.cache is not None and call.route is not None
        response.meta["cache"] = caching.MISS
        entry = caching.entry_of(response)
        if entry is not None:
            ttl = call.route.cache_ttl
            await self.cache.put(key, entry, ttl if ttl is not None else self.settings.cache_ttl)

    def _failed(
        self,
        role: str,
        task: str,
        request_id: str | None,
        user_id: str | None,
        started: float,
        call: _Call | None,
        exc: GatewayError,
    ) -> GatewayError:
        """The error of a call that failed, with its attempts, logged and recorded."""
        exc.request_id = call.request_id if call is not None else request_id or uuid.uuid4().hex
        attempts = call.trail.attempts if call is not None else []
        if attempts and isinstance(exc, ProviderError | ServiceUnavailableError):
            exc.details = {**(exc.details or {}), "attempts": attempts}
        log.info("✗ %s.%s %s: %s [%s]", role, task, exc.type, exc.message, exc.request_id)
        self._log_call(role, task, exc.request_id, user_id, started, call, None, exc)
        return exc

    def _finish(self, call: _Call, response: LLMProviderResponse) -> LLMProviderResponse:
        """The response of a call that succeeded, with its meta, logged and recorded."""
        latency_ms = (time.perf_counter() - call.started) * 1000
        attempts, prompt, route = call.trail.attempts, call.prompt, call.route
        assert prompt is not None and route is not None
        primary = route.candidates[0]
        response.meta.update(
            request_id=call.request_id,
            role=call.role,
            task=call.task,
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
            # what the call is priced at (the routing file's prices; a cache hit used no
            # tokens): the caller sees it with the answer, as the call log records it
            cost_usd=self._cost(response.provider, response.model, response.usage),
        )
        response.meta.setdefault("cache", caching.OFF)
        call.spent = (response.usage.get("total_tokens", 0), response.meta["cost_usd"] or 0.0)
        self._log_call(call.role, call.task, call.request_id, call.user_id, call.started, call,
                       response, None)  # fmt: skip
        if log.isEnabledFor(logging.INFO):
            log.info("← %s.%s %.1fms %d tok via %s/%s [%s]", call.role, call.task, latency_ms,
                     response.usage.get("total_tokens", 0), response.provider, response.model,
                     call.request_id)  # fmt: skip
        return response

    async def _follow(self, call: _Call, opened: _Opened) -> AsyncIterator[StreamEvent]:
        """The events of a stream that began: its pieces, then how it ended."""
        endpoint, candidate = opened.endpoint, opened.candidate
        where = candidate.label_on(endpoint.name)
        deadline = call.started + self.settings.llm_deadline
        ended = False
        try:
            item = opened.first
            while not isinstance(item, LLMProviderResponse):
                if item:
                    yield StreamDelta(text=item)
                item = await self._next_piece(opened, where, deadline)
            self._check(call, item, candidate, endpoint.name)
            ended = True
            yield StreamDone(response=self._finish(call, item))
        except ProviderError as error:
            ended = True
            if error.outcome in ENDPOINT_FAILURES:
                endpoint.guard.breaker.failure()
            # the attempt was recorded "ok" at its first piece: it is how it ended that counts
            call.trail.attempts[-1]["outcome"] = error.outcome
            failed = self._failed(call.role, call.task, call.request_id, call.user_id,
                                  call.started, call, error)  # fmt: skip
            yield StreamFailed(error={"type": failed.type, "message": failed.message,
                                      "status": failed.status,
                                      "details": {"provider": error.provider,
                                                  "model": error.model,
                                                  "outcome": error.outcome,
                                                  "attempts": call.trail.attempts}})  # fmt: skip
        finally:
            if not ended:  # the consumer went away: the upstream call is cancelled below
                call.trail.attempts[-1]["outcome"] = "cancelled"
                cancelled = GatewayError("The client closed the stream.", status=499)
                self._log_call(call.role, call.task, call.request_id, call.user_id,
                               call.started, call, None, cancelled)  # fmt: skip
            # closes the provider's stream and frees the slot, even when the consumer's task
            # is being cancelled (a server cancels a response whose client went away)
            await asyncio.shield(opened.hold.aclose())
            if call.ticket is not None:
                await asyncio.shield(self._settle(call))

    @staticmethod
    async def _next_piece(
        opened: _Opened, where: str, deadline: float
    ) -> str | LLMProviderResponse:
        """The stream's next item, within the call's deadline (only the wait for the model is
        timed: a slow reader of the stream is not the model's fault)."""
        endpoint, model = opened.endpoint.name, opened.candidate.model
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                return await anext(opened.pieces)
        except StopAsyncIteration:
            raise ProviderError(f"{where}: the stream ended without its final answer.",
                                provider=endpoint, model=model,
                                outcome="stream_error") from None  # fmt: skip
        except TimeoutError:
            raise UpstreamTimeoutError(f"{where} did not finish within LLM_DEADLINE.",
                                       provider=endpoint, model=model,
                                       outcome="timeout") from None  # fmt: skip

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
        meta = response.meta if response is not None else {}
        cost = meta.get("cost_usd")
        if cost is None:
            cost = self._cost(provider, model, usage)
        cached = meta.get("cache")
        saved = meta.get("cached_usage") or {}  # a cache hit: what the first call used
        saved_in, saved_out = saved.get("prompt_tokens", 0), saved.get("completion_tokens", 0)
        kind = self.routing.kind_of(provider) if provider else None
        self.call_log.record(telemetry.call_done({
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
            "cache": cached if cached in (caching.HIT, caching.MISS) else None,
            "saved_tokens": saved_in + saved_out,
            "saved_usd": self._cost(provider, model, saved) if saved else 0.0,
            "created_at": datetime.now(UTC),
        }, call.trail.span if call is not None else None, kind))  # fmt: skip

    def _cost(self, provider: str | None, model: str | None, usage: Mapping[str, int]) -> float:
        """A call's price in USD, from its tokens and the routing file's prices (by the
        endpoint's name, then its kind)."""
        kind = self.routing.kind_of(provider) if provider else None
        return self.routing.cost((provider, kind), model, usage.get("prompt_tokens", 0),
                                 usage.get("completion_tokens", 0))  # fmt: skip

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
        chosen = dict(options or {})
        use_cache = chosen.pop(caching.BYPASS_OPTION, True)  # the gateway's, not a provider's
        return _Call(role=role, task=task, payload=dict(payload), mode=mode,
                     options=chosen, schema=output_schema, use_cache=use_cache,
                     validator=validator if mode == "json" else None)  # fmt: skip

    def _plan(
        self, candidates: tuple[Candidate, ...], call: _Call, stream: bool = False
    ) -> Plan[Candidate, Any]:
        """How the attempt loop runs this call (until its first piece, for a stream)."""

        def timeout(candidate: Candidate, endpoint: Endpoint[Any]) -> float:
            chosen = call.options.get("timeout", candidate.options.get("timeout"))
            return float(chosen or endpoint.config.timeout)

        def again(error: ProviderError) -> bool:
            """A JSON answer that does not parse or match: one more look, with the errors."""
            if error.outcome in REPAIRABLE and error.raw is not None and not call.repaired:
                assert call.prompt is not None
                call.repaired = True
                call.prompt = self.prompts.render_repair(call.prompt, error.raw, error.message)
                if call.messages is not None:
                    call.messages = [
                        *call.messages,
                        {"role": "assistant", "content": error.raw},
                        {"role": "user", "content": repair_note(error.message)},
                    ]
                return True
            return False

        deadline = asyncio.get_running_loop().time() + self.settings.llm_deadline
        if stream:
            return Plan(what=f"{call.role}/{call.task}", candidates=candidates,
                        attempt=lambda attempt: self._open(attempt, call), timeout=timeout,
                        deadline=deadline, again=again, hold=True)  # fmt: skip
        return Plan(what=f"{call.role}/{call.task}", candidates=candidates,
                    attempt=lambda attempt: self._attempt(attempt, call), timeout=timeout,
                    deadline=deadline, again=again)  # fmt: skip

    def _options(self, candidate: Candidate, call: _Call) -> ProviderOptions:
        """What the provider gets: the route's options, the caller's over them, and the
        gateway's keys."""
        merged = {**candidate.options, **call.options}
        merged.pop("timeout", None)  # the attempt loop's, not the provider's
        options = cast(ProviderOptions, merged)
        options["model"] = candidate.model
        options["payload"] = call.payload
        if call.mode == "json" and call.schema is not None:
            options["schema"] = call.schema
        if call.messages is not None:
            options["messages"] = call.messages
        return options

    async def _attempt(self, attempt: Try[Candidate], call: _Call) -> LLMProviderResponse:
        """One call to one endpoint, its answer checked against the schema."""
        provider: LLMProvider = attempt.endpoint.provider
        assert call.prompt is not None
        options = self._options(attempt.candidate, call)
        response = await provider.generate(
            call.prompt.text, call.role, call.task, call.mode, options
        )
        self._check(call, response, attempt.candidate, attempt.endpoint.name)
        telemetry.attempt_usage(response.model, response.usage)
        return response

    async def _open(self, attempt: Try[Candidate], call: _Call) -> _Opened:
        """One streamed call to one endpoint, up to its first piece; the stream keeps the
        attempt's slot until it ends."""
        provider: LLMProvider = attempt.endpoint.provider
        assert call.prompt is not None and attempt.hold is not None
        options = self._options(attempt.candidate, call)
        pieces = provider.stream(call.prompt.text, call.role, call.task, call.mode, options)
        attempt.hold.push_async_callback(pieces.aclose)  # type: ignore[attr-defined]
        first = await anext(pieces)
        if isinstance(first, LLMProviderResponse):  # all at once: checked (and repaired) now
            self._check(call, first, attempt.candidate, attempt.endpoint.name)
        return _Opened(first, pieces, attempt.hold, attempt.endpoint, attempt.candidate)

    def _check(
        self, call: _Call, response: LLMProviderResponse, candidate: Candidate, endpoint: str
    ) -> None:
        """OutputValidationError when a json answer does not match the caller's schema."""
        if call.validator is None:
            return
        errors = self.schemas.errors(call.validator, response.output)
        if errors:
            raise OutputValidationError(
                f"{candidate.label_on(endpoint)} answered, but the output does not match "
                "output_schema: " + "; ".join(errors[:3]),
                provider=endpoint, model=candidate.model, outcome="schema_invalid",
                details={"errors": errors}, raw=orjson.dumps(response.output).decode(),
            )  # fmt: skip


def chat_prompt(messages: list[dict[str, Any]]) -> RenderedPrompt:
    """A chat's messages as one prompt: their text, for providers that take one string, and
    a hash that names them in the call's meta."""
    text = "\n\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}"
                        for m in messages)  # fmt: skip
    return RenderedPrompt(text=text, template="chat",
                          hash=hashlib.sha256(text.encode()).hexdigest()[:16])  # fmt: skip


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def repair_note(problems: str) -> str:
    return (f"That answer cannot be used: {problems}. Answer again with only the corrected "
            "JSON.")  # fmt: skip
