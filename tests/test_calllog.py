"""The call log against real databases: SQLite in tmp_path and a private PostgreSQL cluster
(tests/pg.py) that a test stops and starts under it. Nothing is mocked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sparklio.db.engine import make_engine, migrate
from sparklio.db.models import LLMCall
from sparklio.services.calllog import CallLog
from tests.pg import PostgresCluster, db_url, postgres

__all__ = ["db_url", "postgres"]  # fixtures, used by name

FAST = {"flush_interval": 0.05, "timeout": 2.0, "backoff": (0.1, 0.4)}


def entry(i: int, **overrides: Any) -> dict[str, Any]:
    """A record as the gateway's `_log_call` builds it."""
    return {
        "id": uuid.uuid4().hex,
        "request_id": f"req-{i}-{uuid.uuid4().hex[:8]}",
        "user_id": None,
        "role": "copywriter",
        "task": "ad_copy",
        "generator_mode": "mock",
        "provider": "mock",
        "model": "mock-1",
        "attempts": [{"provider": "mock", "model": "mock-1", "outcome": "ok", "latency_ms": 1.0}],
        "outcome": "ok",
        "fallback": False,
        "status_code": 200,
        "latency_ms": 1.5 + i,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "cost_usd": 0.0,
        "created_at": datetime.now(UTC),
    } | overrides


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def spill(tmp_path: Path) -> Path:
    return tmp_path / "home" / "calllog" / "calls.jsonl"


async def stored(engine: AsyncEngine) -> tuple[int, set[str], int]:
    """Rows in llm_calls, their ids, and how many distinct request ids they carry (a record
    stored twice under two ids would show as fewer request ids than rows)."""
    async with engine.connect() as connection:
        ids = set((await connection.execute(select(LLMCall.id))).scalars())
        rows, requests = (
            await connection.execute(
                select(func.count(), func.count(func.distinct(LLMCall.request_id)))
            )
        ).one()
    return rows, ids, requests


