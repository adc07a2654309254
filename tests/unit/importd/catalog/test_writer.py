"""The catalog writer's set-based batch logic, on a real SQLite database."""

import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.brake import VanishLimits
from importd.catalog import (
    holds,
    models,
    writer,
)
from importd.catalog.engine import create_engine as create_engine_for
from importd.catalog.engine import migrate
from importd.catalog.roots import ensure_roots
from importd.catalog.writer import apply_ops
from importd.items import (
    CatalogOp,
    ConfirmHeld,
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    MovedFile,
    Vanished,
    VanishedRows,
)

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        ensure_roots(c, "h", [("r", "/srv/r")])
        yield c


def ref(path: bytes) -> FileRef:
    return FileRef(1, "r", path)


def st(inode: int, size: int = 10) -> FileStat:
    return FileStat(size, 1000 + inode, 1000, inode, 7)


def rows(c: Connection) -> list[tuple[object, ...]]:
    return [tuple(r) for r in c.execute(text("SELECT id, relpath, status, blake3 FROM files ORDER BY id"))]


def test_insert_then_update_in_place(conn: Connection) -> None:
    r = apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1), HashedFile(ref(b"b"), st(2), H1)], now=1.0)
    assert (r.inserted, r.hashed_files, r.duplicates) == (2, 2, 1)
    assert [(c.file_id, c.relpath, c.kind, c.duplicate) for c in r.changes] == [
        (1, b"a", "new", False),
        (2, b"b", "new", True),
    ]
    assert conn.execute(text("SELECT count(*) FROM contents")).scalar() == 1, "one content for two paths"
    r = apply_ops(conn, [HashedFile(ref(b"a"), st(1, 20), H2)], now=2.0)
    assert r.updated == 1
    assert rows(conn) == [(1, b"a", "present", H2), (2, b"b", "present", H1)]


def test_last_word_on_a_path_wins_within_a_batch(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1), HashedFile(ref(b"a"), st(1, 11), H2)], now=1.0)
    assert rows(conn) == [(1, b"a", "present", H2)]


def test_missing_then_same_content_elsewhere_is_a_move(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"old"), st(1), H1)], now=1.0)
    apply_ops(conn, [Vanished(ref(b"old"))], now=2.0)
    r = apply_ops(conn, [HashedFile(ref(b"new"), st(9), H1)], now=3.0)
    assert r.moved == 1 and r.inserted == 0
    assert list(conn.execute(text("SELECT file_id, old_relpath FROM file_moves"))) == [(1, b"old")]
    assert [(c.file_id, c.kind) for c in r.changes] == [(1, "moved")]
    assert rows(conn) == [(1, b"new", "present", H1)]


def test_inode_move_onto_an_existing_path_replaces_it(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1), HashedFile(ref(b"b"), st(2), H2)], now=1.0)
    r = apply_ops(conn, [MovedFile(ref(b"b"), st(1), 1, H1)], now=2.0)  # mv a b
    assert r.moved == 1 and r.vanished == 1
    assert rows(conn) == [(1, b"b", "present", H1), (2, b"b", "missing", H2)]


def test_path_that_comes_back_revives_its_row(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1)], now=1.0)
    apply_ops(conn, [Vanished(ref(b"a"))], now=2.0)
    r = apply_ops(conn, [HashedFile(ref(b"a"), st(5), H3)], now=3.0)
    assert r.revived == 1
    assert rows(conn) == [(1, b"a", "present", H3)]


def test_a_missing_row_is_moved_only_once(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1)], now=1.0)
    apply_ops(conn, [Vanished(ref(b"a"))], now=2.0)
    r = apply_ops(conn, [HashedFile(ref(b"x"), st(2), H1), HashedFile(ref(b"y"), st(3), H1)], now=3.0)
    assert (r.moved, r.inserted) == (1, 1)
    assert sorted(x[1] for x in rows(conn)) == [b"x", b"y"]


