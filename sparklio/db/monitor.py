"""Whether the database answers, known without asking it on the request path.

A background task runs `SELECT 1` every `interval` seconds on an engine of its own (one
connection: a busy request pool cannot make a live database look down), with a short timeout.
`/health` reads the last answer; the call log and the media jobs hear when it changes. The
same task brings the schema up to date when the gateway started while the database was away:
it retries the migrations with a back-off once the database answers, then runs the hooks that
need the schema (replaying the call log, recovering interrupted media jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sparklio.db.engine import dispose
from sparklio.db.errors import describe, is_outage

log = logging.getLogger("sparklio.db")

Status = Literal["unknown", "ok", "down"]
#: Called with True when the database answers again, False when it stopped answering.
Listener = Callable[[bool, str | None], None]


class DatabaseMonitor:
    """Probes the database in the background; `snapshot()` is what `/health` shows.

    `migrate` (when given) is an awaitable that brings the schema up to date, raising when it
    cannot: it is retried with a back-off (`backoff` seconds, doubling) until it succeeds."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
        migrate: Callable[[], Awaitable[None]] | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._timeout = timeout
        self._migrate = migrate
        self._backoff = backoff
        self.status: Status = "unknown"
        self.error: str | None = None
        self.since = time.time()  # when the status last changed
        self.migration_error: str | None = None
        self._migrated = asyncio.Event()
        if migrate is None:
            self._migrated.set()
        self._listeners: list[Listener] = []
        self._hooks: list[Callable[[], Awaitable[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()

    @property
    def migrated(self) -> bool:
        """Whether the schema is up to date (no migration was left to do at start, or the
        background retries got it done)."""
        return self._migrated.is_set()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(up, error)` whenever the database starts or stops answering."""
        self._listeners.append(listener)

    def after_migrations(self, hook: Callable[[], Awaitable[Any]]) -> None:
        """Run `hook` once the database answers and the migrations are done (at the first
        probe when there were none left), again if it fails (e.g. the database went away)."""
        self._hooks.append(hook)

    async def wait_migrated(self) -> None:
        await self._migrated.wait()

    def snapshot(self) -> dict[str, Any]:
        """What `/health` shows; never waits on the database."""
        return {
            "status": self.status,
            "since": round(self.since, 3),
            "error": self.error,
            "migrations": "done" if self.migrated else "pending",
            "migration_error": self.migration_error,
        }

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Start probing in the running loop (idempotent; not again once closed)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="sparklio-db-monitor")

    async def aclose(self) -> None:
        """Stop probing. A probe under way is let finish (it has its own timeout) rather than
        cancelled: a cancelled aiosqlite connect or query still runs on its thread, which
        then reports to an event loop that may be closed by then."""
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(self._timeout + 5.0):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await dispose(self._engine)

    # -- the task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        hooks_done = False
        next_migration, delay = 0.0, self._backoff[0]
        while not self._stop.is_set():
            try:
                up = await self.probe()
                if up and not self.migrated and time.monotonic() >= next_migration:
                    if await self._try_migrations():
                        delay = self._backoff[0]
                    else:
                        next_migration = time.monotonic() + delay
                        delay = min(delay * 2, self._backoff[1])
                if up and self.migrated and not hooks_done:
                    hooks_done = await self._run_hooks()
            except Exception:  # a bug here must not end the probing
                log.exception("database monitor")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()

    async def probe(self) -> bool:
        """Ask the database now (`SELECT 1`, `timeout` seconds); whether it answered."""
        try:
            async with asyncio.timeout(self._timeout), self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            self._set("down", describe(exc))
            return False
        self._set("ok", None)
        return True

    def _set(self, status: Status, error: str | None) -> None:
        self.error = error
        if status == self.status:
            return
        was, self.status, self.since = self.status, status, time.time()
        if status == "down":
            log.warning("the database does not answer: %s", error)
        elif was == "down":
            log.info("the database answers again")
        if was == "unknown" and status == "ok":
            return  # nothing to tell: everyone starts out assuming it is up
        for listener in self._listeners:
            try:
                listener(status == "ok", error)
            except Exception:
                log.exception("database monitor listener")

    async def _try_migrations(self) -> bool:
        assert self._migrate is not None
        try:
            await self._migrate()
        except Exception as exc:
            self.migration_error = describe(exc)
            log.warning("migrations failed, will retry: %s", self.migration_error)
            return False
        self.migration_error = None
        self._migrated.set()
        log.info("the database schema is up to date")
        return True

    async def _run_hooks(self) -> bool:
        """Run the after-migrations hooks; whether they all ran (else they run again, all of
        them, at the next probe that the database answers: they must not mind)."""
        for hook in self._hooks:
            try:
                await hook()
            except Exception as exc:
                if is_outage(exc):
                    log.warning("the database went away again: %s", describe(exc))
                else:
                    log.exception("after-migrations hook %s", getattr(hook, "__qualname__", hook))
                return False
        return True


__all__ = ["DatabaseMonitor", "Listener"]
