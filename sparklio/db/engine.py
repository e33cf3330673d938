"""Engines, sessions and migrations.

`DATABASE_URL` defaults to SQLite in SPARKLIO_HOME (embedded, nothing to set up); PostgreSQL
is `postgresql+asyncpg://user@host/db`. Migrations run with Alembic at `sparklio serve` start,
with `sparklio db upgrade`, and when an app is built in-process. When the database cannot be
reached at start, `migrate_at_start` says so instead of failing, and the app's database monitor
retries with `migrate_async` until the migrations are done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from importlib import resources
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sparklio.core.config import Settings
from sparklio.core.files import private_file
from sparklio.exceptions import ConfigError

log = logging.getLogger("sparklio.db")
#: The child process that migrates for `sparklio serve`, so the server never imports Alembic.
UPGRADE_COMMAND = (sys.executable, "-m", "sparklio.cli", "db", "upgrade")


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or SQLite in SPARKLIO_HOME."""
    if settings.database_url:
        return settings.database_url
    # made 0600 before SQLite opens it: its -wal and -shm files then get the same mode
    path = private_file(settings.home / "sparklio.db")
    return f"sqlite+aiosqlite:///{path}"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so the server and a CLI can share it."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    # a database that hangs must not hang a request for asyncpg's default minute
    kwargs.setdefault("connect_args", {"timeout": 5})
    return create_async_engine(url, **kwargs)


def probe_engine(url: str) -> AsyncEngine:
    """An engine of one connection for checking that the database answers: a pool busy with
    requests must not make a live database look down."""
    if url.startswith("sqlite"):
        return make_engine(url)
    return make_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=False,
                       connect_args={"timeout": 2})  # fmt: skip


async def dispose(engine: AsyncEngine, grace: float = 5.0) -> None:
    """Close the engine's connections once every one of them is back in the pool (at most
    `grace` seconds). A connection still checked out when the pool is disposed is returned
    later to a pool nobody closes: aiosqlite's then warn "deleted before being closed" when
    the garbage collector finds them, in whatever test runs at that moment."""
    checkedout = getattr(engine.pool, "checkedout", None)
    if checkedout is not None:
        deadline = asyncio.get_running_loop().time() + grace
        while checkedout() > 0:
            if asyncio.get_running_loop().time() >= deadline:
                log.warning("disposing of the database engine with %d connections in use",
                            checkedout())  # fmt: skip
                break
            await asyncio.sleep(0.01)
    await engine.dispose()


def sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    # imported here: Alembic costs the server ~10 MB it needs only while migrating
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("sparklio.db") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database up to `revision`. Runs on a thread of its own, so it works whether
    or not an event loop is running here (Alembic's async env runs one of its own)."""
    errors: list[BaseException] = []

    def run() -> None:
        from alembic import command

        try:
            command.upgrade(alembic_config(url), revision)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="sparklio-migrate")
    thread.start()
    thread.join()
    if errors:
        error = errors[0]
        raise ConfigError(f"Database migration failed for {_safe(url)}: {error}") from error


def migrate_at_start(url: str, *, in_child: bool = False) -> bool:
    """Migrate now (in a child process with `in_child`); False when the database cannot be
    reached, for the caller to retry later. ConfigError when it answers but the migration
    fails: that is a bug or a wrong database, and retrying would not help."""
    try:
        if in_child:
            done = subprocess.run(UPGRADE_COMMAND, capture_output=True, text=True,
                                  env=_child_env(url), check=False)  # fmt: skip
            if done.returncode != 0:
                raise ConfigError(f"the database could not be migrated:\n{done.stderr.strip()}")
        else:
            migrate(url)
    except ConfigError as exc:
        if reachable(url):
            raise
        log.warning(
            "the database %s cannot be reached (%s); starting anyway, migrations will be "
            "retried in the background",
            _safe(url),
            str(exc).splitlines()[-1],
        )
        return False
    return True


async def migrate_async(url: str, *, in_child: bool = False) -> None:
    """`migrate()` without blocking the event loop: on a worker thread, or in a child process.
    Raises ConfigError when it fails."""
    if not in_child:
        await asyncio.to_thread(migrate, url)
        return
    process = await asyncio.create_subprocess_exec(
        *UPGRADE_COMMAND,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(url),
    )
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:  # the app is closing: no migration left running behind it
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip()
        raise ConfigError(f"the database could not be migrated: {message}")


def _child_env(url: str) -> dict[str, str]:
    # the URL through the environment, not argv: ps shows argv to everyone
    return {**os.environ, "DATABASE_URL": url}


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the database answers `SELECT 1` within `timeout` seconds (from sync code)."""

    async def ask() -> None:
        engine = make_engine(url)
        try:
            async with asyncio.timeout(timeout), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(ask())
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="sparklio-db-check")
    thread.start()
    thread.join()
    return not errors


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    async def read() -> str | None:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()

    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(read())))
    thread.start()
    thread.join()
    return result[0] if result else None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':')[0]}@{host}"
    return url


__all__ = [
    "current_revision",
    "database_url",
    "dispose",
    "make_engine",
    "migrate",
    "migrate_async",
    "migrate_at_start",
    "probe_engine",
    "reachable",
    "sessions",
]