def test_vanished_subtree_and_rows(conn: Connection) -> None:
    apply_ops(
        conn,
        [HashedFile(ref(p), st(i), H1) for i, p in enumerate([b"d/a", b"d/sub/b", b"d.txt", b"d0", b"e"])],
        now=1.0,
    )
    r = apply_ops(conn, [Vanished(ref(b"d"), subtree=True)], now=2.0)
    assert r.vanished == 2, "only d/..., never d.txt or d0"
    assert sorted(c.relpath for c in r.changes if c.kind == "vanished") == [b"d/a", b"d/sub/b"]
    r = apply_ops(conn, [VanishedRows(1, (b"e", b"d.txt"), walk_started=1.0)], now=3.0)
    assert r.vanished == 0, "rows written since the walk began are not what it missed"
    r = apply_ops(conn, [VanishedRows(1, (b"e", b"nothing"), walk_started=1.5)], now=3.0)
    assert r.vanished == 1
    assert [x[1] for x in rows(conn) if x[2] == "present"] == [b"d.txt", b"d0"]


def test_failure_then_success(conn: Connection) -> None:
    r = apply_ops(conn, [FileFailure(ref(b"a"), st(1), "cannot open: permission denied")], now=1.0)
    assert r.errors == 1
    assert rows(conn) == [(1, b"a", "error", None)]
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1)], now=2.0)
    assert rows(conn) == [(1, b"a", "present", H1)]
    assert conn.execute(text("SELECT error FROM files")).scalar() is None


def test_raw_bytes_paths_round_trip(conn: Connection) -> None:
    names = [b"caf\xe9", b"new\nline", "é".encode(), "e\u0301".encode()]
    apply_ops(conn, [HashedFile(ref(n), st(i), H1) for i, n in enumerate(names)], now=1.0)
    stored = conn.execute(text("SELECT relpath FROM files WHERE status = 'present'")).scalars()
    assert sorted(stored) == sorted(names)
    assert conn.execute(text("SELECT display_path FROM files WHERE id = 2")).scalar() == "new\\nline"


def test_unsigned_inode_fits(conn: Connection) -> None:
    big = FileStat(1, 1, 1, (1 << 64) - 1, (1 << 63) + 5)
    apply_ops(conn, [HashedFile(ref(b"a"), big, H1)], now=1.0)
    assert conn.execute(text("SELECT inode FROM files")).scalar() == -1


def test_new_rows_get_their_own_ids_in_big_batches(conn: Connection) -> None:
    """More rows than one INSERT statement holds; each change names the row of its own path."""
    ops = [HashedFile(ref(b"f%05d" % i), st(100 + i), "%064x" % (i % 700)) for i in range(1000)]
    r = apply_ops(conn, ops, now=1.0)
    assert r.inserted == 1000 and r.duplicates == 300
    by_id = {row_id: relpath for row_id, relpath, _, _ in rows(conn)}
    assert {c.file_id: c.relpath for c in r.changes} == by_id
    assert conn.execute(text("SELECT count(*) FROM contents")).scalar() == 700


def test_ids_come_from_the_catalog_when_sqlite_picks_them_at_random(conn: Connection) -> None:
    """Once the largest id is 2**63 - 1, SQLite picks free ids at random: the writer must not
    assume they follow each other."""
    apply_ops(conn, [HashedFile(ref(b"top"), st(1), H1)], now=1.0)
    conn.execute(text("UPDATE files SET id = 9223372036854775807"))
    r = apply_ops(conn, [HashedFile(ref(b"n%d" % i), st(10 + i), H2) for i in range(5)], now=2.0)
    by_path = {relpath: row_id for row_id, relpath, _, _ in rows(conn)}
    assert {c.relpath: c.file_id for c in r.changes} == {p: by_path[p] for p in by_path if p != b"top"}


