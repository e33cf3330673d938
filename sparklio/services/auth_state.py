"""The auth service's per-process state: the credential cache and the failed-login window.

Kept apart from `auth.py` so that module stays about accounts, keys and tokens.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

P = TypeVar("P")


class PrincipalCache(Generic[P]):
    """Resolved principals by credential digest, for `ttl` seconds, at most `size` of them.

    `generation` changes on every invalidation, so a lookup that started before a revocation
    does not put its (now stale) answer back in."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self.generation = 0
        # digest -> (fresh until, principal, the credential's own expiry, cached at)
        self._entries: dict[str, tuple[float, P, float, float]] = {}

    def get(
        self, digest: str, moment: float, *, stale: bool = False, max_age: float | None = None
    ) -> P | None:
        """The cached principal while fresh; with `stale`, also after its TTL until the
        credential itself expires (used only while the database cannot be asked). `max_age`
        shortens the TTL (while revocations from other processes cannot be heard)."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        until, principal, hard, cached = entry
        if max_age is not None and not stale:
            until = min(until, cached + max_age)
        if moment < until or (stale and moment < hard):
            return principal
        return None

    def put(
        self,
        digest: str,
        principal: P,
        until: float,
        generation: int,
        hard: float = float("inf"),
    ) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self.size:
            moment = time.monotonic()
            self._entries = {d: e for d, e in self._entries.items() if e[2] > moment}
            while len(self._entries) >= self.size:  # all usable: drop the oldest
                del self._entries[next(iter(self._entries))]
        self._entries[digest] = (until, principal, hard, time.monotonic())

    def drop(self, matches: Callable[[P], bool]) -> None:
        self.generation += 1
        self._entries = {d: e for d, e in self._entries.items() if not matches(e[1])}

    def clear(self) -> None:
        """Drop every entry (another process revoked something; which, this one may not know)."""
        self.generation += 1
        self._entries.clear()


class FailureWindow:
    """Failed attempts per key (an address, an (account, address) pair) in a sliding window."""

    def __init__(self, limit: int, window: float, size: int) -> None:
        self.limit = limit
        self.window = window
        self.size = size
        self._events: dict[Hashable, deque[float]] = {}

    def wait(self, key: Hashable, moment: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        events = self._events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= moment - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[len(events) - self.limit] + self.window - moment

    def add(self, key: Hashable, moment: float) -> None:
        if key not in self._events and len(self._events) >= self.size:
            cutoff = moment - self.window
            self._events = {k: e for k, e in self._events.items() if e and e[-1] > cutoff}
            while len(self._events) >= self.size:
                del self._events[next(iter(self._events))]
        self._events.setdefault(key, deque()).append(moment)

    def discard(self, key: Hashable, moment: float) -> None:
        events = self._events.get(key)
        if events is not None and moment in events:
            events.remove(moment)

    def clear(self, key: Hashable) -> None:
        self._events.pop(key, None)


#: what `LoginLimits.admit` hands back, to undo or settle that attempt: (where it was
#: counted, its handle there)
Ticket = tuple[str, object]


class LoginLimits:
    """Failed logins per (account, address) and per address: an attempt is counted as failed
    up front (`admit`), so concurrent attempts cannot slip past the limit together, then
    `undo`ne when it was no answer about the password, or `succeeded`."""

    async def admit(self, email: str, address: str) -> tuple[float, Ticket]:
        """(seconds to wait, 0 when admitted and counted; its ticket)."""
        raise NotImplementedError

    async def undo(self, email: str, address: str, ticket: Ticket) -> None:
        raise NotImplementedError

    async def succeeded(self, email: str, address: str, ticket: Ticket) -> None:
        raise NotImplementedError


class LocalLoginLimits(LoginLimits):
    """The windows in this process (no REDIS_URL, or while Redis does not answer)."""

    def __init__(self, pair_limit: int, address_limit: int, window: float, size: int) -> None:
        self.pair_limit = pair_limit
        self.address_limit = address_limit
        self.window = window
        self._pairs = FailureWindow(pair_limit, window, size)
        self._addresses = FailureWindow(address_limit, window, size)

    async def admit(self, email: str, address: str) -> tuple[float, Ticket]:
        pair = (email, address)
        moment = time.monotonic()
        wait = max(self._pairs.wait(pair, moment), self._addresses.wait(address, moment))
        if wait > 0:
            return wait, ("local", moment)
        self._pairs.add(pair, moment)
        self._addresses.add(address, moment)
        return 0.0, ("local", moment)

    async def undo(self, email: str, address: str, ticket: Ticket) -> None:
        moment = float(ticket[1])  # type: ignore[arg-type]  # a local ticket holds a float
        self._pairs.discard((email, address), moment)
        self._addresses.discard(address, moment)

    async def succeeded(self, email: str, address: str, ticket: Ticket) -> None:
        moment = float(ticket[1])  # type: ignore[arg-type]
        self._pairs.clear((email, address))
        self._addresses.discard(address, moment)  # a success does not wipe the address's record
