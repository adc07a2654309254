"""Alembic environment: importd runs migrations itself at start-up, handing over a connection.

`alembic` on the command line (for developers writing a revision) also works: it reads the URL
from `IMPORTD_CATALOG_URL` and uses the async engine, as the daemon does.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from importd.catalog import models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from importd.catalog.engine import async_url

    url = os.environ.get("IMPORTD_CATALOG_URL", "sqlite:///catalog.db")

    async def main() -> None:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(main())


if context.is_offline_mode():
    context.configure(
        url=os.environ.get("IMPORTD_CATALOG_URL"), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
