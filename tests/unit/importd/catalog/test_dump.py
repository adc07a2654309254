"""The dump format: every table covered, every value spelled exactly, read back as written."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table
from sqlalchemy.types import JSON

from importd.catalog import dump
from importd.catalog.dump import DumpError, DumpSource, engine_lines, sqlite_lines, table_specs
from importd.catalog.engine import create_engine, head_revision
from importd.catalog.restore import CatalogNotEmpty, restore_catalog
from tests.unit.importd.catalog.test_engine import migrate_file, with_alembic

SOURCE = DumpSource(version="0.1.0", created=1_790_000_000.25)
EMBEDDING = struct.pack("<512f", *(math.sin(i) for i in range(512)))


def seed(db: Path) -> None:
    """A catalog with a value of every kind in it, the awkward ones included."""
    migrate_file(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(
        """
        INSERT INTO roots (id, name, path, last_reconciled) VALUES (1, 'legacy', '/srv/legacy', NULL);
        INSERT INTO contents (blake3, size, first_seen)
          VALUES ('ab' || hex(zeroblob(31)), 9007199254740993, 0.1);
        INSERT INTO entities (id, type, key, name, attributes, first_seen, updated, merged_into)
          VALUES (1, 'character', 'b', 'B', '{}', 1, 1, NULL);
        INSERT INTO tags (id, key, name, color, created)
          VALUES (1, 'zz', 'ZZ', NULL, 1), (2, 'Ab', 'Ab', '#fff', 2), (3, '_a', '_a', NULL, 3);
        """
    )
    digest = "ab" + "00" * 31
    conn.execute(
        "INSERT INTO files (id, root_id, relpath, display_path, size, mtime_ns, inode, dev, blake3, status,"
        " first_seen, last_seen) VALUES (1, 1, ?, ?, 9, ?, ?, 2049, ?, 'present', 1.5, 1790000000.123456)",
        (b"caf\xe9/\xff\nname.jpg", "caf\\xe9/\\xff\\nname.jpg", -(2**63), 2**63 - 1, digest),
    )
    # An entity merged into a later one: its reference points forward in id order.
    conn.execute(
        "INSERT INTO entities (id, type, key, name, attributes, first_seen, updated, merged_into)"
        " VALUES (2, 'character', 'merged2:a', 'A', '{\"age\": 30}', 1, 1, NULL)"
    )
    conn.execute(
        "INSERT INTO entities (id, type, key, name, attributes, first_seen, updated, merged_into)"
        " VALUES (3, 'character', 'a', 'A', '{}', 1, 1, NULL)"
    )
    conn.execute("UPDATE entities SET merged_into = 3 WHERE id = 2")
    conn.execute(
        "INSERT INTO faces (blake3, idx, x1, y1, x2, y2, det_score, embedding)"
        " VALUES (?, 0, ?, ?, 0.1, 1e300, 0.5, ?)",
        (digest, float("inf"), float("-inf"), EMBEDDING),  # SQLite stores NaN as NULL
    )
    conn.execute(
        "INSERT INTO image_hashes (blake3, phash, dhash, low_detail) VALUES (?, ?, 0, 1)", (digest, -(2**63))
    )
    conn.execute("INSERT INTO file_tags (file_id, tag_id, source, at) VALUES (1, 2, 'csv', 1)")
    conn.execute(
        "INSERT INTO attribute_sources (entity_id, attribute, kind, source, run_id, at) VALUES"
        " (3, 'Zeta', 'metadata', 'm', NULL, 1), (3, 'alpha', 'metadata', 'm', NULL, 1),"
        " (3, '_x', 'metadata', 'm', NULL, 1)"
    )
    conn.commit()
    conn.close()


def lines_of(db: Path) -> list[str]:
    return list(sqlite_lines(str(db), SOURCE))


async def _engine_lines(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return [line async for line in engine_lines(engine, SOURCE, batch=2)]
    finally:
        await engine.dispose()


def restore(db: Path, lines: list[str]) -> None:
    asyncio.run(restore_catalog(f"sqlite:///{db}", iter(lines), batch=2))


# Kept by triggers from the other tables (which rebuild them as a dump is loaded): not dumped.
DERIVED = {"file_counts"}


def test_every_table_of_a_migrated_catalog_is_in_the_dump(tmp_path: Path) -> None:
    """Alembic's schema, not the models': a table a migration adds without a model fails here."""
    db = tmp_path / "migrated.db"
    with_alembic(db, "head")
    conn = sqlite3.connect(db)
    tables = {
        name: [row[1] for row in conn.execute(f"PRAGMA table_info('{name}')")]
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if name != "alembic_version" and not name.startswith("sqlite_") and name not in DERIVED
    }
    conn.close()
    header = json.loads(lines_of(db)[0])
    assert {name: sorted(cols) for name, cols in header["tables"].items()} == {
        name: sorted(cols) for name, cols in tables.items()
    }


def test_the_header_says_what_the_dump_is(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    header = json.loads(lines_of(db)[0])
    assert header["format"] == "importd-dump" and header["version"] == 1
    assert header["revision"] == head_revision()
    assert header["importd"] == "0.1.0" and header["created"] == "2026-09-21T14:13:20.250Z"
    assert list(header["tables"]) == [s.name for s in table_specs()]


def test_values_are_spelled_exactly(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    rows = [json.loads(line) for line in lines_of(db)[1:-1]]
    by_table: dict[str, list[dict[str, object]]] = {}
    for obj in rows:
        by_table.setdefault(obj["table"], []).append(obj["row"])
    f = by_table["files"][0]
    assert f["relpath"] == {"b64": "Y2Fm6S//Cm5hbWUuanBn"}
    assert f["mtime_ns"] == -(2**63) and f["inode"] == 2**63 - 1
    assert f["last_seen"] == 1790000000.123456 and f["blake3"] == "ab" + "00" * 31
    assert by_table["contents"][0]["size"] == 9007199254740993  # beyond a double's integers
    face = by_table["faces"][0]
    assert face["x1"] == {"float": "inf"} and face["y1"] == {"float": "-inf"} and face["y2"] == 1e300
    assert face["embedding"] == {"b64": __import__("base64").b64encode(EMBEDDING).decode()}
    assert by_table["image_hashes"][0]["low_detail"] is True
    assert by_table["entities"][1]["attributes"] == '{"age": 30}'  # JSON in a text column stays text
    assert by_table["roots"][0]["last_reconciled"] is None
    # Rows in key order; text keys bytewise, as PostgreSQL is told to sort them too.
    assert [t["id"] for t in by_table["tags"]] == [1, 2, 3]
    assert [a["attribute"] for a in by_table["attribute_sources"]] == ["Zeta", "_x", "alpha"]
    end = json.loads(lines_of(db)[-1])
    assert end == {
        "end": True,
        "rows": {s.name: len(by_table.get(s.name, [])) for s in table_specs()},
        "files": {},
    }
    assert all(line.isascii() for line in lines_of(db))


def test_the_async_engine_reads_the_same_lines(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    assert asyncio.run(_engine_lines(f"sqlite:///{db}")) == lines_of(db)


def test_a_dump_restored_into_a_new_catalog_dumps_the_same(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    first = lines_of(db)
    restore(tmp_path / "new.db", first)
    assert lines_of(tmp_path / "new.db") == first
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT merged_into FROM entities WHERE id = 2").fetchone() == (3,)
    conn.close()


def test_the_trash_ledger_travels_as_file_lines(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(b'{"event": "trash", "id": 1}\n\n{"event": "restore", "id": 1}\n')
    lines = list(sqlite_lines(str(db), DumpSource("0.1.0", 1.0, ledger=bytes(ledger))))
    assert json.loads(lines[-2]) == {"file": "trash/ledger.jsonl", "line": '{"event": "restore", "id": 1}'}
    assert json.loads(lines[-1])["files"] == {"trash/ledger.jsonl": 2}
    got: list[tuple[str, str]] = []
    asyncio.run(
        restore_catalog(
            f"sqlite:///{tmp_path / 'n.db'}", iter(lines), on_file_line=lambda n, ln: got.append((n, ln))
        )
    )
    assert [ln for _, ln in got] == ['{"event": "trash", "id": 1}', '{"event": "restore", "id": 1}']


def test_a_catalog_with_rows_is_refused_before_anything_changes(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    seed(db)
    before = db.read_bytes()
    with pytest.raises(CatalogNotEmpty, match="not empty"):
        restore(db, lines_of(db))
    assert db.read_bytes() == before


def _broken(lines: list[str], where: int, new: str | None) -> list[str]:
    out = list(lines)
    if new is None:
        del out[where]
    else:
        out[where] = new
    return out


def _header(lines: list[str], **changes: object) -> str:
    header = json.loads(lines[0])
    header.update(changes)
    return json.dumps(header)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ls: _broken(ls, 0, '{"hello": 1}'), "not an importd dump"),
        (lambda ls: _broken(ls, 0, _header(ls, version=2)), "format version 2"),
        (lambda ls: _broken(ls, 0, _header(ls, revision="0001")), "schema revision '0001'"),
        (lambda ls: ls[:-1], "without its end line"),
        (lambda ls: _broken(ls, 2, None), "the end line counts"),
        (lambda ls: _broken(ls, 1, ls[1][:-3]), "line 2: not JSON"),
        (lambda ls: [ls[0], ls[3], ls[1], *ls[4:]], "dependency order|FOREIGN KEY"),
        (
            lambda ls: [ln.replace('"roots","row":{"id":1', '"roots","row":{"id":"1"') for ln in ls],
            r"roots\.id: not an integer",
        ),
        (lambda ls: [*ls, ls[-1]], "more after the end line"),
    ],
)
def test_a_damaged_dump_is_refused_and_nothing_is_restored(tmp_path: Path, damage, message) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "c.db"
    seed(db)
    target = tmp_path / "new.db"
    with pytest.raises(Exception, match=message):
        restore(target, damage(lines_of(db)))
    if target.exists():
        conn = sqlite3.connect(target)
        assert conn.execute("SELECT count(*) FROM roots").fetchone() == (0,)
        conn.close()


def test_floats_round_trip_nan_and_the_infinities_included() -> None:
    from importd.catalog.restore import _decode

    for value in (0.1, -0.0, 1e-310, 1790000000.123456, math.inf, -math.inf):
        encoded = json.loads(json.dumps(dump._float(value)))
        assert _decode("float", encoded) == value
        assert math.copysign(1, _decode("float", encoded)) == math.copysign(1, value)
    assert math.isnan(_decode("float", dump._float(math.nan)))


def test_a_column_type_without_a_spelling_stops_the_dump() -> None:
    table = Table("later", MetaData(), Column("data", JSON))
    with pytest.raises(DumpError, match=r"later\.data: column type .* has no spelling"):
        dump._kind(table, "data")


def test_chunks_hold_whole_lines() -> None:
    def lines() -> Iterator[str]:
        yield from ("a" * 10 for _ in range(25))

    pieces = list(dump.chunks_of(lines(), 50))
    assert "".join(pieces) == "".join("a" * 10 + "\n" for _ in range(25))
    assert all(p.endswith("\n") for p in pieces)


def test_a_dump_restored_into_postgresql_dumps_the_same(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "c.db"
    seed(db)
    first = lines_of(db)
    asyncio.run(restore_catalog(pg_url, iter(first), batch=2))
    again = asyncio.run(_engine_lines(pg_url))
    assert again[1:] == first[1:]
    assert {**json.loads(again[0]), "source": "sqlite"} == json.loads(first[0])
    # The id sequences moved past the restored ids: the next row gets the next id.
    assert asyncio.run(_next_entity_id(pg_url)) == 4
    restore(tmp_path / "back.db", again)
    assert lines_of(tmp_path / "back.db") == first


async def _next_entity_id(url: str) -> int:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            row = await conn.execute(
                text(
                    "INSERT INTO entities (type, key, name, attributes, first_seen, updated)"
                    " VALUES ('character', 'new', 'New', '{}', 1, 1) RETURNING id"
                )
            )
            return int(row.scalar_one())
    finally:
        await engine.dispose()