async def until(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def write_lines(path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def spill_files(spill: Path) -> list[Path]:
    return sorted(p for p in spill.parent.glob(spill.name + "*") if p.stat().st_size)


async def test_a_thousand_records_all_arrive_and_cost_microseconds(
    engine: AsyncEngine, spill: Path
) -> None:
    log = CallLog(engine, spill, buffer_size=10_000, **FAST)
    await log.start()
    records = [entry(i) for i in range(1000)]
    started = time.perf_counter()
    for record in records:
        log.record(record)
    elapsed = time.perf_counter() - started
    print(f"\n[{engine.dialect.name}] record() x1000: {elapsed * 1000:.2f} ms "
          f"({elapsed * 1e6 / 1000:.2f} µs per call)")  # fmt: skip
    assert elapsed < 0.5
    await log.aclose()

    rows, ids, requests = await stored(engine)
    assert (rows, requests) == (1000, 1000)
    assert ids == {r["id"] for r in records}
    assert log.stats() == {"buffered": 0, "spilled": 0, "written": 1000, "dropped": 0,
                           "database": "ok", "last_error": None}  # fmt: skip
    async with engine.connect() as connection:
        query = select(LLMCall).where(LLMCall.id == records[7]["id"])
        row = (await connection.execute(query)).one()
    assert row.attempts == records[7]["attempts"]
    assert row.latency_ms == 8.5
    created = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC)
    assert abs(created - records[7]["created_at"]) < timedelta(milliseconds=1)
    assert spill_files(spill) == []


async def test_a_burst_beyond_the_buffer_spills_and_is_written_later(
    engine: AsyncEngine, spill: Path
) -> None:
    log = CallLog(engine, spill, buffer_size=100, batch_size=200, **FAST)
    await log.start()
    records = [entry(i) for i in range(1000)]
    started = time.perf_counter()
    for record in records:
        log.record(record)  # no await in between: the writer cannot drain meanwhile
    elapsed = time.perf_counter() - started
    print(f"\n[{engine.dialect.name}] 100 buffered + 900 spilled: {elapsed * 1000:.2f} ms "
          f"({elapsed * 1e6 / 900:.2f} µs per spilled call)")  # fmt: skip
    assert log.stats()["buffered"] == 100
    assert log.stats()["spilled"] == 900
    assert sum(len(read_lines(p)) for p in spill_files(spill)) == 900

    await until(lambda: log.stats()["written"] >= 1000 and log.stats()["spilled"] == 0)
    rows, ids, requests = await stored(engine)
    assert (rows, requests) == (1000, 1000)
    assert ids == {r["id"] for r in records}
    assert spill_files(spill) == []  # the replayed file is deleted
    await log.aclose()


async def test_leftover_spills_from_a_crash_are_replayed_at_start(
    engine: AsyncEngine, spill: Path
) -> None:
    """A crash mid-replay leaves a `.replaying` file, part of it already inserted, and a spill
    file, its last line cut short: at start all of it arrives once; the cut line is kept."""
    replaying = [entry(i) for i in range(700)]
    spilled = [entry(1000 + i) for i in range(50)]
    cut = orjson.dumps(entry(2000))[:40]
    write_lines(spill.parent / f"{spill.name}.1.replaying", replaying)
    write_lines(spill, spilled, tail=cut)
    async with engine.begin() as connection:  # what the crashed run had inserted
        await connection.execute(insert(LLMCall), replaying[:300])

    log = CallLog(engine, spill, buffer_size=1000, batch_size=128, **FAST)
    await log.start()
    await until(lambda: log.stats()["spilled"] == 0 and log.stats()["written"] == 750)
    await log.aclose()

    rows, ids, requests = await stored(engine)
    assert (rows, requests) == (750, 750)
    assert ids == {r["id"] for r in replaying + spilled}
    assert log.stats()["dropped"] == 1
    assert read_lines(spill.with_name(spill.name + ".rejected")) == [cut]
    assert [p.name for p in spill_files(spill)] == [spill.name + ".rejected"]


async def test_a_record_the_database_refuses_does_not_hold_up_the_rest(
    engine: AsyncEngine, spill: Path
) -> None:
    log = CallLog(engine, spill, buffer_size=1000, **FAST)
    await log.start()
    records = [entry(i) for i in range(50)]
    records[20].pop("role")  # NOT NULL: refused by both databases
    refused = {records[20]["id"]}
    if engine.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        records[30]["role"] = "r" * 65
        refused.add(records[30]["id"])
    for record in records:
        log.record(record)
    await log.aclose()
    _, ids, _ = await stored(engine)
    assert ids == {r["id"] for r in records} - refused
    stats = log.stats()
    assert (stats["written"], stats["dropped"]) == (50 - len(refused), len(refused))
    assert stats["database"] == "ok"
    assert "refused" in stats["last_error"]
    rejected = read_lines(spill.with_name(spill.name + ".rejected"))
    assert {orjson.loads(line)["id"] for line in rejected} == refused


async def test_postgres_stopped_mid_run_loses_nothing_and_stores_nothing_twice(
    postgres: PostgresCluster, spill: Path
) -> None:
    url = postgres.create_database()
    migrate(url)
    engine = make_engine(url)
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=100, **FAST)
    await log.start()
    before = [entry(i) for i in range(200)]
    for record in before:
        log.record(record)
    await until(lambda: log.stats()["written"] == 200)

    await asyncio.to_thread(postgres.stop)
    try:
        during = [entry(1000 + i) for i in range(300)]
        started = time.perf_counter()
        for record in during:
            log.record(record)
            await asyncio.sleep(0)  # calls keep coming while the writer finds out
        elapsed = time.perf_counter() - started
        await until(lambda: log.stats()["database"] == "unreachable")
        await until(lambda: log.stats()["spilled"] == 300)  # on disk while it is down
        stats = log.stats()
        print(f"\n[postgresql down] 300 calls recorded in {elapsed * 1000:.1f} ms; {stats}")
        assert stats["buffered"] == 0
        assert stats["last_error"]
        assert elapsed < 0.5
    finally:
        await asyncio.to_thread(postgres.start)

    after = [entry(2000 + i) for i in range(100)]
    for record in after:
        log.record(record)
    await until(lambda: log.stats()["database"] == "ok" and log.stats()["spilled"] == 0)
    await log.aclose()
    rows, ids, requests = await stored(engine)
    await engine.dispose()
    assert (rows, requests) == (600, 600)
    assert ids == {r["id"] for r in before + during + after}
    assert spill_files(spill) == []