def test_the_portable_path_registers_the_same(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """What PostgreSQL runs (SQLAlchemy statements, RETURNING) gives the rows and changes that
    the SQLite fast path gives."""
    ops: list[CatalogOp] = [HashedFile(ref(b"f%03d" % i), st(100 + i), "%064x" % (i % 7)) for i in range(300)]
    ops.insert(150, FileFailure(ref(b"broken"), st(99), "read failed: input/output error"))
    fast = apply_ops(conn, ops, now=1.0)
    fast_rows = rows(conn)
    conn.execute(text("DELETE FROM files"))
    conn.execute(text("DELETE FROM contents"))
    monkeypatch.setattr(writer, "_raw_sqlite", lambda _conn: False)
    portable = apply_ops(conn, ops, now=1.0)
    assert rows(conn) == fast_rows  # ids start again at 1 in the emptied table
    assert [(c.file_id, c.relpath, c.kind, c.duplicate) for c in portable.changes] == [
        (c.file_id, c.relpath, c.kind, c.duplicate) for c in fast.changes
    ]
    assert portable.errors == fast.errors == 1


def test_live_rows_are_found_by_folder_probes(conn: Connection) -> None:
    """A batch of many files a folder looks paths up only in folders that hold live rows (the
    folder probe); what it finds must be what a lookup of every path finds: rows in a known
    folder, also deeper ones, and at the root, but not missing rows."""
    known = [b"old/a%02d" % i for i in range(8)] + [b"old/deep/x", b"top", b"gone/z"]
    apply_ops(conn, [HashedFile(ref(p), st(i + 1), H1) for i, p in enumerate(known)], now=1.0)
    apply_ops(conn, [Vanished(ref(b"gone/z"))], now=2.0)
    batch = (
        [b"old/a%02d" % i for i in range(0, 16, 2)]  # half known, half new, in a known folder
        + [b"new%d/f%02d" % (d, i) for d in range(4) for i in range(10)]  # new folders
        + [b"old/deep/x", b"top", b"gone/z", b"other"]
    )
    keys = [(1, p) for p in batch]
    probed = writer._live_rows(conn, keys)
    by_path = {relpath: row_id for row_id, relpath, status, _ in rows(conn) if status != "missing"}
    expected = {(1, p): by_path[p] for p in batch if p in by_path}
    assert probed == expected
    assert set(expected) == {
        (1, p) for p in [b"old/a00", b"old/a02", b"old/a04", b"old/a06", b"old/deep/x", b"top"]
    }
    # The same batch with one file a folder takes the per-path lookup: same answer.
    assert writer._live_rows(conn, keys[-4:]) == {k: v for k, v in expected.items() if k in keys[-4:]}


# -- announcing committed batches to listeners ------------------------------------------------


async def _run_writer(tmp: Path, body: Callable[[writer.CatalogWriter], Awaitable[None]]) -> None:
    engine = create_engine_for(f"sqlite:///{tmp / 'catalog.db'}")
    try:
        await migrate(engine)
        w = writer.CatalogWriter(engine, clock=lambda: 5.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await w.call(lambda c: ensure_roots(c, "h", [("r", "/srv/r")]))
            await body(w)
            w.close()
    finally:
        await engine.dispose()


def test_a_listener_gets_exactly_what_each_batch_committed(tmp_path: Path) -> None:
    got: list[writer.BatchResult] = []
    rows_then: list[list[tuple[object, ...]]] = []

    async def body(w: writer.CatalogWriter) -> None:
        async def listener(result: writer.BatchResult) -> None:
            got.append(result)
            # Announced after the commit: another connection already reads the rows. (Not
            # `w.call`: the writer waits for its listeners, so that would wait forever.)
            async with w.engine.connect() as c:
                rows_then.append(await c.run_sync(rows))

        w.subscribe(listener)
        await w.put_many([HashedFile(ref(b"a"), st(1), H1), HashedFile(ref(b"b"), st(2), H1)])
        await w.flush()
        await w.put(Vanished(ref(b"a")))
        await w.flush()
        await w.call(lambda c: None)  # a call is not a batch of ops: nothing is announced

    anyio.run(_run_writer, tmp_path, body)
    assert [(c.file_id, c.relpath, c.kind, c.blake3, c.duplicate) for c in got[0].changes] == [
        (1, b"a", "new", H1, False),
        (2, b"b", "new", H1, True),
    ]
    assert (got[0].inserted, got[0].duplicates, got[0].touched_roots) == (2, 1, {1})
    assert rows_then[0] == [(1, b"a", "present", H1), (2, b"b", "present", H1)]
    assert [(c.file_id, c.kind) for c in got[1].changes] == [(1, "vanished")]
    assert got[1].vanished == 1 and rows_then[1][0] == (1, b"a", "missing", H1)
    assert len(got) == 2


def test_a_failing_listener_is_logged_and_breaks_neither_the_writer_nor_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []
    kinds: list[list[str]] = []

    def failing(result: writer.BatchResult) -> None:
        order.append("failing")
        raise RuntimeError("stage broken")

    def after(result: writer.BatchResult) -> None:
        order.append("after")
        kinds.append([c.kind for c in result.changes])

    async def body(w: writer.CatalogWriter) -> None:
        w.subscribe(failing)
        w.subscribe(after)
        await w.put(HashedFile(ref(b"a"), st(1), H1))
        await w.flush()
        await w.put(HashedFile(ref(b"b"), st(2), H2))
        await w.flush()
        assert w.pending == 0 and w.last_error is None
        assert [r[1] for r in await w.call(rows)] == [b"a", b"b"], "both batches committed"

    with caplog.at_level(logging.ERROR, logger="importd.catalog"):
        anyio.run(_run_writer, tmp_path, body)
    assert order == ["failing", "after", "failing", "after"], "subscription order, every batch"
    assert kinds == [["new"], ["new"]]
    assert sum("listener of committed batches failed" in r.getMessage() for r in caplog.records) == 2


def _forget(conn: Connection, path: bytes) -> None:
    conn.execute(
        text("UPDATE files SET status = 'forgotten' WHERE relpath = :p AND status = 'missing'"), {"p": path}
    )


def test_a_forgotten_path_that_reappears_is_a_new_row(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1)], now=1.0)
    apply_ops(conn, [Vanished(ref(b"a"))], now=2.0)
    _forget(conn, b"a")
    # Same path, same content: neither revived nor moved; the forgotten row stays as it was.
    r = apply_ops(conn, [HashedFile(ref(b"a"), st(2), H1)], now=3.0)
    assert (r.inserted, r.revived, r.moved) == (1, 0, 0)
    assert rows(conn) == [(1, b"a", "forgotten", H1), (2, b"a", "present", H1)]
    # Same content elsewhere: not a move of the forgotten row either.
    apply_ops(conn, [Vanished(ref(b"a"))], now=4.0)
    _forget(conn, b"a")
    r = apply_ops(conn, [HashedFile(ref(b"b"), st(3), H1)], now=5.0)
    assert (r.inserted, r.moved) == (1, 0)


