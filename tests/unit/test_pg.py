"""The PostgreSQL half of `make test` (tests/pg.py) and the harness's catalog reads (tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import pg
from tests.conftest import _pg_placeholders, catalog_sql


def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg.ENV_URL, raising=False)
    monkeypatch.setattr(pg, "bin_dir", lambda: None)


def test_without_a_server_make_test_says_it_skipped_postgresql(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_server(monkeypatch)
    monkeypatch.delenv("IMPORTD_TEST_PG_REQUIRED", raising=False)
    assert pg.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PostgreSQL: skipped (no initdb/pg_ctl") and pg.ENV_URL in out


def test_where_postgresql_is_required_a_skip_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_server(monkeypatch)
    monkeypatch.setenv("IMPORTD_TEST_PG_REQUIRED", "1")
    assert pg.main([]) == 1
    assert "PostgreSQL: skipped" in capsys.readouterr().out


def test_a_url_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    no_server(monkeypatch)
    monkeypatch.setenv(pg.ENV_URL, "postgresql://u@db.example/importd")
    assert pg.unavailable() is None


def test_placeholders_are_numbered_for_asyncpg() -> None:
    assert _pg_placeholders("SELECT ? WHERE a = ? AND b = 'x'") == "SELECT $1 WHERE a = $2 AND b = 'x'"
    assert _pg_placeholders("SELECT 1") == "SELECT 1"


def test_rows_read_by_index_name_and_as_dict(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    sqlite3.connect(db).execute("CREATE TABLE t (a INTEGER, b BLOB)").connection.commit()
    url = f"sqlite:///{db}"
    assert catalog_sql(url, "INSERT INTO t VALUES (?, ?)", (1, b"\xff")) == []
    (row,) = catalog_sql(url, "SELECT a, b FROM t")
    assert row == (1, b"\xff") and row["b"] == b"\xff" and dict(row) == {"a": 1, "b": b"\xff"}
