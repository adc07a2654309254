"""File reads: each hot SQLite path gives the same answer as its portable statement, on the same
catalog; find by path, by hash and by error; status counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from importd.catalog import files
from importd.catalog.engine import create_engine as catalog_engine
from importd.catalog.engine import open_reader
from importd.catalog.roots import ensure_roots
from importd.catalog.writer import apply_ops
from importd.items import (
    FileRef,
    FileStat,
    HashedFile,
    KnownRow,
    KnownRows,
    MovedFile,
    Vanished,
)
from tests.unit.importd.catalog.conftest import on_postgresql, read, register

H1, H2, H3 = "1" * 64, "2" * 64, "a3" + "3" * 62


def _file_catalog(tmp_path: Path) -> str:
    """A catalog file holding present, missing and error rows, hard links and a 64-bit inode."""
    db = tmp_path / "catalog.db"
    engine = create_engine(f"sqlite:///{db}")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        ensure_roots(c, "h", [("r", "/srv/r"), ("s", "/srv/s")])
        register(
            c, {b"a/1": H1, b"a/2": H2, b"a/b/3": H3, b"c": "", b"\xff\n": H1, b"a-b/x": H2, b"a.txt": H3}
        )
        apply_ops(c, [HashedFile(FileRef(2, "s", b"x"), FileStat(5, 1, 1, 2**64 - 3, 2**63 + 9), H2)], 2.0)
        apply_ops(c, [HashedFile(FileRef(2, "s", b"hard"), FileStat(5, 1, 1, 2, 7), H2)], 2.0)
        apply_ops(c, [Vanished(FileRef(1, "r", b"a/2"))], 3.0)
    engine.dispose()
    return str(db)


CASES = [(1, None), (1, b"a"), (1, b"a/b/3"), (1, b"zz"), (2, None)]


def _read_all(rows: KnownRows) -> tuple[list[KnownRow], list[bytes], int]:
    """(present rows, rows in error, chunks): what a walk's thread would read."""
    out: list[KnownRow] = []
    chunks = 0
    try:
        errors = rows.in_error()
        while (chunk := rows.next_chunk()) is not None:
            out += chunk
            chunks += 1
        assert rows.next_chunk() is None, "the end stays the end"
    finally:
        rows.close()
        rows.close()
    return out, errors, chunks


def _expected(db: str, root_id: int, prefix: bytes | None) -> tuple[list[KnownRow], list[bytes]]:
    """The reference: every row of the table, filtered and sorted here."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT relpath, size, mtime_ns, inode, dev, status FROM files WHERE root_id = ?", (root_id,)
        )
        live = [r for r in rows if prefix is None or r[0] == prefix or r[0].startswith(prefix + b"/")]
    finally:
        conn.close()
    present = sorted(r[:5] for r in live if r[5] == "present")
    return present, sorted(r[0] for r in live if r[5] == "error")


async def _streamed(url: str, make: Callable[[AsyncEngine], KnownRows]) -> list[tuple[Any, ...]]:
    engine = catalog_engine(url)
    try:
        return [
            await anyio.to_thread.run_sync(_read_all, make_rows(make, engine, root_id, prefix))
            for root_id, prefix in CASES
        ]
    finally:
        await engine.dispose()


def make_rows(
    make: Callable[..., KnownRows], engine: AsyncEngine, root_id: int, prefix: bytes | None
) -> KnownRows:
    return make(engine, root_id, prefix)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_known_rows_stream_the_live_rows_in_relpath_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """A walk's catalog read: the live rows in byte order of relpath, in chunks, from the
    SQLite file's reader thread and through the async engine alike."""
    db = _file_catalog(tmp_path)
    monkeypatch.setattr(files, "ROW_CHUNK", 1)
    url = f"sqlite:///{db}"
    by_file = await _streamed(url, files.known_rows)
    by_engine = await _streamed(url, files._EngineKnownRows)
    for (root_id, prefix), got, through_engine in zip(CASES, by_file, by_engine, strict=True):
        present, errors = _expected(db, root_id, prefix)
        assert got == (present, errors, len(present)), (root_id, prefix)
        assert through_engine == got, (root_id, prefix)
    assert [r[0] for r in by_file[0][0]] == [b"a-b/x", b"a.txt", b"a/1", b"a/b/3", b"\xff\n"], (
        "missing rows are not live"
    )
    assert [r[0] for r in by_file[1][0]] == [b"a/1", b"a/b/3"], (
        "a folder's siblings that sort below a/ stay out"
    )
    assert by_file[0][1] == [b"c"]