async def test_a_locked_table_delays_records_but_loses_none(
    postgres: PostgresCluster, spill: Path
) -> None:
    """A database that answers but does not finish the insert in time (here: a table lock
    another session holds) is treated like one that is away: spill, back off, replay."""
    url = postgres.create_database()
    migrate(url)
    engine, locker = make_engine(url), make_engine(url)
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=100,
                  **(FAST | {"timeout": 0.3}))  # fmt: skip
    await log.start()
    records = [entry(i) for i in range(200)]
    async with locker.begin() as connection:
        await connection.execute(text("LOCK TABLE llm_calls IN ACCESS EXCLUSIVE MODE"))
        for record in records:
            log.record(record)
        await until(lambda: log.stats()["database"] == "unreachable")
        assert "did not answer in time" in log.stats()["last_error"]
        await asyncio.sleep(0.5)  # a few rounds of back-off, probe (it answers) and timeout
    await until(lambda: log.stats()["database"] == "ok" and log.stats()["spilled"] == 0)
    await log.aclose()
    rows, ids, requests = await stored(engine)
    await engine.dispose()
    await locker.dispose()
    assert (rows, requests) == (200, 200)
    assert ids == {r["id"] for r in records}
    assert log.stats()["dropped"] == 0


async def test_sqlite_that_cannot_be_opened_yet_spills_until_it_can(
    tmp_path: Path, spill: Path
) -> None:
    """SQLite's way of being down: its file cannot be opened (the volume is not mounted
    yet). Calls are recorded meanwhile; once the database exists they all arrive."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'volume' / 'sparklio.db'}"
    engine = make_engine(url)
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=100, **FAST)
    await log.start()
    records = [entry(i) for i in range(250)]
    for record in records:
        log.record(record)
    await until(lambda: log.stats()["database"] == "unreachable")
    await until(lambda: log.stats()["spilled"] == 250)
    assert "unable to open database file" in log.stats()["last_error"]

    (tmp_path / "volume").mkdir()
    await asyncio.to_thread(migrate, url)
    await until(lambda: log.stats()["database"] == "ok" and log.stats()["spilled"] == 0)
    await log.aclose()
    rows, ids, requests = await stored(engine)
    await engine.dispose()
    assert (rows, requests) == (250, 250)
    assert ids == {r["id"] for r in records}


async def test_closing_while_the_database_is_away_keeps_the_records_for_the_next_start(
    tmp_path: Path, spill: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'volume' / 'sparklio.db'}"
    engine = make_engine(url)
    first = CallLog(engine, spill, buffer_size=10_000, **FAST)
    await first.start()
    records = [entry(i) for i in range(40)]
    for record in records:
        first.record(record)
    await first.aclose(grace=1.0)
    first.record(entry(99) | {"id": "late"})  # after close: to disk, not lost
    assert first.stats()["spilled"] == 41

    (tmp_path / "volume").mkdir()
    await asyncio.to_thread(migrate, url)
    second = CallLog(engine, spill, buffer_size=10_000, **FAST)
    await second.start()
    await until(lambda: second.stats()["written"] == 41)
    await second.aclose()
    _, ids, _ = await stored(engine)
    await engine.dispose()
    assert ids == {r["id"] for r in records} | {"late"}


async def test_while_the_database_is_away_each_record_is_on_disk_when_record_returns(
    tmp_path: Path, spill: Path
) -> None:
    """Once the writer knows the database is away, a record is in the spill file before
    `record()` returns (a kill -9 then loses nothing acknowledged), not after the back-off."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'volume' / 'sparklio.db'}"
    engine = make_engine(url)
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=100,
                  **(FAST | {"backoff": (30.0, 30.0)}))  # fmt: skip
    await log.start()
    log.record(entry(0))
    await until(lambda: log.stats()["database"] == "unreachable")
    assert log.stats()["spilled"] == 1
    for round_ in range(3):
        for i in range(100):
            log.record(entry(100 * round_ + i))
            # no await in between: nothing but record() itself can have put it on disk
            assert log.stats()["buffered"] == 0
        assert len(read_lines(spill)) == 1 + 100 * (round_ + 1)
        await asyncio.sleep(0.05)  # the writer runs meanwhile, still backing off
    await log.aclose()
    await engine.dispose()


