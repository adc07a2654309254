"""The background WAL checkpoint of a SQLite catalog, on a real database file."""

import sqlite3
from pathlib import Path

import pytest

from importd.catalog import engine
from importd.catalog.engine import Checkpointer


def test_due_when_the_wal_is_big_then_copied_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "catalog.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer copies
    writer.execute("CREATE TABLE t (x BLOB)")
    cp = Checkpointer(str(db))
    monkeypatch.setattr(engine, "CHECKPOINT_WAL_BYTES", 64 * 8192)
    assert not cp.due()
    writer.execute("BEGIN")
    writer.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,) for _ in range(400)])
    writer.execute("COMMIT")
    assert cp.due()
    cp.run()
    # Everything committed is in the database file now: a reader that ignores the WAL sees it.
    size_before = db.stat().st_size
    assert size_before > 400 * 4000
    writer.execute("INSERT INTO t VALUES (x'00')")  # the writer goes on meanwhile, unblocked
    cp.run()
    cp.close()
    writer.close()
    check = sqlite3.connect(db)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (401,)
    check.close()


def test_no_wal_file_means_nothing_due(tmp_path: Path) -> None:
    assert not Checkpointer(str(tmp_path / "absent.db")).due()
