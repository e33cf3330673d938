"""Alembic's environment: runs the migrations on an async engine."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context

from sparklio.db.engine import make_engine
from sparklio.db.models import Base

target_metadata = Base.metadata


def do_run_migrations(connection: Any) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True
    )  # batch mode: SQLite cannot ALTER most things
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


asyncio.run(run_async_migrations())
