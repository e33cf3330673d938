"""Limits and budgets per API key and per user: requests and tokens per minute, USD per day
and per month (priced by the routing file).

Why reserve-then-settle: a budget checked after the call lets 50 concurrent calls all pass
the check before any of them is counted. So a call takes its share *before* it runs, in one
atomic step for every limit that applies (a Lua script in Redis, or plain code between two
awaits in one process), and gives back the difference once its real tokens and cost are
known. A budget admits a call while any of it is left, so the last call admitted may end up
over it by at most its own cost.

Requests and tokens per minute are token buckets (capacity = the limit, refilled evenly over
a minute): no minute boundary lets twice the limit through. USD budgets count per calendar
day and month in UTC.

With REDIS_URL the counters are shared by every worker and host; without it they live in
this process (exact for one process). A Redis that does not answer within REDIS_TIMEOUT is
logged and the process falls back to its own in-memory counters until it answers again:
limits still hold per worker, the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import async_sessionmaker

from sparklio.core.config import Settings
from sparklio.db.models import ApiKey, User
from sparklio.exceptions import NotFoundError, TooManyRequestsError
from sparklio.services.redis_client import redis_client

log = logging.getLogger("sparklio.budgets")

#: seconds a principal's limits are kept before they are read again (set here: dropped now)
LIMITS_TTL = 5.0
#: seconds between two log lines about a Redis that does not answer
REDIS_QUIET = 30.0

#: USD below which a budget counts as spent: sums of float prices miss it by ~1e-17 (the
#: Lua scripts use the same 1e-9)
CENT_FRACTION = 1e-9
#: seconds a call refused for a budget held by calls in flight is told to wait
BUSY_RETRY = 1.0

LIMIT_NAMES = ("rpm", "tpm", "usd_per_day", "usd_per_month")


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's or user's limits; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_NAMES)

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in LIMIT_NAMES}


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose limits: `key:<id>` or `user:<id>`, named for people as `key 'ci'`."""

    id: str
    label: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Account:
    """The limits one call is held to: its key's and its user's."""

    scopes: tuple[Scope, ...] = ()

    @property
    def limited(self) -> bool:
        return any(scope.limits.any() for scope in self.scopes)


Kind = Literal["bucket", "total"]


@dataclass(frozen=True, slots=True)
class Check:
    """One counter a call takes from: a bucket (per minute) or a total (per day/month)."""

    key: str
    kind: Kind
    limit: float
    amount: float
    ttl: int  # seconds the counter is kept after its last use
    scope: Scope
    name: str  # rpm, tpm, usd_per_day, usd_per_month
    resets_at: datetime | None = None


@dataclass(slots=True)
class Ticket:
    """What a call reserved; `Budgets.settle` gives back the difference once."""

    checks: list[Check]
    tokens: float
    usd: float
    settled: bool = False


class Counters(Protocol):
    """The counters. `reserve` takes every amount or none: a bucket's from its level, a
    total's as *held*; it returns None, or the index of the first check that refuses with
    seconds to wait (a bucket) or whether the total is really spent (1.0) or only held by
    calls in flight (0.0). `settle` adds `used` and drops `held` per check; `read` says
    what is used (a bucket: taken; a total: used + held)."""

    async def reserve(self, checks: Sequence[Check], now: float) -> tuple[int, float] | None: ...

    async def settle(
        self, checks: Sequence[Check], held: Sequence[float], used: Sequence[float], now: float
    ) -> None: ...

    async def read(self, checks: Sequence[Check], now: float) -> list[float]: ...

    async def aclose(self) -> None: ...


