"""Engines, sessions and migrations.

`DATABASE_URL` defaults to SQLite in SPARKLIO_HOME (embedded, nothing to set up); PostgreSQL
is `postgresql+asyncpg://user@host/db`. Migrations run with Alembic at `sparklio serve` start,
with `sparklio db upgrade`, and when an app is built in-process.
"""

from __future__ import annotations

import asyncio
import threading
from importlib import resources
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sparklio.core.config import Settings
from sparklio.core.files import private_file
from sparklio.exceptions import ConfigError


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


__all__ = ["current_revision", "database_url", "make_engine", "migrate", "sessions"]
