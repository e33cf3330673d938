"""Closing the app while something still uses the database (item 9 of issue 10: aiosqlite
connections "deleted before being closed" failed a random later test). Real SQLite, a real
lock held by another connection; nothing is mocked."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

from sparklio.main import close_app, create_app
from tests.conftest import make_settings


async def test_closing_while_a_query_waits_leaves_no_connection_behind(tmp_path: Path) -> None:
    """A write waits for a lock another process holds while the app closes: the engine is
    disposed only once that connection is back, so none is left for the garbage collector
    (which, under filterwarnings=error, would fail this test with a ResourceWarning)."""
    path = tmp_path / "sparklio.db"
    app = create_app(make_settings(sparklio_home=tmp_path / "home",
                                   database_url=f"sqlite+aiosqlite:///{path}"))  # fmt: skip
    engine = app.state.services.db_engine
    await app.state.services.auth.local_token()  # the app has used (and pooled) a connection
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        writing = asyncio.create_task(
            app.state.services.auth.create_user("late@example.com", "a long password")
        )
        while engine.pool.checkedout() == 0:  # the insert has its connection and waits
            assert not writing.done(), writing.exception()
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(close_app(app))
        await asyncio.sleep(0.3)  # the old close_app disposed of the pool meanwhile
        other.execute("ROLLBACK")
        user = await writing
        await closing
    finally:
        other.close()
    assert user.email == "late@example.com"  # the write the app was doing went through
    assert engine.pool.checkedout() == 0
    del writing, closing, engine, app
    gc.collect()  # a connection lost by the old pool would warn here