class MemoryCounters:
    """The counters of one process: no await between the check and the take, so atomic."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._totals: dict[str, tuple[float, float, float]] = {}  # key -> (used, held, expires)

    def _level(self, check: Check, now: float) -> float:
        level, at = self._buckets.get(check.key, (check.limit, now))
        return min(check.limit, level + max(0.0, now - at) * check.limit / 60.0)

    def _total(self, check: Check, now: float) -> tuple[float, float]:
        used, held, expires = self._totals.get(check.key, (0.0, 0.0, math.inf))
        return (used, held) if expires > now else (0.0, 0.0)

    async def reserve(self, checks: Sequence[Check], now: float) -> tuple[int, float] | None:
        for index, check in enumerate(checks):
            if check.kind == "bucket":
                need = min(check.amount, check.limit)
                level = self._level(check, now)
                if level < need:
                    return index, (need - level) * 60.0 / check.limit
            else:
                used, held = self._total(check, now)
                if used + held >= check.limit - CENT_FRACTION:
                    return index, 1.0 if used >= check.limit - CENT_FRACTION else 0.0
        for check in checks:
            self._move(check, check.amount, 0.0, now)
        return None

    async def settle(
        self, checks: Sequence[Check], held: Sequence[float], used: Sequence[float], now: float
    ) -> None:
        for check, was_held, was_used in zip(checks, held, used, strict=True):
            self._move(check, -was_held, was_used, now)

    def _move(self, check: Check, held: float, used: float, now: float) -> None:
        if check.kind == "bucket":  # a bucket takes what is held and used alike
            level = min(check.limit, self._level(check, now) - held - used)
            self._buckets[check.key] = (level, now)
        else:
            was_used, was_held = self._total(check, now)
            self._totals[check.key] = (was_used + used, was_held + held, now + check.ttl)

    async def read(self, checks: Sequence[Check], now: float) -> list[float]:
        return [
            check.limit - self._level(check, now) if check.kind == "bucket"
            else sum(self._total(check, now))
            for check in checks
        ]  # fmt: skip

    async def aclose(self) -> None:
        return None


# Lua: the same steps as MemoryCounters', each script atomic in Redis. A bucket is a hash
# (level, at); a total a hash (used, held). ARGV: now, then per key: kind ("b"/"t"), limit,
# ttl, and an amount (reserve) or held and used deltas (settle).
_LEVEL = """
local function level_of(key, limit, now)
  local s = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(s[1]) or limit, tonumber(s[2]) or now
  return math.min(limit, level + math.max(0, now - at) * limit / 60)
end
"""

_RESERVE = (
    _LEVEL
    + """
local now = tonumber(ARGV[1])
local levels = {}
for i = 1, #KEYS do
  local kind, limit, amount = ARGV[i*4-2], tonumber(ARGV[i*4-1]), tonumber(ARGV[i*4+1])
  if kind == 'b' then
    local level = level_of(KEYS[i], limit, now)
    local need = math.min(amount, limit)
    if level < need then return {i, tostring((need - level) * 60 / limit)} end
    levels[i] = level
  else
    local s = redis.call('HMGET', KEYS[i], 'used', 'held')
    local used, held = tonumber(s[1]) or 0, tonumber(s[2]) or 0
    if used + held >= limit - 1e-9 then
      if used >= limit - 1e-9 then return {i, '1'} end
      return {i, '0'}
    end
  end
end
for i = 1, #KEYS do
  local kind, ttl, amount = ARGV[i*4-2], tonumber(ARGV[i*4]), tonumber(ARGV[i*4+1])
  if kind == 'b' then
    redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - amount), 'at', ARGV[1])
  else
    redis.call('HINCRBYFLOAT', KEYS[i], 'held', tostring(amount))
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return {0, '0'}
"""
)

_SETTLE = (
    _LEVEL
    + """
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local kind, limit, ttl = ARGV[i*5-3], tonumber(ARGV[i*5-2]), tonumber(ARGV[i*5-1])
  local held, used = tonumber(ARGV[i*5]), tonumber(ARGV[i*5+1])
  if kind == 'b' then
    local level = math.min(limit, level_of(KEYS[i], limit, now) + held - used)
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', ARGV[1])
  else
    redis.call('HINCRBYFLOAT', KEYS[i], 'held', tostring(-held))
    redis.call('HINCRBYFLOAT', KEYS[i], 'used', tostring(used))
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return 0
"""
)

_READ = (
    _LEVEL
    + """
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local kind, limit = ARGV[i*2], tonumber(ARGV[i*2+1])
  if kind == 'b' then
    out[i] = tostring(limit - level_of(KEYS[i], limit, now))
  else
    local s = redis.call('HMGET', KEYS[i], 'used', 'held')
    out[i] = tostring((tonumber(s[1]) or 0) + (tonumber(s[2]) or 0))
  end
