"""Whether the Redis that gateway processes share state through answers, for `/health`.

With REDIS_URL, the endpoint guards (concurrency slots, waiting line, circuit breakers), the
limits and budgets, revocations and failed logins, image jobs' progress and the response
cache live in Redis. Each of them goes on alone when Redis does not answer (limits per
process, progress as of the last status change, calls uncached), so nothing fails: what
changes is that the processes no longer share that state. Each part knows only what its own
last command found; this monitor says it in one place.

A background task sends PING every `interval` seconds on a client of its own, bounded by
`timeout`, so `/health` reads the last answer and never waits on Redis. A URL's password is
never shown: not in `/health`, not in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from sparklio.services.redis_client import redis_client, without_password

log = logging.getLogger("sparklio.redis")

Status = Literal["unknown", "ok", "down"]
#: seconds between two PINGs
PROBE_INTERVAL = 1.0
#: seconds a PING may take before Redis counts as down: longer than REDIS_TIMEOUT (0.1 s),
#: as the guards' and the limits' own timeouts are, so a busy process does not cry wolf
PROBE_TIMEOUT = 2.0


class RedisMonitor:
    """PINGs Redis in the background; `snapshot()` is what `/health` shows."""

    def __init__(
        self, url: str, *, interval: float = PROBE_INTERVAL, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self._redis = redis_client(url, timeout=timeout)
        self.url = without_password(url)
        # what an error could quote (a refused AUTH), and must not show
        self._password: str | None = self._redis.connection_pool.connection_kwargs.get("password")
        self.interval = interval
        self.timeout = timeout
        self.status: Status = "unknown"
        self.error: str | None = None
        self.since = time.time()  # when the status last changed
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    def snapshot(self) -> dict[str, Any]:
        """What `/health` shows; never waits on Redis."""
        return {"status": self.status, "since": round(self.since, 3), "url": self.url,
                "error": self.error}  # fmt: skip

    def start(self) -> None:
        """Start probing in the running loop (idempotent; not again once closed)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="sparklio-redis-monitor")

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            log.debug("closing the Redis monitor's client: %s", exc)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.probe()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()

    async def probe(self) -> bool:
        """PING now (`timeout` seconds at most); whether Redis answered."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.ping()
        except Exception as exc:  # whatever failed, Redis did not answer
            self._set("down", self._describe(exc))
            return False
        self._set("ok", None)
        return True

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _set(self, status: Status, error: str | None) -> None:
        self.error = error
        if status == self.status:
            return
        was, self.status, self.since = self.status, status, time.time()
        if status == "down":
            log.warning("Redis at %s is out of reach (%s): guards, limits, revocations and "
                        "job progress are per process until it answers",
                        self.url, error)  # fmt: skip
        elif was == "down":
            log.warning("Redis at %s answers again: the processes share their state again",
                        self.url)  # fmt: skip


__all__ = ["RedisMonitor", "without_password"]
