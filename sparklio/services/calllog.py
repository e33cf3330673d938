"""The call log: a row in `llm_calls` for every gateway call, kept without slowing the call.

`record()` appends to a bounded in-memory buffer: O(1), it never blocks and never raises. A
writer task inserts the buffer in batches. When the buffer is full, when a write fails or has
taken longer than `spill_after` (0.5 s), or while the database is known to be away (the writer
found out, or the app's database monitor said so through `database_down()`), records go
straight to an append-only JSON Lines spill file under SPARKLIO_HOME instead: a record waits
in memory at most `flush_interval` + `spill_after` (1 s), so a process killed during an outage
loses at most the last second of records. They are replayed once the database answers again.
Inserts skip an id already stored, so a record replayed twice (after a crash mid-replay, or an
insert that timed out but committed) is stored once.

```
record() ─► buffer (deque, ≤ buffer_size) ─► writer ─► INSERT … ON CONFLICT (id) DO NOTHING
   │ full, database away, write slow > 0.5 s    │ fails and the database does not answer:
   ▼                                            ▼ spill the batch, back off 0.5 s → 10 s, probe
calls.jsonl ── renamed when replay starts ──► calls.jsonl.<n>.replaying ─► inserted, deleted
```

A batch spilled because its write was slow may also end up inserted: the replay skips it (same
ids). A `.replaying` file left by a crash is replayed at the next start. A batch the database
refuses while it answers `SELECT 1` is retried row by row; a row it still refuses (a bug,
e.g. a value too long) goes to `<spill>.rejected` and counts as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import Insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sparklio.core.files import open_private
from sparklio.db.errors import describe
from sparklio.db.models import LLMCall
from sparklio.exceptions import ConfigError
from sparklio.services import telemetry

log = logging.getLogger("sparklio.calllog")

#: What a column holds when a record leaves it out; columns not named here are required.
_DEFAULTS: dict[str, Any] = {
    "user_id": None,
    "provider": None,
    "model": None,
    "attempts": [],
    "fallback": False,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    # added by migration 0002: records spilled by an older gateway have none
    "cache": None,
    "saved_tokens": 0,
    "saved_usd": 0.0,
}
_COLUMNS: tuple[str, ...] = tuple(c.name for c in LLMCall.__table__.columns)
_DUMPS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _line(entry: Mapping[str, Any]) -> bytes:
    """One JSON line; datetimes as ISO 8601 strings."""
    return orjson.dumps(entry, default=str, option=_DUMPS)


def _row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A record (from the gateway or a spill file) as a full `llm_calls` row, in UTC."""
    row = {name: entry.get(name, _DEFAULTS.get(name)) for name in _COLUMNS}
    created = row["created_at"]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    if not isinstance(created, datetime):
        created = datetime.now(UTC)
    # SQLite keeps the wall-clock time without its zone: store UTC everywhere
    row["created_at"] = (
        created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    )
    return row