def test_the_sqlite_read_follows_the_path_index_with_no_sort(tmp_path: Path) -> None:
    """A root's rows and a folder's: the path index in order, a folder's as one range of it (a
    folder's walk read the whole root when its query said `range OR = prefix`)."""
    db = _file_catalog(tmp_path)
    reader = open_reader(db)
    try:
        for prefix in (None, b"a"):
            present, _, params = files._stream_sql(1, prefix, sqlite=True)
            plan = " | ".join(str(r[-1]) for r in reader.execute("EXPLAIN QUERY PLAN " + present, params))
            assert "uq_files_live_path" in plan and "TEMP B-TREE" not in plan, plan
            assert prefix is None or "relpath>? AND relpath<?" in plan, plan
    finally:
        reader.close()


def test_a_walk_that_stops_early_ends_the_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _file_catalog(tmp_path)
    monkeypatch.setattr(files, "ROW_CHUNK", 1)
    monkeypatch.setattr(files, "PREFETCH_CHUNKS", 1)
    rows = files._SqliteKnownRows(db, 1, None)
    assert rows.next_chunk() == _expected(db, 1, None)[0][:1]
    rows.close()  # the reader thread, blocked on a full queue, ends
    assert not rows._thread.is_alive()


def test_a_read_that_fails_raises_in_the_walk_s_thread(tmp_path: Path) -> None:
    rows = files._SqliteKnownRows(str(tmp_path / "no-such.db"), 1, None)
    with pytest.raises(sqlite3.OperationalError):
        rows.next_chunk()
    rows.close()


def test_known_rows_on_postgresql_equal_the_sqlite_file_s(tmp_path: Path, pg_url: str) -> None:
    db = _file_catalog(tmp_path)

    def fill(c: Connection) -> None:
        ensure_roots(c, "h", [("r", "/srv/r"), ("s", "/srv/s")])
        register(
            c, {b"a/1": H1, b"a/2": H2, b"a/b/3": H3, b"c": "", b"\xff\n": H1, b"a-b/x": H2, b"a.txt": H3}
        )
        apply_ops(c, [HashedFile(FileRef(2, "s", b"x"), FileStat(5, 1, 1, 2**64 - 3, 2**63 + 9), H2)], 2.0)
        apply_ops(c, [HashedFile(FileRef(2, "s", b"hard"), FileStat(5, 1, 1, 2, 7), H2)], 2.0)
        apply_ops(c, [Vanished(FileRef(1, "r", b"a/2"))], 3.0)

    on_postgresql(pg_url, fill)
    on_pg = anyio.run(_streamed, pg_url, files.known_rows)
    for (root_id, prefix), got in zip(CASES, on_pg, strict=True):
        present, errors = _expected(db, root_id, prefix)
        assert got[:2] == (present, errors), (root_id, prefix)


def _busy_history(c: Connection) -> dict[int, dict[str, tuple[int, int]]]:
    """Every kind of write the catalog takes, then the kept counts (checked against a count of
    the rows themselves)."""
    register(c, {b"a": H1, b"b": H2, b"c": "", b"d": H3, b"e": H1})
    apply_ops(c, [HashedFile(FileRef(1, "r", b"b"), FileStat(99, 5, 5, 2, 7), H3)], 2.0)  # grew
    apply_ops(c, [MovedFile(FileRef(1, "r", b"moved"), FileStat(13, 1, 1, 4, 7), 4, H3)], 3.0)
    apply_ops(c, [Vanished(FileRef(1, "r", b"e")), Vanished(FileRef(1, "r", b"a"))], 4.0)
    files.forget(c, 1, b"e", undo=False, dry_run=False)
    apply_ops(c, [HashedFile(FileRef(1, "r", b"c"), FileStat(7, 9, 9, 3, 7), H2)], 5.0)  # error fixed
    apply_ops(c, [HashedFile(FileRef(1, "r", b"a"), FileStat(11, 9, 9, 30, 7), H1)], 6.0)  # back
    kept = files.status_counts(c)
    assert kept == files.counted_statuses(c)
    return kept