def test_vanishing_never_touches_a_forgotten_row(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(p), st(i), H1) for i, p in enumerate([b"d/a", b"d/b", b"e"])], now=1.0)
    apply_ops(conn, [Vanished(ref(b"d/a"))], now=2.0)
    _forget(conn, b"d/a")
    apply_ops(conn, [HashedFile(ref(b"d/a"), st(9), H2)], now=3.0)  # a new file at the path
    r = apply_ops(conn, [Vanished(ref(b"d"), subtree=True)], now=4.0)
    assert sorted(c.relpath for c in r.changes) == [b"d/a", b"d/b"]
    r = apply_ops(conn, [VanishedRows(1, (b"d/a", b"e"), walk_started=5.0)], now=5.0)
    assert [c.relpath for c in r.changes] == [b"e"]
    assert [(x[1], x[2]) for x in rows(conn)] == [
        (b"d/a", "forgotten"),
        (b"d/b", "missing"),
        (b"e", "missing"),
        (b"d/a", "missing"),
    ]


def test_live_rows_use_the_partial_index_of_live_paths(conn: Connection) -> None:
    # The statements spell the index's own condition, so SQLite can use it (see models.py).
    plan = conn.exec_driver_sql(
        f"EXPLAIN QUERY PLAN SELECT id FROM files WHERE root_id = 1 AND {models.LIVE_PATH_WHERE}"
        " AND relpath IN (x'61', x'62')"
    ).fetchall()
    assert "uq_files_live_path" in str(plan)


