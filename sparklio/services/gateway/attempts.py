"""The attempt loop both gateways run: try a route's candidates in order until one answers.

For each candidate the loop picks the least busy healthy endpoint it names (skipping one that
is unavailable or whose circuit is open), waits for a slot there (an image job on a pool whose
endpoints are all busy waits for whichever frees first), and runs one attempt under a
timeout. A failure of the endpoint itself sends the next attempt to another endpoint of the same
candidate at once; otherwise a transient failure is retried after a backoff (or the upstream's
Retry-After); then the next candidate is tried. Every attempt is recorded in a `Trail`; when all
candidates fail, one error says what each did.

What an attempt does (an LLM call and its schema check, an image job) is the gateway's: it
hands the loop a function of a `Try`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sparklio.exceptions import (
    GatewayError,
    ProviderError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
)
from sparklio.services import telemetry
from sparklio.services.gateway.endpoints import Endpoint, Endpoints
from sparklio.services.gateway.guard import ENDPOINT_FAILURES, QueueFullError, RetryPolicy
from sparklio.services.gateway.routing import C

log = logging.getLogger("sparklio.gateway")

R = TypeVar("R")

#: Failures that say "busy or switched off", not "broken": the caller should come back.
CAPACITY = frozenset({"queue_full", "circuit_open"})
#: Failures after which another endpoint of the same candidate is tried at once.
FAILOVER = ENDPOINT_FAILURES | {"unavailable", "queue_full"}


@dataclass(slots=True)
class Try(Generic[C]):
    """What one attempt gets: the candidate, the endpoint chosen for it, and its time."""

    candidate: C
    endpoint: Endpoint[Any]
    timeout: float
    #: with `Plan.hold`: what the attempt holds (its slot on the endpoint), for the result to
    #: release when it is done with the endpoint (a stream, after its last piece)
    hold: AsyncExitStack | None = None


@dataclass(slots=True)
class Trail:
    """The record of one call's attempts: what `meta.attempts` and the call log show."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    queue_ms: float = 0.0
    #: extra fields for each attempt's record (e.g. the media workflow)
    describe: Callable[[Any], dict[str, Any]] | None = None
    #: the call's span when tracing (sparklio.services.telemetry): its attempts' parent
    span: Any = None

    def record(self, candidate: Any, endpoint: str, outcome: str, latency_ms: float) -> None:
        entry = {"provider": endpoint, "model": candidate.model, "outcome": outcome,
                 "latency_ms": round(latency_ms, 2)}  # fmt: skip
        if self.describe is not None:
            entry.update(self.describe(candidate))
        self.attempts.append(entry)


@dataclass(slots=True)  # not frozen: one is made per call, and a frozen __init__ costs more
class Plan(Generic[C, R]):
    """How a gateway wants one call run."""

    #: what the call is, for messages: "copywriter/channel_copy"
    what: str
    candidates: Sequence[C]
    attempt: Callable[[Try[C]], Awaitable[R]]
    #: seconds one attempt on an endpoint may take
    timeout: Callable[[C, Endpoint[Any]], float]
    #: event-loop time by which every try must be over; None for no deadline
    deadline: float | None = None
    #: whether waiting for a slot counts against the attempt's timeout (image jobs wait
    #: their turn on a one-at-a-time server without a clock running)
    queue_in_timeout: bool = True
    #: whether an attempt that ran out of time is worth another try on the same candidate
    #: (a model call is; an image render that took too long will take too long again)
    retry_timeouts: bool = True
    #: what a timeout message adds after "did not answer within N s"
    after_timeout: str = ""
    #: whether a successful attempt keeps its slot on the endpoint: it hands `Try.hold` to
    #: its result, which closes it (a stream that goes on after the attempt returned)
    hold: bool = False
    #: called with a failure; True to try the same candidate again at once (a JSON repair)
    again: Callable[[ProviderError], bool] | None = None