def _insert_statement(engine: AsyncEngine) -> Insert:
    """INSERT … ON CONFLICT (id) DO NOTHING in the engine's dialect."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(LLMCall).on_conflict_do_nothing(index_elements=["id"])
    if dialect == "sqlite":
        return sqlite.insert(LLMCall).on_conflict_do_nothing(index_elements=["id"])
    raise ConfigError(f"The call log supports SQLite and PostgreSQL, not {dialect}.")


class SpillFile:
    """The append-only JSON Lines file that records wait in while the database cannot take
    them, and the `.replaying` files it is renamed to when a replay starts.

    Appends are one `os.write` on an O_APPEND descriptor: the line is in the kernel's page
    cache when it returns (it survives the process dying), and it costs a few microseconds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected = path.with_name(path.name + ".rejected")
        #: records in the spill file and the .replaying files, not yet inserted
        self.pending = 0
        self._fd: int | None = None

    def append(self, data: bytes, count: int) -> None:
        if self._fd is None:
            self._fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.pending += count
        telemetry.spilled(count)

    def reject(self, lines: Iterable[bytes]) -> None:
        with os.fdopen(open_private(self.rejected, os.O_WRONLY | os.O_APPEND), "ab") as out:
            out.writelines(lines)

    def rotate(self) -> Path | None:
        """Rename the spill file to a new `.replaying` file (new spills start a fresh file)."""
        self.close()
        if not self.path.exists():
            return None
        target = self.path.with_name(f"{self.path.name}.{time.time_ns()}.replaying")
        os.replace(self.path, target)
        return target

    def replaying(self) -> list[Path]:
        """The `.replaying` files, oldest first."""

        def number(path: Path) -> int:
            middle = path.name[len(self.path.name) + 1 : -len(".replaying")]
            return int(middle) if middle.isdigit() else 0

        return sorted(self.path.parent.glob(self.path.name + ".*.replaying"), key=number)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _transient(exc: BaseException) -> bool:
    """Whether the database, not the record, is the trouble: unreachable, slow, locked."""
    if isinstance(exc, TimeoutError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return False


def _count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with path.open("rb") as file:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    return total


def _read_lines(file: IO[bytes], count: int) -> list[bytes]:
    lines: list[bytes] = []
    while len(lines) < count:
        line = file.readline()
        if not line:
            break
        lines.append(line)
    return lines


class CallLog:
    """Records every gateway call into `llm_calls` through a buffer, a writer task and a
    spill file. `await start()` in the running loop (the first `record()` in a running loop
    also starts it), `await aclose()` before the engine is disposed."""

    def __init__(
        self,
        db: AsyncEngine | async_sessionmaker[Any],
        spill_path: Path,
        buffer_size: int,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        *,
        timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 10.0),
        spill_after: float = 0.5,
    ) -> None:
        engine = db if isinstance(db, AsyncEngine) else db.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise ConfigError("CallLog needs an AsyncEngine or a sessionmaker bound to one.")
        self._engine = engine
        self._insert = _insert_statement(engine)
        self._buffer: deque[dict[str, Any]] = deque()
        self._buffer_size = max(1, buffer_size)
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._timeout = timeout  # per insert or probe: covers connecting and the statement
        self._backoff = backoff
        self._spill_after = spill_after  # a write slower than this: records go to disk
        self._spill = SpillFile(spill_path)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the buffer holds a full batch, or we are closing
        self._nudge = asyncio.Event()  # closing, or the database is back: cut a back-off short
        self._closing = False
        self._closed = False
        self._inflight: list[dict[str, Any]] = []  # a batch being inserted
        self._inflight_on_disk = False  # ... and already in the spill file (its write was slow)
        self._slow = False  # a write has been running longer than spill_after
        self._held: str | None = None  # why nothing may be written yet (migrations pending)
        self._reader: IO[bytes] | None = None  # the .replaying file being replayed
        self._reader_path: Path | None = None
        self._written = 0
        self._dropped = 0
        self._database_ok = True
        self._last_error: str | None = None

    # -- the hot path ------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        """Keep one call's record. O(1); never blocks, never raises."""
        try:
            if "id" not in entry:  # a replayed record must keep its id to be stored once
                entry["id"] = uuid.uuid4().hex
            if self._closed or not self._database_ok or self._slow:
                # closed: the next start replays it; the database away or slow: on disk now,
                # so a process killed meanwhile loses nothing it acknowledged
                self._spill.append(_line(entry), 1)
            elif len(self._buffer) < self._buffer_size:
                self._buffer.append(entry)
                if len(self._buffer) >= self._batch_size:
                    self._wake.set()
                if self._task is None:
                    self._start_writer()
            else:
                self._spill.append(_line(entry), 1)
        except Exception as exc:  # a call must succeed whatever happens to its record
            self._dropped += 1
            self._last_error = f"record dropped: {type(exc).__name__}: {exc}"
            log.error("call log: %s", self._last_error)

    def stats(self) -> dict[str, Any]:
        """What `/health` shows: records buffered, waiting in spill files, written, dropped."""
        return {
            "buffered": len(self._buffer) + (0 if self._inflight_on_disk else len(self._inflight)),
            "spilled": self._spill.pending,
            "written": self._written,
            "dropped": self._dropped,
            "database": "ok" if self._database_ok else "unreachable",
            "last_error": self._last_error,
        }

    def database_down(self, reason: str) -> None:
        """The database is away (the app's monitor found out): what is in memory goes to
        disk now, and so does every record from now on, until a write succeeds again."""
        if self._database_ok:
            log.warning("call log: the database is away (%s); spilling to %s", reason,
                        self._spill.path)  # fmt: skip
        self._database_ok, self._last_error = False, reason
        self._to_disk()

    def database_up(self) -> None:
        """The database answers again: the writer checks now rather than after its back-off."""
        self._nudge.set()

    def hold(self, reason: str) -> None:
        """Write nothing until `release()` (e.g. the schema is not migrated yet: inserts
        would be refused and the records set aside as rejected); records go to disk."""
        self._held = reason
        self.database_down(reason)

    def release(self) -> None:
        """End a `hold()`: the writer probes the database, then replays what was spilled."""
        self._held = None
        self._nudge.set()

    async def flush(self, within: float = 10.0) -> bool:
        """Wait until every buffered record is written, and, while the database answers,
        every spilled one too (a slow write sends records to the spill file: they are written
        by the replay); spilled only while it is away. Whether it finished in `within`
        seconds. For tests and reports that must see every call."""
        if self._task is None:
            self._start_writer()
        deadline = asyncio.get_running_loop().time() + within
        while self._buffer or self._inflight or (self._database_ok and self._spill.pending):
            self._wake.set()
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer task in the running loop (it first replays leftover spills)."""
        if self._task is None and not self._closed:
            self._start_writer()

    def _start_writer(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: start() or the first record() in one starts the writer
        self._task = asyncio.create_task(self._run(), name="sparklio-calllog")

    async def aclose(self, grace: float = 5.0) -> None:
        """Write what can be written within `grace` seconds, spill the rest, stop."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._nudge.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif task.exception() is not None:
                log.error("call log writer failed", exc_info=task.exception())
        self._closed = True
        # whatever is left in memory goes to disk, to be written at the next start
        leftover = [*self._inflight, *self._buffer]
        self._inflight, self._buffer = [], deque()
        if leftover:
            try:
                self._spill.append(b"".join(_line(e) for e in leftover), len(leftover))
            except OSError as exc:
                self._dropped += len(leftover)
                log.error("call log: %d records lost at shutdown: %s", len(leftover), exc)
        self._close_reader()
        self._spill.close()

    # -- the writer --------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._recover()
        delay = self._backoff[0]
        while True:
            try:
                if not self._database_ok:
                    self._spill_buffer()  # on disk while the database is away
                    if self._closing:
                        return
                    self._nudge.clear()
                    await self._wait(self._nudge, delay)
                    if self._held is not None:
                        continue  # released through release(), which nudges
                    if await self._probe():
                        self._database_ok, delay = True, self._backoff[0]
                        log.info("call log: the database answers again; %d records to "
                                 "replay", self._spill.pending)  # fmt: skip
                    else:
                        delay = min(delay * 2, self._backoff[1])
                    continue
                replay = self._spill.pending > 0 or self._reader is not None
                if len(self._buffer) < self._batch_size and not (self._closing or replay):
                    self._wake.clear()  # set again by record() once a full batch is waiting
                    await self._wait(self._wake, self._flush_interval)
                if self._buffer:
                    await self._write_buffer_batch()
                if self._closing and not self._buffer:
                    return  # spill files wait for the next start: shutdown stays quick
                if replay and self._database_ok:
                    await self._replay_batch()
            except Exception as exc:  # a bug here must not stop the log: note it, go on
                self._last_error = f"writer: {type(exc).__name__}: {exc}"
                log.exception("call log writer")
                await self._wait(self._nudge, self._backoff[0])

    async def _recover(self) -> None:
        """Count what earlier runs left to replay: a spill file, `.replaying` files."""
        try:
            self._spill.rotate()  # records spilled before now are all in .replaying files
            self._spill.pending = 0
            counted = await asyncio.to_thread(_count_lines, self._spill.replaying())
            self._spill.pending += counted
            if counted:
                log.info("call log: %d records from an earlier run to replay", counted)
        except OSError as exc:
            self._last_error = f"spill files: {exc}"
            log.error("call log: cannot read the spill files: %s", exc)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def _write_buffer_batch(self) -> None:
        count = min(self._batch_size, len(self._buffer))
        self._inflight = [self._buffer.popleft() for _ in range(count)]
        stored = False
        try:
            rows = []
            for entry in self._inflight:
                try:
                    rows.append(_row(entry))
                except (TypeError, ValueError) as exc:  # e.g. created_at that is no date
                    self._reject([_line(entry)], f"record {entry.get('id')} unreadable: {exc}")
            stored = await self._store(rows)
            if stored and self._inflight_on_disk:
                # its write was slow, so it is in the spill file too: the replay counts it
                self._written -= len(rows)
        finally:
            # not stored (the database is away, or a bug here): keep the batch on disk
            if not stored and not self._inflight_on_disk:
                self._spill_rows(self._inflight)
            self._inflight, self._inflight_on_disk = [], False

    async def _store(self, rows: list[dict[str, Any]]) -> bool:
        """Insert a batch; False when the database cannot take it now (the caller keeps it)."""
        if not rows:
            return True
        try:
            await self._execute(rows)
        except Exception as exc:
            # a slow, locked or absent database is not the records' fault; otherwise, if the
            # database answers, some record is refused: find it
            if _transient(exc) or not await self._probe():
                self._went_away(exc)
                return False
            return await self._store_one_by_one(rows)
        self._written += len(rows)
        self._database_ok = True
        return True

    async def _store_one_by_one(self, rows: list[dict[str, Any]]) -> bool:
        """The database answers but refused the batch: insert row by row; a row refused on
        its own while the database still answers is set aside in the rejected file."""
        for row in rows:
            try:
                await self._execute([row])
            except Exception as exc:
                if _transient(exc) or not await self._probe():
                    self._went_away(exc)
                    return False  # the rows in so far are stored once again on replay
                self._reject([_line(row)], f"record {row['id']} refused: {describe(exc)}")
            else:
                self._written += 1
        return True

    def _went_away(self, exc: BaseException) -> None:
        error = describe(exc)
        if self._database_ok:
            log.warning("call log: the database cannot take records (%s); spilling to %s",
                        error, self._spill.path)  # fmt: skip
        self._database_ok, self._last_error = False, error

    def _reject(self, lines: list[bytes], error: str) -> None:
        self._dropped += len(lines)
        self._last_error = error
        log.error("call log: %s (kept in %s)", error, self._spill.rejected)
        self._spill.reject(lines)

    async def _execute(self, rows: list[dict[str, Any]]) -> None:
        # a write still running after spill_after: what waits in memory goes to disk, so a
        # kill meanwhile does not lose it (the timeout may be several seconds)
        timer = asyncio.get_running_loop().call_later(self._spill_after, self._write_is_slow)
        try:
            # one statement, one transaction: executemany of a prepared INSERT (asyncpg
            # pipelines it; sqlite3 runs it in-process)
            async with asyncio.timeout(self._timeout), self._engine.begin() as connection:
                await connection.execute(self._insert, rows)
        finally:
            timer.cancel()
            self._slow = False

    def _write_is_slow(self) -> None:
        self._slow = True
        self._to_disk()

    def _to_disk(self) -> None:
        """Spill the buffer and the batch being written (its write may still succeed: the
        replay then skips it, same ids)."""
        try:
            if self._inflight and not self._inflight_on_disk:
                self._spill_rows(self._inflight)
                self._inflight_on_disk = True
            self._spill_buffer()
        except OSError as exc:  # stays in memory: the writer spills or writes it later
            self._last_error = f"spill file: {exc}"
            log.error("call log: cannot write the spill file: %s", exc)

    async def _probe(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout), self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            self._last_error = describe(exc)
            return False
        return True

    def _spill_rows(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            self._spill.append(b"".join(_line(e) for e in entries), len(entries))

    def _spill_buffer(self) -> None:
        self._spill_rows(list(self._buffer))
        self._buffer.clear()  # only once on disk: a failed append leaves them in memory

    # -- replay ------------------------------------------------------------------------------

    async def _replay_batch(self) -> None:
        """Insert the next batch of the oldest `.replaying` file (renaming the spill file to
        one when there is none); delete the file once all of it is in."""
        if self._reader is None:
            files = self._spill.replaying()
            path = files[0] if files else self._spill.rotate()
            if path is None:
                self._spill.pending = 0  # the files are gone: nothing to wait for
                return
            self._reader, self._reader_path = path.open("rb"), path
        reader = self._reader
        start = reader.tell()
        lines = await asyncio.to_thread(_read_lines, reader, self._batch_size)
        if not lines:
            self._close_reader(delete=True)
            return
        rows, bad = [], []
        for line in lines:
            try:
                rows.append(_row(orjson.loads(line)))
            except (TypeError, ValueError):  # orjson.JSONDecodeError is a ValueError
                bad.append(line if line.endswith(b"\n") else line + b"\n")
        if not await self._store(rows):
            reader.seek(start)  # the database went away: this batch again, later
            return
        if bad:  # e.g. a line cut short when the process died while writing it
            self._reject(bad, f"{len(bad)} unreadable lines in {self._reader_path}")
        self._spill.pending = max(0, self._spill.pending - len(lines))

    def _close_reader(self, delete: bool = False) -> None:
        if self._reader is not None:
            self._reader.close()
            if delete and self._reader_path is not None:
                self._reader_path.unlink(missing_ok=True)
        self._reader = self._reader_path = None


__all__ = ["CallLog", "SpillFile"]
