"""Endpoint guards shared by every process on one Redis (REDIS_URL): a limit of 2 calls on an
endpoint holds across all workers and hosts, a job for a pool of endpoints goes to the one
that is free across all of them, and a circuit opened by one process makes the others skip
the endpoint.

- Limiter: a sorted-set semaphore per endpoint. Each call in flight holds a member of
  `<prefix><endpoint>:holders` scored by its lease expiry (Redis's own clock); the call renews
  its lease while it runs, so a killed process's slots come back when their leases lapse.
  Callers that find every slot taken join `:waiting` (scored by a ticket: first come, first
  served), bounded by the endpoint's queue length (QueueFullError past it, as in memory).
  Taking a slot, joining the line and giving a slot back are each one Lua script, so two
  processes never both take the last slot.
  Waiters are woken at once by a release: the release script publishes the endpoint's name
  on `<prefix>released`, and one listener per process (its own connection) wakes that
  endpoint's waiters, which look again. They also look every POLL seconds whatever happens:
  a slot freed by an expired lease (a killed process) announces nothing, and a message is
  lost while the listener reconnects. Pub/sub rather than fast polling alone: under 50
  waiting calls, polling often enough to be prompt costs thousands of scripts a second,
  which on a busy machine delays the very commands the guard needs.
- Pools: a candidate naming several endpoints (an image job on one-at-a-time ComfyUI
  servers) goes to whichever has a slot free across all processes, not to the one this
  process alone finds least busy. It tries each endpoint's slot without joining its line
  (the acquire script with no room in line: one script, so two processes never both take
  the last slot), and while none is free waits on all of them at once, woken by a release
  on the channel or after POLL seconds. Those waiters are this process's own (not in any
  `:waiting` line): between processes, whichever hears a release first goes first, and the
  calls in an endpoint's own line go before them.
- Breaker: failures and opened_at in a Redis hash, updated by Lua scripts. The attempt loop
  asks the breaker synchronously (picking an endpoint awaits nothing), so each process keeps
  a mirror of the shared state: every verdict updates Redis and the mirror from what the
  script returns, and a background task re-reads the breakers in use every SYNC seconds, so
  a circuit opened elsewhere is skipped here within that time. opened_at is turned into this
  process's monotonic time through Redis's clock, so hosts' clocks need not agree. In
  half-open, each process lets its own single probe through (at most one per process).

A Redis that does not answer (each command bounded by REDIS_TIMEOUT) never stalls or fails a
call: that call uses this process's in-memory guard, Redis is left alone for PAUSE seconds,
and one warning is logged (another when it answers again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sparklio.services.gateway.guard import CircuitBreaker, Limiter, QueueFullError
from sparklio.services.redis_client import redis_client

log = logging.getLogger("sparklio.gateway")

#: seconds between two looks at a full endpoint by a waiting call that heard nothing
POLL = 0.25
#: seconds a slot's lease lasts; a call renews it every third of that while it runs
HOLD = 15.0
#: seconds a waiter stays in line without looking again (a killed process's waiters go)
WAIT_LEASE = 2.0
#: seconds between two reads of the shared breakers in use
SYNC = 0.2
#: seconds Redis is left alone after it did not answer
PAUSE = 5.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS holders, waiting, leases, tickets; ARGV limit, max_queue, me, hold_ms, wait_ms.
#: 1: the slot is taken; 0: in line; -1: the line is full.
ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, member in ipairs(gone) do
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
end
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], ARGV[3])
local queued = redis.call('ZCARD', KEYS[2])
if free > 0 and ((rank and rank < free) or ((not rank) and queued < free)) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[4]))
  if rank then
    redis.call('ZREM', KEYS[2], ARGV[3])
    redis.call('ZREM', KEYS[3], ARGV[3])
  end
  return 1
end
if not rank then
  if queued >= tonumber(ARGV[2]) then return -1 end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[3])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[4])) end
return 0
"""
)

