"""Opening the catalog: URL mapping, SQLite pragmas, Alembic migrations at start-up, and the
plain sqlite3 connections of the measured hot paths (the walk's reader, the WAL checkpointer)."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Table, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel

from importd.catalog import models  # noqa: F401  (the tables, registered on SQLModel.metadata)
from importd.catalog.models import add_postgresql_options

MIGRATIONS = Path(__file__).parent / "migrations"


class CatalogUnusable(Exception):
    """The catalog file is not a SQLite database SQLite can read (damaged, or some other file)."""


class CatalogUnreachable(Exception):
    """A catalog server (PostgreSQL) refused or did not answer the first connection: not there,
    not running yet, or the database, user or password is wrong."""


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
    elif engine.dialect.name == "postgresql":
        add_postgresql_options()
    return engine


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (`on_conflict_do_nothing/_do_update`).
    The PostgreSQL dialect is imported only for a PostgreSQL catalog: at module level it cost
    every start-up on the SQLite default 0.1 s."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


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
    sync = _sync_sqlite_engine(db_file, connect_args={"check_same_thread": False})
    event.listen(sync, "connect", _writer_pragmas)
    return sync


def _sync_sqlite_engine(db_file: str, **options: Any) -> Engine:
    """A synchronous engine on one connection to the catalog file, with the shared pragmas."""
    sync = create_sync_engine(f"sqlite:///{db_file}", poolclass=StaticPool, **options)
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


def _upgrade(connection: Connection) -> None:
    # Imported here: a catalog already at head (every start but the first) never needs Alembic,
    # and importing it costs 0.2 s of start-up.
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


_REVISION = re.compile(r"^revision\b[^=]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b[^=]*=\s*(?:None|['\"]([^'\"]+)['\"])", re.MULTILINE)


@functools.cache
def head_revision() -> str:
    """The newest migration: the one revision no other names as its down_revision. Read from the
    scripts' text, so that a start need not import Alembic to know the catalog is current."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            continue
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations in {MIGRATIONS} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


# PostgreSQL advisory lock key held while a daemon migrates (any fixed 64-bit number: "importd").
_MIGRATION_LOCK = int.from_bytes(b"importd", "big")

_ALEMBIC_VERSION_DDL = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


def _bring_to_head(connection: Connection) -> None:
    """A new SQLite catalog gets the models' schema in one go, stamped at head; running the
    migrations one by one takes 0.3 s more for the same tables (a test keeps the two equal). A
    catalog at head is left alone. Anything else (and PostgreSQL) goes through Alembic."""
    if connection.dialect.name == "sqlite":
        tables = {
            name
            for (name,) in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            SQLModel.metadata.create_all(connection)
            connection.exec_driver_sql(_ALEMBIC_VERSION_DDL)
            connection.exec_driver_sql(
                "INSERT INTO alembic_version (version_num) VALUES (?)", (head_revision(),)
            )
            return
        if "alembic_version" in tables:
            current = [v for (v,) in connection.exec_driver_sql("SELECT version_num FROM alembic_version")]
            if current == [head_revision()]:
                return
    _upgrade(connection)


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head in one transaction (SQLite DDL is transactional too). A SQLite
    file is migrated on a synchronous connection of its own, before anything else runs: through
    the async driver each of a new catalog's 31 CREATE statements hopped to the driver's thread
    and back, 0.1 s of every first start."""
    db_file = sqlite_file(engine)
    if db_file is None:
        try:
            # The pool keeps this connection for the migration below: no second connect.
            async with engine.connect():
                pass
        except (OSError, DBAPIError) as exc:
            where = engine.url.set(drivername=engine.url.get_backend_name()).render_as_string(
                hide_password=True
            )
            raise CatalogUnreachable(f"{where}: {getattr(exc, 'orig', None) or exc}") from exc
        async with engine.begin() as conn:
            # Several servers' daemons may start on one new catalog at once: one migrates while
            # the others wait for its commit, then find the schema at head.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            await conn.run_sync(_bring_to_head)
        return
    sync = _sync_sqlite_engine(db_file)
    try:
        with sync.begin() as conn:
            _bring_to_head(conn)
    except DatabaseError as exc:
        # Exactly sqlite3.DatabaseError ("file is not a database", "malformed"): not its
        # subclasses (locked, I/O errors), which a later start may not meet again.
        if type(exc.orig) is not sqlite3.DatabaseError:
            raise
        raise CatalogUnusable(f"{db_file}: {exc.orig}") from exc
    finally:
        sync.dispose()


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The catalog's file when it is SQLite on disk, for the readers that open their own
    connection (a walk's catalog read); None for PostgreSQL and in-memory catalogs."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return url.database


def open_reader(db_file: str) -> sqlite3.Connection:
    """A read-only connection to the catalog file, for a worker thread of its own: reads there
    wait neither for the event loop nor for the async engine's connection thread."""
    return sqlite3.connect(
        f"file:{quote(db_file)}?mode=ro",
        uri=True,
        timeout=10.0,
        isolation_level=None,
        check_same_thread=False,
    )


def shrink_cache(conn: Connection) -> None:
    """Let a SQLite connection give back the pages it caches (the writer keeps up to 32 MiB
    after a big import); nothing to do elsewhere."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA shrink_memory")
