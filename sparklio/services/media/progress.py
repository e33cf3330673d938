"""Live progress of image jobs, shared through Redis (REDIS_URL) by every gateway process.

Why: a job's status is written to its row, but its progress (many changes a second) stays in
the memory of the process that runs it, so `GET /api/v1/media/jobs/{id}` on another process
showed a running job stuck at its last status change. With Redis, the running process writes
each job's progress and message to a hash (`prefix` + job id, expiring `ttl` seconds after its
last write), coalesced to one write per job every `every` seconds by one background task; the
others read it for a job that runs elsewhere.

A Redis that does not answer never fails or stalls a job or a GET: every command is bounded by
REDIS_TIMEOUT; then Redis is left alone for `pause` seconds, other processes show the progress
of the last status change meanwhile, and it is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sparklio.core.config import Settings
from sparklio.services.redis_client import redis_client

log = logging.getLogger("sparklio.media")


class SharedProgress:
    """Job progress in Redis hashes, written coalesced, read on demand."""

    def __init__(
        self, url: str, *, prefix: str = "sparklio:media:", timeout: float = 0.1,
        every: float = 0.25, ttl: float = 600.0, pause: float = 5.0,
    ) -> None:  # fmt: skip
        self._redis = redis_client(url, timeout=timeout)
        self.prefix = prefix
        self.timeout = timeout
        self.every = every
        self.ttl = ttl
        self.pause = pause
        self._pending: dict[str, tuple[float, str]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._failing = False

    def note(self, job_id: str, progress: float, message: str) -> None:
        """The job's latest progress, written within `every` seconds (only the latest)."""
        self._pending[job_id] = (progress, message)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="sparklio-media-progress")

    async def read(self, job_id: str) -> tuple[float, str] | None:
        """(progress, message) as the process running the job last wrote it; None when there
        is none or Redis does not answer."""
        if self._resting():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                found: dict[Any, Any] = await self._redis.hgetall(self.prefix + job_id)
        except Exception as exc:
            self._failed(exc)
            return None
        self._answered()
        try:
            return float(found[b"progress"]), found.get(b"message", b"").decode(errors="replace")
        except (KeyError, ValueError):
            return None

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            if not self._resting():
                try:
                    async with asyncio.timeout(self.timeout):
                        async with self._redis.pipeline(transaction=False) as pipe:
                            for job_id, (progress, message) in batch.items():
                                key = self.prefix + job_id
                                pipe.hset(key, mapping={"progress": progress, "message": message})
                                pipe.pexpire(key, int(self.ttl * 1000))
                            await pipe.execute()
                except Exception as exc:  # progress is best effort: the job goes on
                    self._failed(exc)
                else:
                    self._answered()
            await asyncio.sleep(self.every)

    def _resting(self) -> bool:
        return self._failing and time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "media job progress: Redis does not answer (%s: %s); other processes show "
                "the progress of a job's last status change, trying again every %g s",
                type(exc).__name__, exc, self.pause,
            )  # fmt: skip
        self._failing = True
        self._down_until = time.monotonic() + self.pause

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("media job progress: Redis answers again")

    def stats(self) -> dict[str, Any]:
        return {"backend": "redis", "status": "unreachable" if self._failing else "ok"}

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self._redis.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            log.debug("closing the media progress Redis client: %s", exc)


def build_shared_progress(settings: Settings) -> SharedProgress | None:
    """Shared job progress when REDIS_URL is set; None keeps it in this process."""
    if not settings.redis_url:
        return None
    return SharedProgress(
        settings.redis_url, prefix=settings.redis_media_prefix, timeout=settings.redis_timeout
    )
