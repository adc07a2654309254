"""The pure stage of `migrate-legacy`: the mapping, its check against the old schema, the
streamed read (rows with their tags), where a row's path is, and what becomes of a row."""

from __future__ import annotations

import os
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from importd.imports.legacy import (
    Decision,
    Invalid,
    Known,
    LegacyMapping,
    LegacyRow,
    Located,
    MappingError,
    Outside,
    check_schema,
    decide,
    locate_row,
    open_read_only,
    parse_mapping,
    read_rows,
    record_of,
    trusted_hash,
)

MAPPING = """
[files]
table = "models"
id = "id"
path = "path"
root = "studio"
hash = "hash"
name = "name"
[files.attributes]
rating = "rating"
[tags]
table = "tags"
id = "id"
name = "name"
color = "color"
[tags.links]
table = "model_tags"
file = "model_id"
tag = "tag_id"
"""
H = "ab" * 32


def old_catalog(path: Path, rows: int = 3) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE models (id INTEGER PRIMARY KEY, path TEXT, hash TEXT, name TEXT, rating INTEGER);"
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, color TEXT);"
        "CREATE TABLE model_tags (model_id INTEGER, tag_id INTEGER);"
        "INSERT INTO tags VALUES (1, 'Red', '#f00'), (2, 'blue', ''), (3, 'RED', NULL), (4, NULL, NULL);"
    )
    conn.executemany(
        "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
        [(i, f"m{i}.jpg", H if i % 2 else None, f"Model {i}", i) for i in range(1, rows + 1)],
    )
    conn.executemany("INSERT INTO model_tags VALUES (?, ?)", [(1, 1), (1, 2), (1, 3), (1, 4), (3, 2)])
    conn.commit()
    conn.close()
    return path


def mapping() -> LegacyMapping:
    parsed = parse_mapping(MAPPING)
    assert isinstance(parsed, LegacyMapping)
    return parsed


def test_the_mapping_as_in_the_issue() -> None:
    m = mapping()
    assert (m.table, m.id, m.path, m.root, m.hash, m.hash_algorithm, m.name) == (
        "models", "id", "path", "studio", "hash", "blake3", "name",
    )  # fmt: skip
    assert m.attributes == {"rating": "rating"}
    assert m.tags is not None and (m.tags.links_table, m.tags.links_file, m.tags.color) == (
        "model_tags",
        "model_id",
        "color",
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[files\n", "not valid TOML"),
        ("[other]\n", "no [files] table"),
        ('[files]\ntable = "t"\nid = "id"\n', "no files.path"),
        ('[files]\ntable = "t"\nid = "id"\npath = 3\n', "files.path must be a column name"),
        ('[files]\ntable = "t"\nid = "id"\npath = "p"\ncolour = "c"\n', "unknown keys: colour"),
        (
            '[files]\ntable = "t"\nid = "id"\npath = "p"\n[tags]\ntable = "x"\nid = "i"\nname = "n"\n',
            "[tags.links]",
        ),
    ],
)
def test_a_wrong_mapping_says_what_is_wrong(text: str, words: str) -> None:
    wrong = parse_mapping(text)
    assert isinstance(wrong, MappingError) and words in wrong.message and wrong.hint


def test_the_schema_check_names_the_missing_table_or_column(tmp_path: Path) -> None:
    conn = open_read_only(str(old_catalog(tmp_path / "old.db")))
    assert isinstance(conn, sqlite3.Connection)
    assert check_schema(conn, mapping()) is None
    m = parse_mapping(MAPPING.replace('rating = "rating"', 'rating = "stars"'))
    assert isinstance(m, LegacyMapping)
    wrong = check_schema(conn, m)
    assert (
        wrong is not None and wrong.message == "files.attributes.rating: no column 'stars' in table 'models'"
    )
    assert wrong.hint == "its columns: hash, id, name, path, rating"
    m = parse_mapping(MAPPING.replace('table = "model_tags"', 'table = "links"'))
    assert isinstance(m, LegacyMapping)
    wrong = check_schema(conn, m)
    assert wrong is not None and wrong.message == "tags.links.table: no table 'links' in the legacy catalog"
    assert wrong.hint == "its tables: model_tags, models, tags"


def test_the_old_catalog_is_opened_read_only(tmp_path: Path) -> None:
    db = old_catalog(tmp_path / "old.db")
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    conn = open_read_only(str(db))
    assert isinstance(conn, sqlite3.Connection)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM models")
    list(read_rows(conn, mapping()))
    conn.close()
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
    missing = open_read_only(str(tmp_path / "none.db"))
    assert isinstance(missing, MappingError) and "no legacy catalog" in missing.message
    (tmp_path / "text.db").write_text("not a database " * 100)
    assert isinstance(open_read_only(str(tmp_path / "text.db")), MappingError)


