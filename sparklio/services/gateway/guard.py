"""The gateways' defences against real model and image servers: retry timing, and per
endpoint a circuit breaker and a concurrency limit with a queue. On the happy path each costs
a few attribute reads."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from sparklio.core.config import Settings
from sparklio.exceptions import ProviderError, ServiceUnavailableError

#: Failures that say something about the endpoint's health (not about the request or model).
ENDPOINT_FAILURES = frozenset({
    "timeout", "connection_refused", "connection_error", "stream_error",
    "http_500", "http_502", "http_503", "http_504", "http_529",
})  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """When to try the same candidate again: exponential backoff with full jitter, or the
    upstream's Retry-After when it gave one, up to a cap."""

    max_retries: int = 2
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    retry_after_max: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.llm_max_retries,
            backoff_base=settings.llm_backoff_base,
            backoff_max=settings.llm_backoff_max,
            retry_after_max=settings.llm_retry_after_max,
        )

    def delay(self, retry: int, error: ProviderError) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None to stop trying."""
        if not error.retryable or retry >= self.max_retries:
            return None
        if error.retry_after is not None:
            # a wait longer than the cap means "not soon": better to fall back now
            return error.retry_after if error.retry_after <= self.retry_after_max else None
        ceiling = min(self.backoff_max, self.backoff_base * 2**retry)
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class CircuitBreaker:
    """After `threshold` consecutive endpoint failures the circuit opens: calls skip the
    endpoint for `cooldown` seconds, then one probe call decides whether it closes again."""

    threshold: int = 5
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    #: which claim holds the probe, so a call only ever gives back its own probe
    _probe_claims: int = field(default=0, init=False, repr=False)

    def allow(self) -> bool:
        """Whether a call may go to the endpoint now (claims the probe when half-open).
        A caller that claims the probe must end it: prefer `admit()`, which always does."""
        if self.opened_at is None:
            return True
        if self.probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self.probing = True
        self._probe_claims += 1
        return True

    def ready(self) -> bool:
        """Whether `allow()` would let a call through now (without claiming the probe)."""
        if self.opened_at is None:
            return True
        return not self.probing and time.monotonic() - self.opened_at >= self.cooldown

    @contextmanager
    def admit(self) -> Iterator[bool]:
        """Whether a call may go to the endpoint, for the length of that call. A call that
        claimed the probe and ends without a verdict on the endpoint (cancelled, queue full,
        a bad request, an error of ours) gives the probe back, so the next call probes
        instead of the endpoint being skipped for good."""
        allowed = self.allow()
        claim = self._probe_claims if allowed and self.probing else None
        try:
            yield allowed
        finally:
            if claim is not None and self.probing and self._probe_claims == claim:
                self.release_probe()

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at, self.probing = time.monotonic(), False

    def release_probe(self) -> None:
        """The probe ended without a verdict on the endpoint: the circuit stays open and,
        its cooldown being over, the next call becomes the probe."""
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing else "open"


class QueueFullError(ServiceUnavailableError):
    """Every slot of an endpoint is busy and its waiting line is full (the attempt loop turns
    it into the outcome `queue_full`)."""

    def __init__(self) -> None:
        super().__init__("every slot is busy and the waiting line is full")


@dataclass
class Limiter:
    """At most `limit` calls in flight; up to `max_queue` more wait in line."""

    limit: int | None
    max_queue: int
    in_flight: int = 0
    waiting: int = 0
    _semaphore: asyncio.Semaphore | None = field(default=None, repr=False)
    #: callers waiting for the next freed slot on any of several limiters (see `freed`)
    _watchers: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

    def watch(self) -> asyncio.Future[None]:
        """A future done when a slot is next given back: a pool of endpoints waits on all of
        its limiters at once and takes whichever frees first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers = [w for w in self._watchers if not w.done()]  # the given-up ones go
        self._watchers.append(future)
        return future

    def _freed(self) -> None:
        watchers, self._watchers = self._watchers, []
        for future in watchers:
            if not future.done():
                future.set_result(None)

    @asynccontextmanager
    async def slot(self, *, wait: bool = True) -> AsyncIterator[float]:
        """Hold a slot for one call; yields the milliseconds spent waiting for it. With
        `wait=False`, a slot only if one is free now (no one in line): QueueFullError at once
        otherwise (a pool of endpoints tries each before waiting for any)."""
        if self.limit is None:
            yield 0.0
            return
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        started = 0.0
        if self._semaphore.locked():
            if not wait or self.waiting >= self.max_queue:
                raise QueueFullError
            started = time.perf_counter()
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.in_flight += 1
        try:
            yield (time.perf_counter() - started) * 1000 if started else 0.0
        finally:
            self.in_flight -= 1
            self._semaphore.release()
            self._freed()


@dataclass
class EndpointGuard:
    """What stands in front of one endpoint: its breaker and its limiter."""

    breaker: CircuitBreaker
    limiter: Limiter

    def busy(self) -> float:
        """How loaded the endpoint is: calls in flight and waiting, per slot."""
        used = self.limiter.in_flight + self.limiter.waiting
        return used / self.limiter.limit if self.limiter.limit else float(used)

    def snapshot(self) -> dict[str, object]:
        return {"circuit": self.breaker.state, "in_flight": self.limiter.in_flight,
                "waiting": self.limiter.waiting, "max_concurrency": self.limiter.limit,
                "max_queue": self.limiter.max_queue}  # fmt: skip
