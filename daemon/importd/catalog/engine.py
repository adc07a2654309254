"""Opening the catalog: URL mapping, SQLite pragmas, and Alembic migrations at start-up."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """Map the operator's URL to the async driver (sqlite -> aiosqlite, postgresql -> asyncpg)."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # Before WAL, which fixes the page size: a new catalog gets 8 KiB pages. Its indexes on
    # random keys (BLAKE3 digests) then split half as often; with the writer's bigger cache and
    # rarer checkpoints (below), registering 100,000 new files took 1.7 s of SQLite instead of
    # 4.1 s (bench machine). An existing catalog keeps the page size it has.
    cur.execute("PRAGMA page_size=8192")
    # WAL lets status/find read while the writer commits; NORMAL is durable across a process
    # kill (the WAL is in the page cache) and only risks the last commits on power loss.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    target = async_url(url)
    if target.startswith("sqlite+aiosqlite:///"):
        db_path = target[len("sqlite+aiosqlite:///") :]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(target, pool_pre_ping=not target.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


# The catalog writer checkpoints in the background (`Checkpointer`) once the WAL holds this
# much; its own connection only as a backstop, at 20,000 pages (160 MiB of 8 KiB pages). Only
# the writer writes, so the other connections' automatic checkpoints never run.
CHECKPOINT_WAL_BYTES = 16 << 20
WRITER_AUTOCHECKPOINT_PAGES = 20_000


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The writer's connection keeps up to 32 MiB of pages (the default is 2 MiB): it updates the
    # digest indexes at random places, and re-reading their pages cost more than the inserts.
    # Readers keep the default; memory only grows as pages are actually read.
    dbapi_connection.execute("PRAGMA cache_size=-32768")
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
    dbapi_connection.execute("PRAGMA temp_store=MEMORY")


class Checkpointer:
    """Copies the WAL back into a SQLite catalog from a thread of its own (PRAGMA
    wal_checkpoint(PASSIVE), on a connection of its own), so the writer's commits never wait
    for it: as an automatic checkpoint inside COMMIT, a cold import of 100,000 files spent a
    second of its writer's time there. PASSIVE never blocks the writer or readers; what it
    cannot copy yet is copied next time."""

    def __init__(self, db_file: str) -> None:
        self.db_file = db_file
        self._conn: sqlite3.Connection | None = None

    def due(self) -> bool:
        try:
            wal = os.stat(self.db_file + "-wal").st_size
        except OSError:
            return False
        return wal >= CHECKPOINT_WAL_BYTES

    def run(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.db_file, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def writer_engine(engine: AsyncEngine) -> Engine | None:
    """For a SQLite file catalog: a synchronous engine on one connection, for the catalog writer
    to use from a worker thread. Through the async driver, every statement of a batch hops from
    the event loop to the driver's thread and back, and the batch's Python work runs on the loop
    itself: a cold import of 100,000 files kept the loop busy for seconds and paid a hand-off per
    statement. None for PostgreSQL and in-memory catalogs, which keep the async engine."""
    db_file = sqlite_file(engine)
    if db_file is None:
        return None
    sync = create_sync_engine(
        f"sqlite:///{db_file}", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    event.listen(sync, "connect", _sqlite_pragmas)
    event.listen(sync, "connect", _writer_pragmas)
    return sync


def _upgrade(connection: Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head in one transaction (SQLite DDL is transactional too)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The catalog's file when it is SQLite on disk, for the readers that open their own
    connection (the reconcile snapshot); None for PostgreSQL and in-memory catalogs."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return url.database
