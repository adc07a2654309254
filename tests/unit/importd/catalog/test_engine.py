"""A new SQLite catalog is created from the models and stamped at head, not migrated step by step:
its schema must be exactly the migrations' schema, and older catalogs still migrate."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from importd.catalog import engine as catalog_engine
from importd.catalog.engine import create_engine, head_revision, migrate


def schema(db: Path) -> dict[str, Any]:
    """Tables with their columns (type, not null, default, pk), indexes (unique, columns, and the
    SQL of partial ones) and foreign keys: what the catalog's behaviour depends on."""
    conn = sqlite3.connect(db)
    out: dict[str, Any] = {}
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    for (table,) in tables.fetchall():
        columns = [row[1:] for row in conn.execute(f"PRAGMA table_info('{table}')")]
        indexes = sorted(
            (row[1], row[2], row[4], tuple(c[2] for c in conn.execute(f"PRAGMA index_info('{row[1]}')")))
            for row in conn.execute(f"PRAGMA index_list('{table}')")
        )
        fks = sorted(row[2:5] for row in conn.execute(f"PRAGMA foreign_key_list('{table}')"))
        out[table] = (columns, indexes, fks)
    out["partial indexes"] = sorted(
        " ".join(sql.split())
        for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'"
        )
    )
    out["triggers"] = sorted(
        " ".join(sql.split())
        for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'")
    )
    out["version"] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    conn.close()
    return out


def with_alembic(db: Path, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import create_engine as create_sync_engine

    sync = create_sync_engine(f"sqlite:///{db}")
    with sync.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(catalog_engine.MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    sync.dispose()


def migrate_file(db: Path) -> None:
    async def run() -> None:
        engine = create_engine(f"sqlite:///{db}")
        await migrate(engine)
        await engine.dispose()

    asyncio.run(run())


def test_head_revision_is_alembics_head() -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(catalog_engine.MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_new_catalog_has_exactly_the_migrations_schema(tmp_path: Path) -> None:
    migrate_file(tmp_path / "new.db")
    with_alembic(tmp_path / "migrated.db", "head")
    created, migrated = schema(tmp_path / "new.db"), schema(tmp_path / "migrated.db")
    assert created == migrated
    assert created["version"] == [(head_revision(),)]
    assert "files" in created and created["partial indexes"]


def test_an_older_catalog_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with_alembic(db, "0001")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO roots (name, path) VALUES ('legacy', '/srv/legacy')")
    conn.commit()
    conn.close()
    migrate_file(db)
    with_alembic(tmp_path / "migrated.db", "head")
    assert schema(db) == schema(tmp_path / "migrated.db")
    assert sqlite3.connect(db).execute("SELECT name, path FROM roots").fetchall() == [
        ("legacy", "/srv/legacy")
    ]


def test_the_file_counts_migration_counts_the_rows_already_there(tmp_path: Path) -> None:
    """0012 fills file_counts from the rows as they are; its triggers then keep it."""
    db = tmp_path / "old.db"
    with_alembic(db, "0011")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO roots (id, name, path, host) VALUES (1, 'r', '/srv/r', 'h')")
    insert = (
        "INSERT INTO files (root_id, relpath, display_path, size, mtime_ns, inode, dev, status,"
        " first_seen, last_seen) VALUES (1, ?, ?, ?, 1, ?, 7, ?, 1.0, 1.0)"
    )
    for i, status in enumerate(["present", "present", "missing", "error", "forgotten"]):
        conn.execute(insert, (b"f%d" % i, f"f{i}", 10 * (i + 1), i, status))
    conn.commit()
    conn.close()
    migrate_file(db)
    conn = sqlite3.connect(db)
    counts = "SELECT root_id, status, files, bytes FROM file_counts WHERE files != 0 ORDER BY status"
    assert conn.execute(counts).fetchall() == [
        (1, "error", 1, 40), (1, "forgotten", 1, 50), (1, "missing", 1, 30), (1, "present", 2, 30),
    ]  # fmt: skip
    conn.execute("UPDATE files SET status = 'missing' WHERE relpath = ?", (b"f0",))
    conn.execute("UPDATE files SET last_seen = 2.0")  # no counted column: the counts stay
    conn.execute(insert, (b"f9", "f9", 5, 9, "present"))
    conn.execute("DELETE FROM files WHERE relpath = ?", (b"f3",))
    assert conn.execute(counts).fetchall() == [
        (1, "forgotten", 1, 50), (1, "missing", 2, 40), (1, "present", 2, 25),
    ]  # fmt: skip
    conn.close()


def test_a_catalog_creation_cut_short_leaves_nothing_and_the_next_start_makes_it(tmp_path: Path) -> None:
    """Crash trials: a kill -9 while a new catalog was being made left some tables and no version
    stamp (Python's sqlite3 ran CREATE TABLE outside the transaction), and every later start
    failed. Cut short here by a failure half-way: nothing stays, and the next start makes it."""
    from sqlmodel import SQLModel

    def cut(*args: object, **kw: object) -> None:
        raise RuntimeError("killed half-way")

    db = tmp_path / "new.db"
    table = SQLModel.metadata.tables["runs"]
    event.listen(table, "after_create", cut)
    try:
        with pytest.raises(RuntimeError):
            migrate_file(db)
    finally:
        event.remove(table, "after_create", cut)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    conn.close()
    migrate_file(db)
    with_alembic(tmp_path / "migrated.db", "head")
    assert schema(db) == schema(tmp_path / "migrated.db")


def test_a_catalog_at_head_starts_without_alembic(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    migrate_file(db)
    code = (
        "import asyncio, sys\n"
        "from importd.catalog.engine import create_engine, migrate\n"
        f"e = create_engine('sqlite:///{db}')\n"
        "asyncio.run(migrate(e))\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert schema(db)["version"] == [(head_revision(),)]


def test_the_sqlite_default_never_imports_the_postgresql_dialect(tmp_path: Path) -> None:
    """Naming a dialect's option in a declaration imports that dialect and its drivers' modules:
    0.1 s of every start-up. The daemon's modules and a SQLite catalog must not need it."""
    db = tmp_path / "c.db"
    code = (
        "import asyncio, sys\n"
        "import importd.service\n"
        "from importd.catalog.engine import create_engine, migrate\n"
        f"e = create_engine('sqlite:///{db}')\n"
        "asyncio.run(migrate(e))\n"
        "print(sorted(m for m in sys.modules if 'postgresql' in m or 'asyncpg' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_postgresql_catalog_gets_the_partial_live_path_index() -> None:
    """The live-path index's WHERE for PostgreSQL is attached when a PostgreSQL engine is made
    (`create_engine` calls this); without it PostgreSQL would build a plain unique index and
    refuse a second missing row at a path."""
    code = (
        "from sqlalchemy.dialects import postgresql\n"
        "from sqlalchemy.schema import CreateIndex\n"
        "from importd.catalog.models import FileRow, add_postgresql_options\n"
        "add_postgresql_options()\n"
        "index = next(i for i in FileRow.__table__.indexes if i.name == 'uq_files_live_path')\n"
        "print(CreateIndex(index).compile(dialect=postgresql.dialect()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        "CREATE UNIQUE INDEX uq_files_live_path ON files (root_id, relpath)"
        " WHERE status NOT IN ('missing', 'forgotten')" in " ".join(out.stdout.split())
    )