#: KEYS holders; ARGV me, hold_ms: push the lease of a slot still held further.
RENEW = (
    _NOW
    + """
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""
)

#: KEYS holders, waiting, leases; ARGV me, channel, endpoint: give a slot (or a place in
#: line) back; a slot given back is announced on the channel.
RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

#: KEYS breaker; ARGV threshold, probing (1/0), ttl_ms -> failures, opened_at, now (seconds)
FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if ARGV[2] == '1' or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'opened_at', tostring(now))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {failures, redis.call('HGET', KEYS[1], 'opened_at') or '', tostring(now)}
"""

#: KEYS breaker -> failures, opened_at, now (seconds); SUCCESS closes it.
READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'failures', 'opened_at')
return {state[1] or '0', state[2] or '', tostring(now)}
"""
SUCCESS = "redis.call('DEL', KEYS[1]) return 1"


class RedisDownError(Exception):
    """Redis did not answer in time (or is being left alone after it did not)."""


class SharedState:
    """One process's connection to the shared guards: the client, the scripts, the
    down-or-up bookkeeping, and the task that keeps breaker mirrors fresh."""

    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        self.redis = redis_client(url, timeout=timeout)
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.channel = prefix + "released"
        #: this process's limiters by endpoint, for the listener to wake
        self.limiters: weakref.WeakValueDictionary[str, SharedLimiter] = (
            weakref.WeakValueDictionary()
        )
        self._listener: asyncio.Task[None] | None = None
        self.scripts = {
            name: self.redis.register_script(text)
            for name, text in (("acquire", ACQUIRE), ("renew", RENEW), ("release", RELEASE),
                               ("failure", FAILURE), ("read", READ), ("success", SUCCESS))
        }  # fmt: skip
        self.breakers: weakref.WeakSet[SharedBreaker] = weakref.WeakSet()
        self._down_until = 0.0
        self._last_error: str | None = None
        self._sync: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def key(self, endpoint: str, what: str) -> str:
        return f"{self.prefix}{endpoint}:{what}"

    def usable(self) -> bool:
        return self._last_error is None or time.monotonic() >= self._down_until

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """One script, bounded by the timeout; RedisDownError when Redis does not answer."""
        if not self.usable():
            raise RedisDownError(self._last_error)
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.scripts[script](keys=keys, args=args)
        except Exception as exc:
            self._failed(exc)
            raise RedisDownError(str(exc)) from exc
        self._answered()
        return result

    def background(self, work: Callable[[], Awaitable[Any]]) -> bool:
        """Run `work` without waiting for it (a verdict to record, a line to leave); False
        when there is no event loop to run it on (the in-memory state is all there is)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    @staticmethod
    async def _quietly(work: Callable[[], Awaitable[Any]]) -> None:
        with contextlib.suppress(RedisDownError):
            await work()

    def listen(self, limiter: SharedLimiter) -> None:
        """Wake `limiter`'s waiters when another process gives a slot back."""
        self.limiters[limiter.endpoint] = limiter
        if self._listener is None or self._listener.done():
            try:
                self._listener = asyncio.get_running_loop().create_task(self._listen())
            except RuntimeError:
                self._listener = None

    async def _listen(self) -> None:
        """Subscribed to the release channel on a connection of its own (no read timeout:
        it waits for messages); reconnects after a failure, the waiters polling meanwhile."""
        from redis.asyncio import Redis

        while True:
            client = Redis.from_url(self.url, socket_connect_timeout=self.timeout)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            limiter = self.limiters.get(_text(message["data"]))
                            if limiter is not None:
                                limiter.notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("endpoint guards: the release listener stopped (%s)", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(PAUSE)

    def watch(self, breaker: SharedBreaker) -> None:
        """Keep `breaker`'s mirror fresh; starts the sync task on first use in a loop."""
        self.breakers.add(breaker)
        if self._sync is None or self._sync.done():
            try:
                self._sync = asyncio.get_running_loop().create_task(self._sync_loop())
            except RuntimeError:
                self._sync = None

    async def _sync_loop(self) -> None:
        while True:
            for breaker in list(self.breakers):
                # a read that crossed one of this process's own verdicts is stale: dropped
                seen = breaker.verdicts
                with contextlib.suppress(RedisDownError):
                    state = await self.run("read", [breaker.key], [])
                    if breaker.verdicts == seen and not breaker.pending:
                        breaker.apply(state)
            await asyncio.sleep(SYNC)

    def _failed(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._last_error is None:
            log.warning(
                "endpoint guards: Redis does not answer (%s); each process limits and "
                "breaks its own calls until it does, trying again every %g s", error, PAUSE,
            )  # fmt: skip
        self._last_error = error
        self._down_until = time.monotonic() + PAUSE

    def _answered(self) -> None:
        if self._last_error is not None:
            log.warning("endpoint guards: Redis answers again; limits and breakers are shared")
            self._last_error = None

    async def aclose(self) -> None:
        for task in [self._sync, self._listener, *self._tasks]:
            if task is not None:
                task.cancel()
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.redis.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            log.debug("closing the guards' Redis: %s", exc)


@dataclass(eq=False)
class SharedLimiter(Limiter):
    """At most `limit` calls in flight on the endpoint across every process on the Redis;
    `in_flight` and `waiting` count this process's calls. Falls back to the in-memory
    limiter for a call when Redis does not answer."""

    shared: SharedState | None = field(default=None, repr=False)
    endpoint: str = ""
    _released: asyncio.Event | None = field(default=None, repr=False)

    @asynccontextmanager
    async def slot(self, *, wait: bool = True) -> AsyncIterator[float]:
        shared = self.shared
        if self.limit is None or shared is None or not shared.usable():
            async with super().slot(wait=wait) as waited:
                yield waited
            return
        keys = [shared.key(self.endpoint, k) for k in ("holders", "waiting", "leases", "tickets")]
        me = uuid.uuid4().hex
        try:
            waited_ms = await self._acquire(shared, keys, me, wait)
        except RedisDownError:
            # the line in Redis is unknown: this call goes through this process's own limiter
            async with super().slot(wait=wait) as waited:
                yield waited
            return
        self.in_flight += 1
        renew = asyncio.create_task(self._renew(shared, keys[0], me))
        try:
            yield waited_ms
        finally:
            renew.cancel()
            self.in_flight -= 1
            try:
                await shared.run("release", keys[:3], [me, shared.channel, self.endpoint])
            except RedisDownError:
                pass  # the lease lapses within HOLD seconds
            finally:
                self.notify()

    async def _acquire(self, shared: SharedState, keys: list[str], me: str, wait: bool) -> float:
        """Take a slot in Redis, waiting in line if need be; the milliseconds waited. Not
        `wait`ing, the line has no room (QueueFullError unless a slot is free now)."""
        max_queue = self.max_queue if wait else 0
        args = [self.limit, max_queue, me, int(HOLD * 1000), int(WAIT_LEASE * 1000)]
        started = time.perf_counter()
        queued = held = False
        try:
            while True:
                got = await shared.run("acquire", keys, args)
                if got == 1:
                    held = True
                    return (time.perf_counter() - started) * 1000 if queued else 0.0
                if got == -1:
                    raise QueueFullError
                if not queued:
                    queued = True
                    self.waiting += 1
                    shared.listen(self)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup().wait(), POLL)
        finally:
            if queued:
                self.waiting -= 1
                if not held:  # cancelled, timed out or Redis gone while in line: leave it
                    release = [me, shared.channel, self.endpoint]
                    shared.background(lambda: shared.run("release", keys[:3], release))

    async def _renew(self, shared: SharedState, holders: str, me: str) -> None:
        """Keep a slot's lease alive while the call runs (an image render may take minutes)."""
        while True:
            await asyncio.sleep(HOLD / 3)
            with contextlib.suppress(RedisDownError):
                await shared.run("renew", [holders], [me, int(HOLD * 1000)])

    def _wakeup(self) -> asyncio.Event:
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    def watch(self) -> asyncio.Future[None]:
        """A future done when a slot is given back by any process on the Redis (its release
        is heard), or after POLL seconds: a slot freed by a lapsed lease announces nothing."""
        future = super().watch()
        if self.shared is not None and self.limit is not None:
            self.shared.listen(self)
            timer = asyncio.get_running_loop().call_later(POLL, _settle, future)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def notify(self) -> None:
        """A slot was given back, here or by another process: this process's waiters, and
        the pools watching this endpoint, look again at once."""
        if self._released is not None:
            self._released.set()
            self._released = None
        self._freed()


@dataclass(eq=False)
class SharedBreaker(CircuitBreaker):
    """A circuit breaker whose failures and opening are shared through Redis; the fields are
    this process's mirror of them (see the module's docstring)."""

    shared: SharedState | None = field(default=None, repr=False)
    key: str = ""
    #: this process's verdicts so far, and those not yet written to Redis
    verdicts: int = field(default=0, repr=False)
    pending: int = field(default=0, repr=False)

    __hash__ = object.__hash__  # kept in a WeakSet, by identity

    def ready(self) -> bool:
        self._watch()
        return super().ready()

    def allow(self) -> bool:
        self._watch()
        return super().allow()

    def success(self) -> None:
        super().success()
        if self.shared is not None:
            shared = self.shared
            self._record(lambda: shared.run("success", [self.key], []))

    def failure(self) -> None:
        probing = self.probing
        super().failure()
        if self.shared is not None:
            shared = self.shared
            ttl = int(max(self.cooldown * 4, 60) * 1000)
            args = [self.threshold, int(probing), ttl]

            async def push() -> None:
                self.apply(await shared.run("failure", [self.key], args))

            self._record(push)

    def _record(self, push: Callable[[], Awaitable[Any]]) -> None:
        """Write a verdict to Redis in the background; the mirror has it already."""
        assert self.shared is not None
        self.verdicts += 1
        self.pending += 1

        async def counted() -> None:
            try:
                await push()
            finally:
                self.pending -= 1

        if not self.shared.background(counted):
            self.pending -= 1

    def apply(self, state: list[Any]) -> None:
        """Take the shared state (failures, opened_at, Redis's now) into the mirror."""
        failures, opened, now = (_text(v) for v in state)
        self.failures = int(failures or 0)
        if not opened:
            self.opened_at, self.probing = None, False
            return
        age = float(now) - float(opened)
        self.opened_at = time.monotonic() - max(0.0, age)

    def _watch(self) -> None:
        if self.shared is not None and self not in self.shared.breakers:
            self.shared.watch(self)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
