"""Live updates of a running step (copy as it is written, image progress) as campaign events.

A model streams copy in many small pieces and an image job reports progress often; one
database write per piece would make the campaign's speed that of its database. A feed keeps
what came since its last write per key (a channel, an image) and writes it as one event at
most every `interval` seconds per key, plus whatever is left when `flush` is called at the
end of a step, so the step's last update comes before its `step_finished`.

Callers hand updates over with `add`, a plain function (the copywriter's `on_copy` is a sync
callback): it only updates a dict and arms a timer; the writes run as tasks on the loop. A
write that fails is logged and dropped: live updates are a view, never a reason to fail a
step (the step's output, written with `step_finished`, is the record).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sparklio.services.campaigns.store import CampaignStore

log = logging.getLogger("sparklio.campaigns")

#: Merges a new update into what is waiting to be written (None: nothing waits).
Merge = Callable[[dict[str, Any] | None, dict[str, Any]], dict[str, Any]]


def joined(field: str) -> Merge:
    """Pieces of text, appended in order (copy as it streams)."""

    def merge(waiting: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
        if waiting is None:
            return dict(update)
        return {**waiting, field: waiting[field] + update[field]}

    return merge


def latest(waiting: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """The newest state replaces the one before (progress: only where it stands counts)."""
    return dict(update)


class EventFeed:
    """Coalesces updates of one kind of event, per key, into few writes."""

    def __init__(
        self,
        store: CampaignStore,
        campaign_id: str,
        kind: str,
        merge: Merge,
        interval: float = 0.2,
    ) -> None:
        self.store = store
        self.campaign_id = campaign_id
        self.kind = kind
        self.merge = merge
        self.interval = interval
        self._waiting: dict[Any, dict[str, Any]] = {}
        self._last: dict[Any, float] = {}  # when each key's last write began
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        # one write at a time per feed: events keep the order of the updates (the lock is FIFO)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, key: Any, update: dict[str, Any]) -> None:
        """Take an update; it is written within `interval` (never blocks, never raises)."""
        self._waiting[key] = self.merge(self._waiting.get(key), update)
        if key in self._timers:
            return
        due = self._last.get(key, float("-inf")) + self.interval - time.monotonic()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, due), self._start, key)

    def _start(self, key: Any) -> None:
        self._timers.pop(key, None)
        task = asyncio.ensure_future(self._write(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key: Any) -> None:
        async with self._lock:
            data = self._waiting.pop(key, None)
            if data is None:  # an earlier write (a flush) took it
                return
            self._last[key] = time.monotonic()
            try:
                await self.store.add_event(self.campaign_id, self.kind, None, data)
            except Exception as exc:  # a view, not the record: the step goes on without it
                log.warning("campaign %s: a %s event was not written: %s: %s",
                            self.campaign_id, self.kind, type(exc).__name__, exc)  # fmt: skip

    async def flush(self) -> None:
        """Write everything waiting now, after any write under way (the end of a step)."""
        for key in list(self._timers):
            self._timers.pop(key).cancel()
        for key in list(self._waiting):
            await self._write(key)

    def close(self) -> None:
        """Drop what waits and stop the writes under way (the campaign is over or stopped)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        for task in self._tasks:
            task.cancel()