end
return out
"""
)


class RedisCounters:
    """The counters in Redis, shared by every worker: each step one Lua script, so no other
    worker's call comes between a check and its take. Every command is bounded by
    `timeout`; when Redis does not answer, this process's own counters stand in."""

    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        from redis.exceptions import RedisError  # imported only when Redis is configured

        self._redis = redis_client(url, timeout=timeout, decode_responses=True)
        self.prefix = prefix
        self.timeout = timeout
        self._failures: tuple[type[BaseException], ...] = (TimeoutError, OSError, RedisError)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._read = self._redis.register_script(_READ)
        self.fallback = MemoryCounters()
        self._complained = -math.inf

    @staticmethod
    def _kind(check: Check) -> str:
        return "b" if check.kind == "bucket" else "t"

    async def _run(self, script: Any, checks: Sequence[Check], args: list[Any]) -> Any:
        keys = [self.prefix + check.key for check in checks]
        async with asyncio.timeout(self.timeout):
            return await script(keys=keys, args=args)

    def _down(self, exc: BaseException) -> None:
        moment = time.monotonic()
        if moment - self._complained >= REDIS_QUIET:
            self._complained = moment
            log.warning("Redis did not answer for the limits and budgets (%s): this worker "
                        "counts on its own until it does", exc or type(exc).__name__)  # fmt: skip

    async def reserve(self, checks: Sequence[Check], now: float) -> tuple[int, float] | None:
        args: list[Any] = [repr(now)]
        for check in checks:
            args += [self._kind(check), repr(check.limit), check.ttl, repr(check.amount)]
        try:
            found = await self._run(self._reserve, checks, args)
        except self._failures as exc:
            self._down(exc)
            return await self.fallback.reserve(checks, now)
        index, wait = int(found[0]), float(found[1])
        return None if index == 0 else (index - 1, wait)

    async def settle(
        self, checks: Sequence[Check], held: Sequence[float], used: Sequence[float], now: float
    ) -> None:
        args: list[Any] = [repr(now)]
        for check, was_held, was_used in zip(checks, held, used, strict=True):
            args += [self._kind(check), repr(check.limit), check.ttl, repr(was_held),
                     repr(was_used)]  # fmt: skip
        try:
            await self._run(self._settle, checks, args)
        except self._failures as exc:
            self._down(exc)
            await self.fallback.settle(checks, held, used, now)

    async def read(self, checks: Sequence[Check], now: float) -> list[float]:
        args: list[Any] = [repr(now)]
        for check in checks:
            args += [self._kind(check), repr(check.limit)]
        try:
            found = await self._run(self._read, checks, args)
        except self._failures as exc:
            self._down(exc)
            return await self.fallback.read(checks, now)
        return [float(value) for value in found]

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self._redis.aclose()
        except (TimeoutError, OSError):
            pass


def build_counters(settings: Settings) -> Counters:
    """Redis counters when REDIS_URL is set, else this process's own."""
    if settings.redis_url:
        return RedisCounters(settings.redis_url, prefix=settings.budget_prefix,
                             timeout=settings.budget_redis_timeout)  # fmt: skip
    return MemoryCounters()


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}".rstrip("0")


