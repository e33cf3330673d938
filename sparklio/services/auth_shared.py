"""Auth state every gateway process shares through Redis (REDIS_URL): revocations and the
failed-login windows.

Why: each process trusts a resolved credential for a few seconds (`PrincipalCache`) and counts
failed logins in memory, so with two workers a revoked key kept working on the other one, and
an address got twice the login attempts.

- Revocations: `revoked(kind, id)` increments a version key and publishes `kind:id` on a
  channel, in one Lua script. Every process listens on the channel and drops the affected
  entries at once; and before it trusts a cached entry it reads the version key (one round
  trip) and clears its cache when the version moved, so a lost message cannot keep a revoked
  key alive.
- Failed logins: a sorted set per (account, address) and per address, checked and added to in
  one Lua script on Redis's clock, so concurrent attempts on several processes (and hosts)
  cannot pass the limit together.

A Redis that does not answer never fails or stalls a request: the version check on every
request is bounded by REDIS_TIMEOUT, the rare commands (a login's check, a revocation) by
RARE_TIMEOUT (a login spends longer on its password hash anyway, and a busy process must not
count logins alone because Redis took 0.1 s to answer). After a failure Redis is left alone
for `pause` seconds, during which cached credentials are trusted for `degraded_ttl` seconds
only and failed logins are counted per process. Both changes are logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from sparklio.core.config import Settings
from sparklio.services.auth_state import LocalLoginLimits, LoginLimits, Ticket
from sparklio.services.redis_client import redis_client, without_password

log = logging.getLogger("sparklio.auth")

Kind = Literal["key", "user", "session"]
#: seconds a cached credential is trusted while Redis (so other processes' revocations)
#: cannot be heard
DEGRADED_TTL = 1.0
#: seconds a login's check or a revocation may wait for Redis (at least REDIS_TIMEOUT)
RARE_TIMEOUT = 1.0
#: seconds between two tries to (re)subscribe to the revocation channel
RESUBSCRIBE = 1.0

_T = TypeVar("_T")

_REVOKE = """
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return version
"""

# KEYS: the (account, address) window, the address window
# ARGV: their limits, the window in ms, this attempt's member
# returns 0 when the attempt is admitted (and counted), else the ms to wait
_ADMIT = """
local t = redis.call('TIME')
local moment = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', moment - window)
  local limit = tonumber(ARGV[i])
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - moment)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, moment, ARGV[4])
  redis.call('PEXPIRE', key, window)
end
return 0
"""


class SharedAuth:
    """The Redis client for the auth state, bounded like the response cache's RedisCache."""

    def __init__(
        self, url: str, *, prefix: str = "sparklio:auth:", timeout: float = 0.1,
        pause: float = 5.0, degraded_ttl: float = DEGRADED_TTL,
    ) -> None:  # fmt: skip
        # the bound of each command is its asyncio.timeout; this one is a backstop
        self._redis = redis_client(url, timeout=max(timeout, RARE_TIMEOUT))
        self.url = without_password(url)
        self.prefix = prefix
        self.timeout = timeout
        self.pause = pause
        self.degraded_ttl = degraded_ttl
        self._version_key = prefix + "version"
        self._channel = prefix + "revoked"
        self._revoke = self._redis.register_script(_REVOKE)
        self._admit = self._redis.register_script(_ADMIT)
        self._down_until = 0.0
        self._rare_down_until = 0.0
        self._last_error: str | None = None
        self._listener: asyncio.Task[None] | None = None
        self._on_revoked: Callable[[Kind, str], None] | None = None

    # -- revocations ---------------------------------------------------------------------------

    def listen(self, on_revoked: Callable[[Kind, str], None]) -> None:
        """Call `on_revoked(kind, id)` for every revocation any process announces, from a
        task started now (so: from a running event loop), until `aclose`."""
        self._on_revoked = on_revoked
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="sparklio-revocations")

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def version(self) -> int | None:
        """The revocation counter (0 before the first), or None when Redis does not answer."""
        value = await self._run(lambda: self._redis.get(self._version_key))
        if value is _FAILED:
            return None
        return int(value) if value is not None else 0

    async def revoked(self, kind: Kind, ident: str) -> None:
        """Tell every process that `kind` `ident` was revoked (or its user deactivated).
        When Redis does not answer, other processes stop trusting it within CACHE_TTL."""
        done = await self._run(
            lambda: self._revoke(keys=[self._version_key, self._channel], args=[f"{kind}:{ident}"]),
            rare=True,
        )
        if done is _FAILED:
            log.warning(
                "could not announce the revocation of %s %s through Redis; other gateway "
                "processes stop accepting it within their cache's TTL", kind, ident,
            )  # fmt: skip

    async def _listen(self) -> None:
        failing = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(max(self.timeout, 1.0)):
                    await pubsub.subscribe(self._channel)
                if failing:
                    failing = False
                    log.warning("revocations: listening on Redis at %s again", self.url)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    log.warning(
                        "revocations: cannot listen on Redis at %s (%s); cached credentials "
                        "are trusted for %g s only until it answers", self.url, _describe(exc),
                        self.degraded_ttl,
                    )  # fmt: skip
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(max(self.timeout, 1.0)):
                        await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE)

    def _deliver(self, data: Any) -> None:
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        kind, _, ident = text.partition(":")
        if kind in ("key", "user", "session") and ident and self._on_revoked is not None:
            self._on_revoked(kind, ident)  # type: ignore[arg-type]  # checked just above

    # -- login limits --------------------------------------------------------------------------

    def login_limits(self, local: LocalLoginLimits) -> SharedLoginLimits:
        """Login limits in Redis, with `local` for while Redis does not answer."""
        return SharedLoginLimits(self, local)

    # -- the connection ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.url,
                "status": "unreachable" if self._last_error else "ok",
                "last_error": self._last_error}  # fmt: skip

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self._redis.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            log.debug("closing the auth state's Redis client: %s", exc)

    async def _run(
        self, command: Callable[[], Awaitable[_T]], *, rare: bool = False
    ) -> _T | Literal[_Failed.FAILED]:
        """`command`'s answer, or _FAILED when Redis does not answer in time (or was
        failing less than `pause` seconds ago). A `rare` command waits RARE_TIMEOUT, and only
        a failure of one of those makes the next ones skip Redis."""
        down_until = self._rare_down_until if rare else self._down_until
        if self._last_error is not None and time.monotonic() < down_until:
            return _FAILED
        try:
            async with asyncio.timeout(max(self.timeout, RARE_TIMEOUT) if rare else self.timeout):
                answer = await command()
        except Exception as exc:  # whatever failed, the caller goes on degraded
            error = _describe(exc)
            if self._last_error is None:
                log.warning(
                    "auth state: Redis at %s does not answer (%s); cached credentials are "
                    "trusted for %g s only and failed logins are counted per process, trying "
                    "again every %g s", self.url, error, self.degraded_ttl, self.pause,
                )  # fmt: skip
            self._last_error = error
            self._down_until = time.monotonic() + self.pause
            if rare:
                self._rare_down_until = self._down_until
            return _FAILED
        if self._last_error is not None:
            log.warning("auth state: Redis at %s answers again", self.url)
            self._last_error = None
        return answer


