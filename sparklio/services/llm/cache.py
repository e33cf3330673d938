"""The response cache: an exact cache of successful answers, so a call asked again gets the
same answer in a millisecond and costs no tokens.

A call is cacheable when its own options make it deterministic (`temperature: 0`, or a
`seed`), it did not bypass the cache (`options: {"cache": false}`), and its route's TTL
(`cache_ttl` in the routing file, else CACHE_TTL) is above 0. The key is the sha256 of
everything that changes the answer: the generator mode, the route's candidates (endpoint or
kind, model and route options of each, in order), the rendered prompt (or a chat's
messages), the payload, the mode, the schema and every caller option except `timeout`.
Only successes are stored, never an error or a cut-off (`meta.truncated`) answer.

Two backends: `MemoryCache` (the default: a bounded LRU with a TTL per entry) and
`RedisCache` (REDIS_URL: shared by every gateway process). A Redis that does not answer
never fails or stalls a call: each command has REDIS_TIMEOUT, after which the call goes on
as a miss; the cache then leaves Redis alone for a few seconds, logs once, and `/health`
says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from sparklio.core.config import Settings
from sparklio.services.gateway.routing import Candidate
from sparklio.services.redis_client import redis_client, without_password
from sparklio.wire.llm import LLMProviderResponse

log = logging.getLogger("sparklio.cache")

#: meta.cache of a call answered from the cache, of one that was looked up and stored, and
#: of one that did not use the cache (not deterministic, bypassed, TTL 0, no cache, a stream)
HIT, MISS, OFF = "hit", "miss", "off"
#: the request option that bypasses the cache; never sent to a provider
BYPASS_OPTION = "cache"
#: options that do not change the answer
_NOT_IN_KEY = frozenset({"timeout", BYPASS_OPTION})
#: bump when what a key covers or what an entry holds changes
_VERSION = 1
#: meta keys the gateway sets on every answer: an entry keeps only the provider's own
_GATEWAY_META = frozenset({
    "request_id", "role", "task", "generator_mode", "rule", "attempts", "fallback", "queue_ms",
    "latency_ms", "template", "prompt_hash", "repaired", "cache", "cached_usage", "cost_usd",
})  # fmt: skip


class ResponseCache(Protocol):
    """Where cached answers are kept: entries are opaque bytes under a hex key."""

    #: "memory" or "redis", for /health
    backend: str

    async def get(self, key: str) -> bytes | None:
        """The entry, or None when there is none (or the store does not answer)."""
        ...

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep the entry for `ttl` seconds; never raises."""
        ...

    def stats(self) -> dict[str, Any]:
        """What /health shows."""
        ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """A bounded LRU in this process, each entry with its own expiry. `clock` (monotonic
    seconds) is for tests that drive time."""

    backend = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": "ok", "entries": len(self._entries),
                "max_entries": self.max_entries}  # fmt: skip

    async def aclose(self) -> None:
        self._entries.clear()


class RedisCache:
    """Entries in Redis under `prefix` + key, with Redis's own expiry (SET ... PX). Every
    command is bounded by `timeout`; after a failure Redis is left alone for `pause`
    seconds (calls are misses meanwhile), so a Redis that is down costs nothing per call."""

    backend = "redis"

    def __init__(
        self, url: str, *, prefix: str = "sparklio:cache:", timeout: float = 0.1,
        pause: float = 5.0,
    ) -> None:  # fmt: skip
        self._redis = redis_client(url, timeout=timeout)
        self.url = without_password(url)
        self.prefix = prefix
        self.timeout = timeout
        self.pause = pause
        self._down_until = 0.0
        self._last_error: str | None = None
        self.errors = 0

    async def get(self, key: str) -> bytes | None:
        if not self._usable():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                value = await self._redis.get(self.prefix + key)
        except Exception as exc:  # a cache that fails is a miss, whatever failed
            self._failed(exc)
            return None
        self._answered()
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if not self._usable():
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except Exception as exc:
            self._failed(exc)
            return
        self._answered()

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "url": self.url,
                "status": "unreachable" if self._last_error else "ok",
                "errors": self.errors, "last_error": self._last_error}  # fmt: skip

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self._redis.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            log.debug("closing the Redis cache: %s", exc)

    def _usable(self) -> bool:
        return self._last_error is None or time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._last_error is None:
            log.warning(
                "response cache: Redis at %s does not answer (%s); calls go on uncached, "
                "trying again every %g s", self.url, error, self.pause,
            )  # fmt: skip
        self._last_error = error
        self._down_until = time.monotonic() + self.pause

    def _answered(self) -> None:
        if self._last_error is not None:
            log.warning("response cache: Redis at %s answers again", self.url)
            self._last_error = None


def build_cache(settings: Settings) -> ResponseCache:
    """Redis when REDIS_URL is set, else an in-memory LRU of CACHE_MAX_ENTRIES."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, prefix=settings.cache_prefix,
                          timeout=settings.redis_timeout)  # fmt: skip
    return MemoryCache(settings.cache_max_entries)


def wants_cache(options: Mapping[str, Any]) -> bool:
    """Whether the caller's options make the call deterministic enough to cache."""
    return options.get("temperature") == 0 or options.get("seed") is not None


def cache_key(
    generator_mode: str,
    candidates: Iterable[Candidate],
    kind_of: Callable[[str], str],
    prompt: str,
    messages: list[dict[str, Any]] | None,
    payload: Mapping[str, Any],
    mode: str,
    schema: dict[str, Any] | None,
    options: Mapping[str, Any],
) -> str | None:
    """The key of a call's answer (sha256 hex), or None when it cannot be serialised."""
    route = [
        [[(target, kind_of(target)) for target in c.targets], c.model,
         {k: v for k, v in c.options.items() if k not in _NOT_IN_KEY}]
        for c in candidates
    ]  # fmt: skip
    material = {
        "v": _VERSION,
        "generator_mode": generator_mode,
        "route": route,
        "prompt": prompt,
        "messages": messages,
        "payload": payload,
        "mode": mode,
        "schema": schema,
        "options": {k: v for k, v in options.items() if k not in _NOT_IN_KEY},
    }
    try:
        data = orjson.dumps(material, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None
    return hashlib.sha256(data).hexdigest()


def entry_of(response: LLMProviderResponse) -> bytes | None:
    """What the cache keeps of an answer, or None when it must not be kept (cut off)."""
    if response.meta.get("truncated"):
        return None
    meta = {k: v for k, v in response.meta.items() if k not in _GATEWAY_META}
    try:
        return orjson.dumps({"provider": response.provider, "model": response.model,
                             "usage": response.usage, "output": response.output,
                             "meta": meta})  # fmt: skip
    except TypeError:
        return None


def answer_from(entry: bytes) -> LLMProviderResponse | None:
    """A cached answer as a fresh response: no tokens counted (they were paid for once),
    the original usage under `meta.cached_usage`; None when the entry cannot be read."""
    try:
        data = orjson.loads(entry)
        usage = {k: int(v) for k, v in data["usage"].items()}
        meta = {**data["meta"], "cache": HIT, "cached_usage": usage}
        return LLMProviderResponse(
            provider=data["provider"], model=data["model"], output=data["output"], meta=meta,
            usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


__all__ = [
    "BYPASS_OPTION",
    "HIT",
    "MISS",
    "OFF",
    "MemoryCache",
    "RedisCache",
    "ResponseCache",
    "answer_from",
    "build_cache",
    "cache_key",
    "entry_of",
    "wants_cache",
]