def test_vanished_paths_are_looked_up_in_the_live_path_index(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(p), st(i), H1) for i, p in enumerate([b"d/a", b"d", b"e"])], now=1.0)
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, params: object, *_rest: object) -> None:
        statements.append((statement, params))

    event.listen(conn, "before_cursor_execute", record)
    try:
        assert len(writer._gone_row_ids(conn, [Vanished(ref(b"d"), subtree=True, at=5.0)])) == 2
        assert len(writer._vanished_row_ids(conn, VanishedRows(1, (b"e",), walk_started=5.0))) == 1
    finally:
        event.remove(conn, "before_cursor_execute", record)
    # Not `status NOT IN (?, ?)` nor `= path OR range`: with either SQLite searched by root_id
    # alone, all of the root's rows.
    assert statements
    for statement, params in statements:
        plan = str(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).fetchall())  # type: ignore[arg-type]
        assert "uq_files_live_path (root_id=? AND relpath" in plan, plan


# -- the brake on mass disappearance ----------------------------------------------------------


def _seed(conn: Connection, n: int) -> list[bytes]:
    paths = [b"f%03d" % i for i in range(n)]
    apply_ops(conn, [HashedFile(ref(p), st(i + 1), "%064x" % (i + 1)) for i, p in enumerate(paths)], now=1.0)
    return paths


def _statuses(c: Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in c.execute(text("SELECT status, count(*) FROM files GROUP BY status"))}


def test_a_reconcile_over_the_limit_is_held_and_the_rows_stay_present(conn: Connection) -> None:
    paths = _seed(conn, 50)
    brake = writer.HoldState(VanishLimits(1000, 20.0))
    r = apply_ops(conn, [VanishedRows(1, tuple(paths[:15]), 5.0, b"")], now=6.0, brake=brake)
    assert r.vanished == 0 and r.changes == [] and r.held == {1: 15}
    assert brake.held == {1: 15} and holds.held_counts(conn) == {1: 15}
    assert _statuses(conn) == {"present": 50}
    # The next reconcile still misses them: still held, nothing marked, their first time kept.
    r = apply_ops(conn, [VanishedRows(1, tuple(paths[:15]), 7.0, b"")], now=8.0, brake=brake)
    assert r.vanished == 0 and _statuses(conn) == {"present": 50}
    assert {s for (s,) in conn.execute(text("SELECT since FROM vanish_holds"))} == {6.0}
    # Confirmed: missing since they vanished, and the gaps hear of it (vanished changes).
    r = apply_ops(conn, [ConfirmHeld(1)], now=20.0, brake=brake)
    assert r.vanished == 15 and {c.kind for c in r.changes} == {"vanished"} and r.held == {1: 0}
    assert brake.held == {} and holds.held_counts(conn) == {}
    assert _statuses(conn) == {"present": 35, "missing": 15}
    assert {s for (s,) in conn.execute(text("SELECT missing_since FROM files WHERE status = 'missing'"))} == {
        6.0
    }


def test_a_single_deletion_and_a_small_share_are_marked_at_once(conn: Connection) -> None:
    paths = _seed(conn, 50)
    brake = writer.HoldState(VanishLimits(1000, 20.0))
    r = apply_ops(conn, [Vanished(ref(paths[0]))], now=6.0, brake=brake)
    assert r.vanished == 1 and r.held == {} and brake.held == {}
    r = apply_ops(conn, [VanishedRows(1, tuple(paths[1:10]), 7.0, b"")], now=8.0, brake=brake)
    assert r.vanished == 9 and brake.held == {}
    assert _statuses(conn) == {"present": 40, "missing": 10}


def test_a_burst_of_watcher_deletions_is_judged_as_one(conn: Connection) -> None:
    paths = _seed(conn, 50)
    brake = writer.HoldState(VanishLimits(1000, 20.0))
    burst: list[CatalogOp] = [Vanished(ref(p)) for p in paths[:15]]
    r = apply_ops(conn, burst, now=6.0, brake=brake)
    assert r.vanished == 0 and r.held == {1: 15} and _statuses(conn) == {"present": 50}
    # While held, whatever else vanishes joins the hold.
    apply_ops(conn, [Vanished(ref(paths[20]))], now=7.0, brake=brake)
    assert brake.held == {1: 16} and _statuses(conn) == {"present": 50}