class SharedLoginLimits(LoginLimits):
    """The failed-login windows in Redis (see the module's docstring); per process while
    Redis does not answer."""

    def __init__(self, shared: SharedAuth, local: LocalLoginLimits) -> None:
        self._shared = shared
        self._local = local
        self.pair_limit = local.pair_limit
        self.address_limit = local.address_limit
        self.window = local.window

    async def admit(self, email: str, address: str) -> tuple[float, Ticket]:
        keys = self._keys(email, address)
        member = uuid.uuid4().hex
        shared = self._shared
        waited = await shared._run(
            lambda: shared._admit(
                keys=list(keys),
                args=[self.pair_limit, self.address_limit, int(self.window * 1000), member],
            ),
            rare=True,
        )
        if waited is _FAILED:
            return await self._local.admit(email, address)
        wait = int(waited) / 1000
        return wait, ("redis", member)

    async def undo(self, email: str, address: str, ticket: Ticket) -> None:
        if ticket[0] != "redis":
            return await self._local.undo(email, address, ticket)
        pair, by_address = self._keys(email, address)
        await self._shared._run(lambda: self._remove(ticket[1], pair, by_address), rare=True)

    async def succeeded(self, email: str, address: str, ticket: Ticket) -> None:
        if ticket[0] != "redis":
            return await self._local.succeeded(email, address, ticket)
        pair, by_address = self._keys(email, address)
        await self._shared._run(lambda: self._forget_pair(ticket[1], pair, by_address), rare=True)

    async def _remove(self, member: object, *keys: str) -> None:
        async with self._shared._redis.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.zrem(key, str(member))
            await pipe.execute()

    async def _forget_pair(self, member: object, pair: str, by_address: str) -> None:
        """A success wipes the (account, address) record, not the address's."""
        async with self._shared._redis.pipeline(transaction=True) as pipe:
            pipe.delete(pair)
            pipe.zrem(by_address, str(member))
            await pipe.execute()

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        """Digests, not the email and address themselves: no personal data in Redis's keys."""
        prefix = self._shared.prefix
        return (
            f"{prefix}login:pair:{_digest(email, address)}",
            f"{prefix}login:address:{_digest(address)}",
        )


def build_shared_auth(settings: Settings) -> SharedAuth | None:
    """The shared auth state when REDIS_URL is set; None keeps it all in this process."""
    if not settings.redis_url:
        return None
    return SharedAuth(
        settings.redis_url, prefix=settings.redis_auth_prefix, timeout=settings.redis_timeout
    )


class _Failed(enum.Enum):
    FAILED = 0


#: what `SharedAuth._run` answers when Redis did not
_FAILED = _Failed.FAILED


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