async def test_the_monitor_saying_the_database_is_down_sends_memory_to_disk_at_once(
    engine: AsyncEngine, spill: Path
) -> None:
    """`database_down()` (the app's monitor found the database gone) spills what waits in
    memory and every record after it; `database_up()` brings them all into the database."""
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=1000,
                  **(FAST | {"flush_interval": 30.0}))  # fmt: skip
    await log.start()
    records = [entry(i) for i in range(40)]
    for record in records[:30]:
        log.record(record)
    assert log.stats()["buffered"] == 30  # a long flush interval: still in memory
    log.database_down("the monitor's probe failed")
    assert len(read_lines(spill)) == 30
    for record in records[30:]:
        log.record(record)
    assert len(read_lines(spill)) == 40
    assert log.stats() | {"last_error": None} == {
        "buffered": 0, "spilled": 40, "written": 0, "dropped": 0, "database": "unreachable",
        "last_error": None,
    }  # fmt: skip

    log.database_up()
    await until(lambda: log.stats()["written"] == 40 and log.stats()["spilled"] == 0)
    await log.aclose()
    rows, ids, requests = await stored(engine)
    assert (rows, requests) == (40, 40)
    assert ids == {r["id"] for r in records}


async def test_held_until_migrated_nothing_is_refused_as_a_bad_record(
    tmp_path: Path, spill: Path
) -> None:
    """A gateway that started before its database was migrated holds the log: records wait
    on disk instead of being inserted into missing tables (and set aside as rejected)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sparklio.db'}"
    engine = make_engine(url)
    async with engine.begin() as connection:  # the database answers, but has no tables
        await connection.execute(text("SELECT 1"))
    log = CallLog(engine, spill, buffer_size=10_000, **FAST)
    log.hold("waiting for migrations")
    await log.start()
    records = [entry(i) for i in range(25)]
    for record in records:
        log.record(record)
    await asyncio.sleep(0.3)  # several back-off rounds: a writer that is not held would try
    assert log.stats()["spilled"] == 25
    assert log.stats()["dropped"] == 0

    await asyncio.to_thread(migrate, url)
    log.release()
    await until(lambda: log.stats()["written"] == 25 and log.stats()["spilled"] == 0)
    await log.aclose()
    rows, ids, _ = await stored(engine)
    await engine.dispose()
    assert rows == 25 and ids == {r["id"] for r in records}
    assert log.stats()["dropped"] == 0


async def test_a_write_slower_than_a_second_puts_its_batch_on_disk_meanwhile(
    postgres: PostgresCluster, spill: Path
) -> None:
    """A database that takes the insert but does not finish it (a lock) within `spill_after`:
    the batch in flight and every record after it are on disk while the write still waits,
    so a kill then loses nothing; once it finishes, each record is stored once."""
    url = postgres.create_database()
    migrate(url)
    engine, locker = make_engine(url), make_engine(url)
    log = CallLog(engine, spill, buffer_size=10_000, batch_size=100,
                  **(FAST | {"timeout": 60.0, "spill_after": 0.2}))  # fmt: skip
    await log.start()
    first, later = [entry(i) for i in range(50)], [entry(100 + i) for i in range(20)]
    async with locker.begin() as connection:
        await connection.execute(text("LOCK TABLE llm_calls IN ACCESS EXCLUSIVE MODE"))
        for record in first:
            log.record(record)
        await until(lambda: log.stats()["spilled"] == 50)  # the write waits for the lock
        for record in later:
            log.record(record)
        assert len(read_lines(spill)) == 70
        assert log.stats()["buffered"] == 0 and log.stats()["written"] == 0
    # a report that flushes first sees every call, spilled ones too, once the lock is gone
    assert await log.flush(within=60)
    assert (log.stats()["spilled"], log.stats()["written"]) == (0, 70)
    await log.aclose()
    rows, ids, requests = await stored(engine)
    await engine.dispose()
    await locker.dispose()
    assert (rows, requests) == (70, 70)
    assert ids == {r["id"] for r in first + later}
    assert log.stats()["dropped"] == 0