def test_a_subtree_deletion_over_the_file_limit_is_held(conn: Connection) -> None:
    apply_ops(
        conn, [HashedFile(ref(b"d/%03d" % i), st(i + 1), "%064x" % (i + 1)) for i in range(30)], now=1.0
    )
    apply_ops(
        conn, [HashedFile(ref(b"e/%03d" % i), st(i + 100), "%064x" % (i + 100)) for i in range(300)], now=1.0
    )
    brake = writer.HoldState(VanishLimits(20, 100.0))
    r = apply_ops(conn, [Vanished(ref(b"d"), subtree=True)], now=6.0, brake=brake)
    assert r.held == {1: 30} and _statuses(conn) == {"present": 330}


def test_files_found_again_release_the_hold_and_nothing_changed(conn: Connection) -> None:
    paths = _seed(conn, 50)
    before = rows(conn)
    brake = writer.HoldState(VanishLimits(1000, 20.0))
    apply_ops(conn, [VanishedRows(1, tuple(paths[:20]), 5.0, b"")], now=6.0, brake=brake)
    # A walk of a folder that holds none of them changes nothing; a whole-root walk that misses
    # only five releases the other fifteen (five of fifty is under the limit, but the root is
    # still held: they stay held).
    apply_ops(conn, [VanishedRows(1, (), 7.0, b"elsewhere")], now=7.0, brake=brake)
    assert brake.held == {1: 20}
    r = apply_ops(conn, [VanishedRows(1, tuple(paths[:5]), 8.0, b"")], now=9.0, brake=brake)
    assert r.held == {1: 5} and brake.held == {1: 5}
    # A held file written again (the watcher saw it come back) is released too.
    r = apply_ops(
        conn,
        [HashedFile(ref(p), st(i + 1), "%064x" % (i + 1)) for i, p in enumerate(paths[:5])],
        now=10.0,
        brake=brake,
    )
    assert r.held == {1: 0} and brake.held == {} and holds.held_counts(conn) == {}
    assert [(i, p, s, h) for i, p, s, h in rows(conn)] == before, "same rows, same ids, all present"


def test_without_a_brake_everything_is_marked_as_before(conn: Connection) -> None:
    paths = _seed(conn, 50)
    r = apply_ops(conn, [VanishedRows(1, tuple(paths[:40]), 5.0)], now=6.0)
    assert r.vanished == 40 and r.held == {}


# -- failures: transient ones wait, permanent ones fail their own item -------------------------


def _sqlite_error(code: int, message: str, kind: type[sqlite3.Error] = sqlite3.OperationalError) -> Exception:
    err = kind(message)
    err.sqlite_errorcode = code
    return sa_exc.OperationalError("INSERT ...", (), err)