class AttemptLoop:
    """Runs plans over a table of endpoints with one retry policy."""

    def __init__(self, endpoints: Endpoints[Any], retry: RetryPolicy) -> None:
        self.endpoints = endpoints
        self.retry = retry

    async def run(self, plan: Plan[C, R], trail: Trail) -> R:
        """The first answer of the plan's candidates; a GatewayError naming what each did."""
        loop = asyncio.get_running_loop()
        failures: list[tuple[C, int, ProviderError]] = []
        for candidate in plan.candidates:
            start = len(trail.attempts)
            try:
                return await self._candidate(plan, candidate, trail)
            except ProviderError as exc:
                failures.append((candidate, start, exc))
            if plan.deadline is not None and loop.time() >= plan.deadline:
                break
        raise all_failed(plan.what, trail, failures)

    async def _candidate(self, plan: Plan[C, R], candidate: C, trail: Trail) -> R:
        """Attempts on one candidate until one answers or trying it further is pointless."""
        loop = asyncio.get_running_loop()
        excluded: set[str] = set()
        retry = 0
        while True:
            held = AsyncExitStack()  # a slot taken while waiting for room in a pool
            try:
                room = None
                if not plan.queue_in_timeout:
                    room = await self._until_room(candidate, excluded, trail, held)
                endpoint = room or self._pick(candidate, excluded, trail)
                breaker = endpoint.guard.breaker
                # a probe that ends without a verdict (cancelled, queue full, a bad request)
                # is given back on the way out, whatever the way out is
                with breaker.admit() as allowed:
                    if not allowed:  # only after a wait for room: the circuit opened meanwhile
                        raise self._skipped(candidate, [endpoint], trail)
                    try:
                        result = await self._attempt(plan, candidate, endpoint, trail,
                                                     slotted=room is not None)  # fmt: skip
                        breaker.success()
                        return result
                    except ProviderError as exc:
                        if exc.outcome in ENDPOINT_FAILURES:
                            breaker.failure()
                        elif exc.outcome not in CAPACITY:
                            breaker.success()  # it answered: the endpoint itself is fine
                        error = exc
            finally:
                await held.aclose()
            if plan.again is not None and plan.again(error):
                continue
            if error.outcome in FAILOVER and self._others(candidate, {*excluded, endpoint.name}):
                excluded.add(endpoint.name)
                continue
            delay = self.retry.delay(retry, error)
            if delay is None:
                raise error
            if plan.deadline is not None and loop.time() + delay >= plan.deadline:
                raise error
            retry += 1
            await asyncio.sleep(delay)

    async def _until_room(
        self, candidate: C, excluded: set[str], trail: Trail, held: AsyncExitStack
    ) -> Endpoint[Any] | None:
        """For a candidate served by several endpoints: the least busy one with a slot free,
        that slot taken and held in `held`; while every one is busy, it waits for whichever
        frees first rather than queueing behind one busy endpoint while another comes free
        (an image job on a pool of one-at-a-time ComfyUI servers). None for the usual pick:
        fewer than two endpoints left, or the pool's line full (the usual path then says
        queue_full).

        The slot is taken, not only looked at: with limits shared through Redis, a look
        leaves time for another process to take it, and this process's counts (least busy)
        know nothing of the others' calls. The wait shows as one waiting on the least busy
        endpoint (its `waiting`, its queue limit). Only for plans whose wait for a slot is
        not timed (the waiting has no clock here)."""
        started = 0.0
        room: Endpoint[Any] | None = None
        while room is None:
            pool = [
                self.endpoints.get(name)
                for name in candidate.targets
                if name not in excluded and self.endpoints.get(name).usable()
            ]
            if len(pool) < 2:
                break
            # watched before trying: a slot given back while trying is not missed
            watches = [e.guard.limiter.watch() for e in pool]
            try:
                room = await _first_free(pool, held)
                line = min(pool, key=_load).guard.limiter
                if room is not None or line.waiting >= line.max_queue:
                    break
                started = started or time.perf_counter()
                line.waiting += 1
                try:
                    await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    line.waiting -= 1
            finally:
                for watch in watches:
                    watch.cancel()
        if started:
            trail.queue_ms += (time.perf_counter() - started) * 1000
        return room

    def _others(self, candidate: Any, excluded: set[str]) -> bool:
        return any(
            self.endpoints.get(name).usable() for name in candidate.targets if name not in excluded
        )

    def _pick(self, candidate: C, excluded: set[str], trail: Trail) -> Endpoint[Any]:
        """The least busy endpoint of the candidate that can take a call now."""
        if candidate.provider is not None and not excluded:  # one endpoint: the common case
            endpoint = self.endpoints.get(candidate.provider)
            if endpoint.usable():
                endpoint.picks += 1
                return endpoint
            raise self._skipped(candidate, [endpoint], trail)
        chosen: Endpoint[Any] | None = None
        skipped: list[Endpoint[Any]] = []
        for name in candidate.targets:
            if name in excluded:
                continue
            endpoint = self.endpoints.get(name)
            if not endpoint.usable():
                skipped.append(endpoint)
            elif chosen is None or _load(endpoint) < _load(chosen):
                chosen = endpoint
        if chosen is None:
            raise self._skipped(candidate, skipped, trail)
        chosen.picks += 1
        return chosen

    @staticmethod
    def _skipped(candidate: Any, skipped: list[Endpoint[Any]], trail: Trail) -> ProviderError:
        """The error for a candidate none of whose endpoints can take a call, each recorded."""
        reasons: list[str] = []
        outcome = "unavailable"
        for endpoint in skipped:
            reason = endpoint.unavailable_reason()
            where = candidate.label_on(endpoint.name)
            if reason:
                trail.record(candidate, endpoint.name, "unavailable", 0.0)
                reasons.append(f"{where} is unavailable: {reason}")
            else:
                breaker = endpoint.guard.breaker
                outcome = "circuit_open"
                trail.record(candidate, endpoint.name, outcome, 0.0)
                reasons.append(
                    f"{where} skipped: its circuit is open after {breaker.failures} failures in "
                    f"a row; one probe call is let through after {breaker.cooldown:g} s."
                )
        name = skipped[-1].name if skipped else candidate.where
        return ProviderError(" ".join(reasons) or f"{candidate.label}: no endpoint is left.",
                             provider=name, model=candidate.model, outcome=outcome)  # fmt: skip

    async def _attempt(
        self,
        plan: Plan[C, R],
        candidate: C,
        endpoint: Endpoint[Any],
        trail: Trail,
        *,
        slotted: bool = False,
    ) -> R:
        """One attempt on one endpoint, timed and recorded in the trail; `slotted` when the
        call holds its slot there already (see `_until_room`)."""
        timeout = plan.timeout(candidate, endpoint)
        if plan.deadline is not None:
            timeout = max(0.0, min(timeout, plan.deadline - asyncio.get_running_loop().time()))
        limiter = endpoint.guard.limiter
        where = candidate.label_on(endpoint.name)
        started, queued = time.perf_counter(), trail.queue_ms
        outcome = "ok"
        span = telemetry.attempt_started(trail.span, endpoint.kind, endpoint.name, candidate.model)
        try:
            if plan.hold:
                stack = AsyncExitStack()
                try:
                    async with asyncio.timeout(timeout):
                        trail.queue_ms += await stack.enter_async_context(limiter.slot())
                        return await plan.attempt(Try(candidate, endpoint, timeout, stack))
                except BaseException:
                    await stack.aclose()
                    raise
            if plan.queue_in_timeout:
                async with asyncio.timeout(timeout), limiter.slot() as waited:
                    trail.queue_ms += waited
                    return await plan.attempt(Try(candidate, endpoint, timeout))
            slot: AbstractAsyncContextManager[float] = (
                nullcontext(0.0) if slotted else limiter.slot()
            )
            async with slot as waited:
                trail.queue_ms += waited
                async with asyncio.timeout(timeout):
                    return await plan.attempt(Try(candidate, endpoint, timeout))
        except TimeoutError:
            outcome = "timeout"
            raise UpstreamTimeoutError(
                f"{where} did not answer within {timeout:g} s{plan.after_timeout}.",
                provider=endpoint.name, model=candidate.model, outcome=outcome,
                retryable=plan.retry_timeouts,
            ) from None  # fmt: skip
        except QueueFullError:
            outcome = "queue_full"
            raise ProviderError(
                f"{where} is busy: {limiter.limit} calls in flight and {limiter.waiting} "
                "waiting (the most it queues).",
                provider=endpoint.name, model=candidate.model, outcome=outcome,
            ) from None  # fmt: skip
        except ProviderError as exc:
            outcome = exc.outcome
            raise
        except GatewayError:
            outcome = "rejected"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:  # a provider bug must not become a 500 without a name on it
            outcome = "error"
            log.exception("provider %s failed", where)
            raise ProviderError(
                f"{where} failed: {type(exc).__name__}: {exc}",
                provider=endpoint.name, model=candidate.model,
            ) from exc  # fmt: skip
        finally:
            trail.record(candidate, endpoint.name, outcome, (time.perf_counter() - started) * 1000)
            telemetry.attempt_done(
                span, endpoint, candidate.model, outcome, trail.queue_ms - queued
            )