def test_rows_come_with_their_tags_once_each(tmp_path: Path) -> None:
    conn = open_read_only(str(old_catalog(tmp_path / "old.db")))
    assert isinstance(conn, sqlite3.Connection)
    batches = list(read_rows(conn, mapping(), batch=2))
    assert [len(b) for b in batches] == [2, 1]
    first, second, third = [row for b in batches for row in b]
    assert first == LegacyRow("1", "m1.jpg", H, "Model 1", {"rating": 1}, (("Red", "#f00"), ("blue", None)))
    assert second.hash is None and second.tags == ()
    assert third.tags == (("blue", None),)


def test_reading_is_streamed(tmp_path: Path) -> None:
    """Memory for a batch, not for the catalog: 20,000 rows read in batches of 100 allocate no
    more at their peak than 2,000 do."""

    def peak(rows: int) -> int:
        db = old_catalog(tmp_path / f"old{rows}.db", rows)
        conn = open_read_only(str(db))
        assert isinstance(conn, sqlite3.Connection)
        tracemalloc.start()
        n = sum(len(b) for b in read_rows(conn, mapping(), batch=100))
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        conn.close()
        assert n == rows
        return top

    small, big = peak(2_000), peak(20_000)
    assert big < small * 1.5 + 64_000


ROOTS = [(1, "studio", b"/srv/studio"), (2, "lib", b"/srv/lib")]


def row(path: str | None, digest: str | None = None) -> LegacyRow:
    return LegacyRow("7", path, digest, "n", {}, ())


def test_where_a_row_is() -> None:
    m = mapping()
    assert locate_row(row("a/b.jpg"), m, ROOTS) == Located(1, b"a/b.jpg", b"/srv/studio/a/b.jpg")
    assert locate_row(row("/srv/lib/x/../y.mkv"), m, ROOTS) == Located(2, b"y.mkv", b"/srv/lib/y.mkv")
    assert locate_row(row("/elsewhere/z"), m, ROOTS) == Outside(b"/elsewhere/z")
    assert locate_row(row("../escape.jpg"), m, ROOTS) == Outside(b"/srv/escape.jpg")
    assert isinstance(locate_row(row(None), m, ROOTS), Invalid)
    assert isinstance(locate_row(row("  "), m, ROOTS), Invalid)
    no_root = LegacyMapping("models", "id", "path")
    assert locate_row(row("a.jpg"), no_root, ROOTS) == Invalid(
        "a relative path, and the mapping names no root (files.root)"
    )
    assert locate_row(row("/srv/studio/é.jpg"), no_root, ROOTS) == Located(
        1, os.fsencode("é.jpg"), os.fsencode("/srv/studio/é.jpg")
    )


def test_which_hash_is_trusted() -> None:
    m = mapping()
    assert trusted_hash(row("a", H.upper()), m) == H
    assert trusted_hash(row("a"), m) is None
    assert isinstance(trusted_hash(row("a", "xyz"), m), Invalid)
    md5 = LegacyMapping("models", "id", "path", hash="hash", hash_algorithm="md5")
    assert trusted_hash(row("a", "d41d8cd98f00b204e9800998ecf8427e"), md5) is None
    kept = record_of(LegacyRow("1", "a", "d41d8cd98f00b204e9800998ecf8427e", "N", {"r": 2}, ()), md5)
    assert kept["values"] == {"name": "N", "r": 2, "md5": "d41d8cd98f00b204e9800998ecf8427e"}
    assert kept["entity_values"] == {"r": 2} and kept["blake3"] is None


def test_what_becomes_of_a_row() -> None:
    other = "cd" * 32
    assert decide(H, [Known(3, H), Known(4, H)], None, True) == Decision("link", (3, 4))
    assert decide(None, [], Known(5, other), True) == Decision("link", (5,))
    assert decide(H, [], Known(5, H), True) == Decision("link", (5,))
    stale = decide(H, [], Known(5, other), True)
    assert stale.action == "stale" and stale.file_ids == (5,) and H in (stale.detail or "")
    assert decide(H, [], None, True) == Decision("backlog")
    assert decide(None, [], Known(6, None), True) == Decision("backlog"), "in error: hashed again"
    assert decide(None, [], None, False).action == "missing"