def test_transient_and_permanent_failures_are_told_apart() -> None:
    assert writer.is_transient(_sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"))
    assert writer.is_transient(_sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"))
    assert writer.is_transient(_sqlite_error(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"))
    assert writer.is_transient(
        sa_exc.OperationalError("x", (), sqlite3.OperationalError("database is locked"))
    )
    assert writer.is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert writer.is_transient(ConnectionResetError())
    constraint = sqlite3.IntegrityError("UNIQUE constraint failed: files.root_id, files.relpath")
    constraint.sqlite_errorcode = sqlite3.SQLITE_CONSTRAINT_UNIQUE
    assert not writer.is_transient(sa_exc.IntegrityError("INSERT ...", (), constraint))
    assert not writer.is_transient(_sqlite_error(sqlite3.SQLITE_ERROR, "no such table: files"))
    assert not writer.is_transient(sa_exc.DataError("x", (), Exception("bad value")))
    assert not writer.is_transient(TypeError("bad data"))
    assert writer.is_disk_full(_sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"))
    assert not writer.is_disk_full(_sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"))


class _PgError(Exception):
    """Shaped as SQLAlchemy's asyncpg adapter gives PostgreSQL's errors: with their SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_postgresql_failures_are_told_apart_by_sqlstate() -> None:
    for state in ("08006", "40001", "40P01", "53100", "53300", "57P01", "55P03", "58030"):
        assert writer.is_transient(sa_exc.OperationalError("x", (), _PgError(state))), state
    assert not writer.is_transient(sa_exc.IntegrityError("INSERT ...", (), _PgError("23505")))
    assert not writer.is_transient(sa_exc.OperationalError("x", (), _PgError("42883")))  # no such operator
    assert writer.is_disk_full(sa_exc.OperationalError("x", (), _PgError("53100")))
    assert not writer.is_disk_full(sa_exc.OperationalError("x", (), _PgError("40001")))


def test_a_permanent_failure_fails_its_own_item_and_the_batch_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[writer.BatchResult] = []

    async def body(w: writer.CatalogWriter) -> None:
        # Injected: the catalog refuses a present row at b"bad", and any row at b"worse".
        await w.call(
            lambda c: c.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON files WHEN (NEW.relpath = X'626164' AND "
                "NEW.status = 'present') OR NEW.relpath = X'776f727365' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )
        w.subscribe(got.append)
        await w.put_many(
            [
                HashedFile(ref(b"a"), st(1), H1),
                HashedFile(ref(b"bad"), st(2), H2),
                HashedFile(ref(b"worse"), st(3), H3),
                HashedFile(ref(b"c"), st(4), H3),
            ]
        )
        await w.flush()
        assert w.last_error is None and w.pending == 0 and w.dropped == 1
        found = {
            bytes(p): (s, e)
            for p, s, e in await w.call(
                lambda c: list(c.exec_driver_sql("SELECT relpath, status, error FROM files"))
            )
        }
        assert found[b"a"] == ("present", None) and found[b"c"] == ("present", None)
        assert found[b"bad"][0] == "error" and "refused by the test" in found[b"bad"][1]
        assert b"worse" not in found, "its failure row was refused too: dropped, logged"

    with caplog.at_level(logging.WARNING, logger="importd.catalog"):
        anyio.run(_run_writer, tmp_path, body)
    assert sorted(c.kind for r in got for c in r.changes) == ["error", "new", "new"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("writing them one at a time" in m for m in messages)
    assert any(m.startswith("dropped HashedFile of r/worse") for m in messages)
    assert not any("retrying" in m for m in messages), "a permanent failure is never retried"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own, to fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the catalog on a full disk)")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_waits_shows_and_clears_when_space_returns(small_fs: Path) -> None:
    filler = small_fs / "filler"

    async def body(w: writer.CatalogWriter) -> None:
        await w.put_many([HashedFile(ref(b"first"), st(1), H1)])
        await w.flush()
        with filler.open("wb") as out:  # fill every block that is left
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        many: list[CatalogOp] = [
            HashedFile(ref(b"p%05d" % i), st(i + 10, 4096), "%064x" % (i + 10)) for i in range(3000)
        ]
        await w.put_many(many)
        with anyio.fail_after(20):
            while not w.disk_full:
                await anyio.sleep(0.05)
        assert w.last_error is not None and w.pending == 3000, "nothing dropped: the ops wait"
        filler.unlink()
        with anyio.fail_after(30):
            await w.flush()
        assert not w.disk_full and w.last_error is None and w.dropped == 0
        count = await w.call(lambda c: c.exec_driver_sql("SELECT count(*) FROM files").scalar_one())
        assert count == 3001

    anyio.run(_run_writer, small_fs, body)


def test_a_deletion_does_not_mark_a_file_registered_at_its_path_since(conn: Connection) -> None:
    apply_ops(conn, [HashedFile(ref(b"a"), st(1), H1), HashedFile(ref(b"b"), st(2), H2)], now=1.0)
    apply_ops(conn, [HashedFile(ref(b"a"), st(3), H3)], now=4.0)  # put back while the burst waited
    r = apply_ops(conn, [Vanished(ref(b"a"), at=3.0), Vanished(ref(b"b"), at=3.0)], now=5.0)
    assert [c.relpath for c in r.changes] == [b"b"]