def test_status_counts_are_kept_by_the_catalog_through_every_write(tmp_path: Path, pg_url: str) -> None:
    """`status` reads counts the triggers keep; they equal a count of the rows after every kind of
    write, on a SQLite catalog made from the models and on PostgreSQL (migrated)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    SQLModel.metadata.create_all(engine)
    SQLModel.metadata.create_all(engine)  # again: the triggers are not made twice
    with engine.begin() as c:
        ensure_roots(c, "h", [("r", "/srv/r")])
        on_sqlite = _busy_history(c)
    engine.dispose()
    assert on_sqlite == {1: {"present": (4, 11 + 99 + 7 + 13), "forgotten": (1, 15)}}
    assert on_postgresql(pg_url, _busy_history) == on_sqlite


def test_identities_sqlite_equals_the_portable_identities(tmp_path: Path) -> None:
    db = _file_catalog(tmp_path)
    keys = [(7, 1), (7, 2), (7, 3), (7, 4), (2**63 + 9, 2**64 - 3), (8, 1), (7, 99)]
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        portable = files.identities(c, keys, "h")
    engine.dispose()
    reader = open_reader(db)
    try:
        raw = files.identities_sqlite(reader, keys, "h")
    finally:
        reader.close()
    assert sorted(raw, key=lambda m: m.row_id) == sorted(portable, key=lambda m: m.row_id)
    # Hard links (same dev and inode) and a missing row are all found; the unsigned inode too.
    assert sorted((m.relpath, m.status) for m in portable) == [
        (b"a/1", "present"),
        (b"a/2", "missing"),
        (b"a/b/3", "present"),
        (b"c", "error"),
        (b"hard", "present"),
        (b"x", "present"),
    ]


def test_find_by_path_folder_and_hash(catalog: Connection) -> None:
    register(catalog, {b"d/1": H1, b"d/2": H2, b"e": H1, b"f": H3})
    # mv f e: e's row goes missing, f's row lives at e now.
    apply_ops(catalog, [MovedFile(FileRef(1, "r", b"e"), FileStat(1, 1, 1, 4, 7), 4, H3)], 2.0)
    rows = read(catalog, files.find_path, 1, b"e", 10)
    assert [(r["relpath"], r["status"]) for r in rows] == [(b"e", "present"), (b"e", "missing")]
    assert [r["relpath"] for r in read(catalog, files.find_path, 1, b"d", 10)] == [b"d/1", b"d/2"]
    assert [r["relpath"] for r in read(catalog, files.find_path, 1, b"", 2)] == [b"d/1", b"d/2"]
    assert [r["relpath"] for r in read(catalog, files.find_hash, H1.upper(), 10)] == [b"d/1", b"e"]
    assert [r["relpath"] for r in read(catalog, files.find_hash, "a3", 10)] == [b"e"]
    assert read(catalog, files.find_hash, "ff", 10) == []
    row = read(catalog, files.find_path, 1, b"d/1", 1)[0]
    assert set(row) == {
        "id", "root_id", "relpath", "size", "blake3", "status", "first_seen", "last_seen",
        "missing_since", "error", "mtime_ns", "inode", "dev",
    }  # fmt: skip


def test_find_by_path_reads_a_path_and_a_folder_through_the_partial_path_indexes(catalog: Connection) -> None:
    """Live rows through uq_files_live_path, gone ones through ix_files_gone_path: one query over
    both read every row of the root (0.4 s at a million files)."""
    register(catalog, {b"d/1": H1, b"d/2": H2, b"e": H1})
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"d/2"))], 2.0)
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM files" in statement:
            statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", keep)
    try:
        assert [r["relpath"] for r in read(catalog, files.find_path, 1, b"d/2", 10)] == [b"d/2"]
        assert [r["relpath"] for r in read(catalog, files.find_path, 1, b"d", 10)] == [b"d/1", b"d/2"]
    finally:
        event.remove(Engine, "before_cursor_execute", keep)
    assert len(statements) == 6, statements  # d/2: live, gone; d: live, gone (empty), then the folder's two
    plans = [
        " | ".join(str(r[-1]) for r in catalog.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
        for sql, params in statements
    ]
    for plan in plans:
        assert "uq_files_live_path" in plan or "ix_files_gone_path" in plan, plan
        assert "ix_files_root_id" not in plan and "SCAN files" not in plan, plan


def test_errors_and_status_counts(catalog: Connection) -> None:
    register(catalog, {b"ok": H1, b"bad": "", b"gone": H2})
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"gone"))], 2.0)
    assert [(r["relpath"], r["error"]) for r in read(catalog, files.error_rows, 10, [1])] == [
        (b"bad", "denied")
    ]
    assert files.status_counts(catalog) == {1: {"present": (1, 11), "error": (1, 12), "missing": (1, 13)}}
    assert catalog.execute(text("SELECT count(*) FROM contents")).scalar() == 2


def test_forget_marks_missing_rows_forgotten_and_undo_brings_them_back(catalog: Connection) -> None:
    register(catalog, {b"d/1": H1, b"d/2": H2, b"d/sub/3": H3, b"d.txt": H1, b"keep": H2})
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"d"), subtree=True)], 2.0)
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"d.txt"))], 3.0)

    dry = files.forget(catalog, 1, b"d", undo=False, dry_run=True)
    assert [(r.relpath, r.missing_since) for r in dry] == [(b"d/1", 2.0), (b"d/2", 2.0), (b"d/sub/3", 2.0)]
    assert files.status_counts(catalog)[1]["missing"][0] == 4, "a dry run changes nothing"

    assert [r.relpath for r in files.forget(catalog, 1, b"d/2", undo=False, dry_run=False)] == [b"d/2"]
    done = files.forget(catalog, 1, b"d", undo=False, dry_run=False)
    assert [r.relpath for r in done] == [b"d/1", b"d/sub/3"], "only what is still missing, never d.txt"
    counts = files.status_counts(catalog)[1]
    assert counts["forgotten"][0] == 3 and counts["missing"][0] == 1 and counts["present"][0] == 1
    assert files.forget(catalog, 1, b"keep", undo=False, dry_run=False) == [], "a live row is left alone"

    # find leaves forgotten rows out unless asked; by hash too.
    assert [r["relpath"] for r in read(catalog, files.find_path, 1, b"d", 10)] == [b"d/1", b"d/2", b"d/sub/3"]
    assert read(catalog, lambda s: files.find_path(s, 1, b"d", 10, forgotten=False)) == []
    assert [r["relpath"] for r in read(catalog, lambda s: files.find_hash(s, H1, 10, forgotten=False))] == [
        b"d.txt"
    ]

    back = files.forget(catalog, 1, b"d", undo=True, dry_run=False)
    assert [(r.relpath, r.missing_since) for r in back] == [(b"d/1", 2.0), (b"d/2", 2.0), (b"d/sub/3", 2.0)]
    assert (
        files.status_counts(catalog)[1]["missing"][0] == 4
        and "forgotten" not in files.status_counts(catalog)[1]
    )
    # The whole root (b""): every missing row of it.
    assert len(files.forget(catalog, 1, b"", undo=False, dry_run=False)) == 4


def test_identities_leave_forgotten_rows_out_in_both_spellings(tmp_path: Path) -> None:
    db = _file_catalog(tmp_path)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        assert [r.relpath for r in files.forget(c, 1, b"a/2", undo=False, dry_run=False)] == [b"a/2"]
    keys = [(7, 1), (7, 2), (7, 3), (7, 4)]
    with engine.connect() as c:
        portable = files.identities(c, keys, "h")
    engine.dispose()
    reader = open_reader(db)
    try:
        raw = files.identities_sqlite(reader, keys, "h")
    finally:
        reader.close()
    assert (
        sorted(m.relpath for m in raw)
        == sorted(m.relpath for m in portable)
        == [b"a/1", b"a/b/3", b"c", b"hard"]
    )


def test_identities_see_only_this_hosts_rows(tmp_path: Path) -> None:
    """Another server's inode numbers say nothing about this one's files: a row of another
    host's root with the same (dev, inode) is no move and no hard link here."""
    db = _file_catalog(tmp_path)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        (other,) = ensure_roots(c, "beta", [("r", "/srv/r")]).values()
        apply_ops(c, [HashedFile(FileRef(other, "r", b"same-inode"), FileStat(5, 1, 1, 2, 7), H3)], 4.0)
        keys = [(7, 2)]
        here = files.identities(c, keys, "h")
        there = files.identities(c, keys, "beta")
    engine.dispose()
    reader = open_reader(db)
    try:
        raw_here = files.identities_sqlite(reader, keys, "h")
    finally:
        reader.close()
    assert {m.relpath for m in here} == {m.relpath for m in raw_here}
    assert here and b"same-inode" not in {m.relpath for m in here}
    assert [m.relpath for m in there] == [b"same-inode"]