class Budgets:
    """Reads each principal's limits, reserves a call's share before it runs and settles it
    after; refuses with 429 (TooManyRequestsError) naming the limit and when it frees up."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[Any] | None,
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.counters = counters or build_counters(settings)
        self.defaults = Limits(
            settings.default_rpm,
            settings.default_tpm,
            settings.default_usd_per_day,
            settings.default_usd_per_month,
        )
        self._cache: dict[tuple[str, str | None], tuple[Account, float]] = {}
        self._last: dict[tuple[str, str | None], Account] = {}

    async def aclose(self) -> None:
        await self.counters.aclose()

    # -- whose limits ---------------------------------------------------------------------

    async def account(self, user_id: str, key_id: str | None) -> Account:
        """The limits a call of this user (through this key, if one) is held to. Read from
        the database at most every LIMITS_TTL seconds; when it cannot be read, the last
        known ones (or the defaults) hold."""
        ident = (user_id, key_id)
        moment = time.monotonic()
        cached = self._cache.get(ident)
        if cached is not None and cached[1] > moment:
            return cached[0]
        try:
            account = await self._load(user_id, key_id)
        except Exception as exc:
            log.warning("Could not read the limits of user %s (%s): the last known hold",
                        user_id, exc)  # fmt: skip
            account = self._last.get(ident) or self._with(None, None, user_id, key_id)
        self._cache[ident] = (account, moment + LIMITS_TTL)
        self._last[ident] = account
        if len(self._cache) > 10_000:  # old principals go; they are read again when they come
            self._cache.clear()
            self._last = {ident: account}
        return account

    async def _load(self, user_id: str, key_id: str | None) -> Account:
        if self.sessions is None:
            return self._with(None, None, user_id, key_id)
        async with self.sessions() as session:
            user = await session.get(User, user_id)
            key = await session.get(ApiKey, key_id) if key_id else None
        return self._with(user, key, user_id, key_id)

    def _with(
        self, user: User | None, key: ApiKey | None, user_id: str, key_id: str | None
    ) -> Account:
        """The key's own limits, and the user's (each unset one from the defaults)."""
        scopes = []
        if key is not None:
            own = limits_of(key)
            if own.any():
                scopes.append(Scope(f"key:{key.id}", f"key {key.name!r}", own))
        mine = limits_of(user) if user is not None else Limits()
        merged = Limits(**{name: getattr(mine, name) if getattr(mine, name) is not None
                           else getattr(self.defaults, name) for name in LIMIT_NAMES})  # fmt: skip
        if merged.any():
            label = f"user {user.email}" if user is not None else f"user {user_id}"
            scopes.append(Scope(f"user:{user_id}", label, merged))
        return Account(tuple(scopes))

    def forget(self, user_id: str | None = None, key_id: str | None = None) -> None:
        """Read these limits again at the next call (they were just changed here)."""
        for ident in list(self._cache):
            if (user_id is not None and ident[0] == user_id) or (
                key_id is not None and ident[1] == key_id
            ):
                del self._cache[ident]

    # -- reserve and settle ---------------------------------------------------------------

    def _checks(self, account: Account, tokens: float, usd: float, now: datetime) -> list[Check]:
        day = now.strftime("%Y-%m-%d")
        month = now.strftime("%Y-%m")
        next_day = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        checks = []
        # a bucket's key names its limit: a new limit starts full; a budget's spend stays
        for scope in account.scopes:
            lim = scope.limits
            if lim.rpm is not None:
                checks.append(
                    Check(f"{scope.id}:rpm:{lim.rpm}", "bucket", lim.rpm, 1, 120, scope, "rpm")
                )
            if lim.tpm is not None:
                key = f"{scope.id}:tpm:{lim.tpm}"
                checks.append(Check(key, "bucket", lim.tpm, tokens, 120, scope, "tpm"))
            if lim.usd_per_day is not None:
                checks.append(Check(f"{scope.id}:usd:{day}", "total", lim.usd_per_day, usd,
                                    2 * 86_400, scope, "usd_per_day", next_day))  # fmt: skip
            if lim.usd_per_month is not None:
                checks.append(Check(f"{scope.id}:usd:{month}", "total", lim.usd_per_month,
                                    usd, 32 * 86_400, scope, "usd_per_month",
                                    next_month))  # fmt: skip
        return checks

    async def reserve(
        self,
        account: Account | None,
        tokens: float = 0.0,
        usd: float = 0.0,
        *,
        requests_only: bool = False,
    ) -> Ticket | None:
        """Take one request, `tokens` and `usd` (estimates) from every limit that applies,
        all or none; TooManyRequestsError naming the first limit that refuses.
        `requests_only`: a call that uses no tokens (a media job) counts as a request only."""
        if account is None or not account.limited:
            return None
        now = datetime.now(UTC)
        checks = self._checks(account, tokens, usd, now)
        if requests_only:
            checks = [check for check in checks if check.name == "rpm"]
            if not checks:
                return None
        refused = await self.counters.reserve(checks, now.timestamp())
        if refused is not None:
            index, wait = refused
            raise self._refusal(checks[index], wait, now)
        return Ticket(checks, tokens, usd)

    async def settle(self, ticket: Ticket | None, tokens: float, usd: float) -> None:
        """Turn what was held into what was really used: the call's tokens and cost (once)."""
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        checks = [check for check in ticket.checks if check.name != "rpm"]  # a request is one
        if checks:
            held = [check.amount for check in checks]
            used = [tokens if check.name == "tpm" else usd for check in checks]
            await self.counters.settle(checks, held, used, time.time())

    def _refusal(self, check: Check, wait: float, now: datetime) -> TooManyRequestsError:
        lim = check.limit
        if check.name == "rpm":
            message = f"limit of {int(lim)} requests per minute for {check.scope.label} is reached"
        elif check.name == "tpm":
            message = f"limit of {int(lim)} tokens per minute for {check.scope.label} is reached"
        else:
            assert check.resets_at is not None
            period = "daily" if check.name == "usd_per_day" else "monthly"
            budget = f"{period} budget of {_money(lim)} for {check.scope.label}"
            if wait > 0:  # really spent: until the day or month ends
                wait = (check.resets_at - now).total_seconds()
                when = ("00:00 UTC" if check.name == "usd_per_day"
                        else f"{check.resets_at:%Y-%m-%d} 00:00 UTC")  # fmt: skip
                message = f"{budget} is spent; resets at {when}"
            else:  # what is left is held by calls still running: known once they end
                wait = BUSY_RETRY
                message = (f"{budget} is held by calls in flight; retry once they end (what "
                           "they do not spend is given back)")  # fmt: skip
        message = message[0].upper() + message[1:] + "."
        return TooManyRequestsError(message, retry_after=max(1.0, math.ceil(wait)),
                                    details={"limit": check.name, "scope": check.scope.id,
                                             "value": lim})  # fmt: skip

    # -- what is used ---------------------------------------------------------------------

    async def report(self, account: Account) -> list[dict[str, Any]]:
        """Per scope: each limit set, what of it is used and what remains."""
        now = datetime.now(UTC)
        checks = self._checks(account, 0.0, 0.0, now)
        used = await self.counters.read(checks, now.timestamp()) if checks else []
        out: dict[str, dict[str, Any]] = {}
        for check, value in zip(checks, used, strict=True):
            scope = out.setdefault(check.scope.id, {"scope": check.scope.id,
                                                    "name": check.scope.label})  # fmt: skip
            value = max(0.0, value)
            entry: dict[str, Any] = {
                "limit": check.limit,
                "used": round(value, 6) if check.kind == "total" else math.ceil(value),
                "remaining": round(max(0.0, check.limit - value), 6) if check.kind == "total"
                else math.floor(max(0.0, check.limit - value)),
            }  # fmt: skip
            if check.resets_at is not None:
                entry["resets_at"] = check.resets_at.isoformat()
            scope[check.name] = entry
        return list(out.values())

    # -- setting limits -------------------------------------------------------------------

    async def set_key_limits(
        self, user_id: str, key_id: str, limits: Limits, *, as_admin: bool = False
    ) -> ApiKey:
        """Set a key's limits (its owner's or, for an admin, anyone's); NotFoundError else."""
        assert self.sessions is not None
        async with self.sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key is None or (key.user_id != user_id and not as_admin):
                raise NotFoundError(f"No API key {key_id!r} of yours.")
            _store(key, limits)
        self.forget(key_id=key_id)
        return key

    async def set_user_limits(self, user_id: str, limits: Limits) -> User:
        assert self.sessions is not None
        async with self.sessions() as session, session.begin():
            user = await session.get(User, user_id)
            if user is None:
                raise NotFoundError(f"No user {user_id!r}.")
            _store(user, limits)
        self.forget(user_id=user_id)
        return user


def limits_of(row: ApiKey | User) -> Limits:
    return Limits(row.rpm, row.tpm, row.usd_per_day, row.usd_per_month)


def _store(row: ApiKey | User, limits: Limits) -> None:
    for name in LIMIT_NAMES:
        setattr(row, name, getattr(limits, name))


__all__ = ["Account", "Budgets", "Limits", "MemoryCounters", "RedisCounters", "Ticket"]
