"""The legacy bench's old catalog and mapping fit together: the mapping checks against the
schema the bench builds, and every row is read back with its tag."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.legacy import MAPPING, legacy_catalog
from importd.imports.legacy import LegacyMapping, check_schema, open_read_only, parse_mapping, read_rows


def test_the_bench_catalog_reads_back_through_its_mapping(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    legacy_catalog(db, [(f"/srv/r/{i}.bin", "ab" * 32) for i in range(250)], tags=7)
    mapping = parse_mapping(MAPPING)
    assert isinstance(mapping, LegacyMapping)
    conn = open_read_only(str(db))
    assert isinstance(conn, sqlite3.Connection)
    assert check_schema(conn, mapping) is None
    rows = [row for batch in read_rows(conn, mapping, batch=100) for row in batch]
    assert len(rows) == 250 and all(len(row.tags) == 1 for row in rows)
    assert [row.hash is not None for row in rows[:4]] == [True, False, True, False]
    assert rows[8].tags == (("tag 2", "#000002"),)