async def _first_free(pool: list[Endpoint[Any]], held: AsyncExitStack) -> Endpoint[Any] | None:
    """The least busy endpoint of `pool` with a slot free now, that slot taken (held in
    `held`); None, having waited for nothing, when every slot is taken."""
    for endpoint in sorted(pool, key=_load):
        try:
            await held.enter_async_context(endpoint.guard.limiter.slot(wait=False))
        except QueueFullError:
            continue
        endpoint.picks += 1
        return endpoint
    return None


def _load(endpoint: Endpoint[Any]) -> tuple[float, int]:
    """Least busy first; of equals, the one picked least."""
    return endpoint.guard.busy(), endpoint.picks


def all_failed(
    what: str, trail: Trail, failures: list[tuple[Any, int, ProviderError]]
) -> GatewayError:
    """One error for a call whose every candidate failed, naming what each one did."""
    last = failures[-1][2]
    busy = all(f.outcome in CAPACITY or f.outcome == "unavailable" for _, _, f in failures) and any(
        f.outcome in CAPACITY for _, _, f in failures
    )  # nothing broke: every candidate is busy or resting, so the caller should come back
    if len(failures) == 1 and len(trail.attempts) == 1:
        # one attempt: its own error says it best
        return ServiceUnavailableError(last.message, details=last.details) if busy else last
    ends = [start for _, start, _ in failures[1:]] + [len(trail.attempts)]
    parts = []
    for (candidate, start, failure), end in zip(failures, ends, strict=True):
        outcomes = [a["outcome"] for a in trail.attempts[start:end]]
        tries = f"{len(outcomes)} attempt{'s' * (len(outcomes) != 1)}"
        parts.append(f"{candidate.label}: {tries} ({', '.join(outcomes)}), last: {failure.message}")
    summary = f"Every candidate for {what} failed. " + " ".join(
        f"{i}) {p}" for i, p in enumerate(parts, 1)
    )
    details: dict[str, Any] = {
        "failures": [
            {"provider": f.provider, "model": f.model, "outcome": f.outcome, "message": f.message}
            for _, _, f in failures
        ]
    }
    if isinstance(last.details, dict) and "errors" in last.details:
        details["errors"] = last.details["errors"]  # the schema errors of the last answer
    if busy:
        return ServiceUnavailableError(summary, details=details)
    # the last failure's class keeps its status: 504 after a timeout, 502 otherwise
    return type(last)(summary, provider=last.provider, model=last.model,
                      outcome=last.outcome, details=details)  # fmt: skip
