"""Maintenance reads and writes: symlinks recorded and gone, move history for proposals, the
scrub's queue and stamps, and a sweep's findings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from importctl.findings import Finding
from importd.catalog import files, maintenance
from importd.catalog.tables import symlinks
from importd.catalog.writer import apply_ops
from importd.items import FileRef, FileStat, MovedFile, Vanished
from tests.unit.importd.catalog.conftest import register

H1, H2 = "1" * 64, "2" * 64


def test_symlinks_are_upserted_and_a_whole_walk_marks_the_rest_gone(catalog: Connection) -> None:
    seen = maintenance.SymlinkSeen
    maintenance.record_links(
        catalog, 1, [seen(b"l1", b"t", b"/srv/r/t", "ok"), seen(b"l2", b"x", None, "loop")], 1.0, True
    )
    maintenance.record_links(catalog, 1, [seen(b"l1", b"u", b"/srv/r/u", "broken")], 2.0, False)
    assert maintenance.link_counts(catalog) == {"broken": 1, "loop": 1}
    maintenance.record_links(catalog, 1, [seen(b"l1", b"u", b"/srv/r/u", "broken")], 3.0, True)
    rows = catalog.execute(
        select(symlinks.c.relpath, symlinks.c.target, symlinks.c.state).order_by(symlinks.c.id)
    )
    assert [tuple(r) for r in rows] == [(b"l1", b"u", "broken"), (b"l2", b"x", "gone")]
    assert maintenance.link_counts(catalog) == {"broken": 1}


def test_move_history_answers_where_a_file_went(catalog: Connection) -> None:
    register(catalog, {b"old/a": H1, b"b": H2})
    apply_ops(catalog, [MovedFile(FileRef(1, "r", b"new/a"), FileStat(11, 1001, 1000, 1, 7), 1, H1)], 2.0)
    assert maintenance.moves_under(catalog, 1, b"old") == [(b"old/a", 2.0, 1, b"new/a")]
    assert maintenance.moves_under(catalog, 1, b"old/a") == [(b"old/a", 2.0, 1, b"new/a")]
    assert maintenance.last_known_at(catalog, 1, b"old/a") == (11, H1), "through the move history"
    assert maintenance.last_known_at(catalog, 1, b"b") == (12, H2)
    assert maintenance.last_known_at(catalog, 1, b"nowhere") is None
    assert maintenance.present_files(catalog, [1]) == [(1, b"new/a", 11), (1, b"b", 12)]
    assert maintenance.present_with_hash(catalog, H2, [1]) == [(1, b"b")]


def test_scrub_goes_oldest_verification_first(catalog: Connection) -> None:
    register(catalog, {b"a": H1, b"b": H2, b"c": H1, b"bad": ""})
    maintenance.mark_verified(catalog, [(1, 5.0), (3, 4.0)])
    assert [r["relpath"] for r in maintenance.scrub_targets(catalog, [1], 100.0, 10)] == [b"b", b"c", b"a"]
    assert [r["relpath"] for r in maintenance.scrub_targets(catalog, [1], 4.5, 10)] == [b"b", b"c"]
    assert maintenance.scrub_targets(catalog, [2], 100.0, 10) == []
    assert maintenance.scrub_state(catalog) == {"files": 3, "verified": 2, "oldest_verified": 4.0}


def test_findings_are_stored_with_their_run(catalog: Connection) -> None:
    found = [Finding("ghost", b"/srv/r/x", "gone"), Finding("orphan", b"/srv/r/\xff", "x" * 3000)]
    maintenance.store_findings(catalog, 7, found)
    back = maintenance.load_findings(catalog, 7)
    assert [(f.kind, f.path, len(f.detail)) for f in back] == [
        ("ghost", b"/srv/r/x", 4),
        ("orphan", b"/srv/r/\xff", 2000),
    ]
    assert maintenance.load_findings(catalog, 8) == []


def test_rows_marked_missing_are_the_ghosts_and_keep_their_time(catalog: Connection) -> None:
    register(catalog, {b"a": "1" * 64, b"d/b": "2" * 64, b"d/c": "3" * 64, b"e": "4" * 64, b"f": "5" * 64})
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"d"), subtree=True)], 5.0)
    # mv f a: a's old row goes missing, but its path holds a live row: history, not a ghost.
    apply_ops(catalog, [MovedFile(FileRef(1, "r", b"a"), FileStat(15, 1005, 1000, 5, 7), 5, "5" * 64)], 6.0)
    assert [r[0] for r in catalog.exec_driver_sql("SELECT status FROM files WHERE relpath = x'61'")] == [
        "missing",
        "present",
    ]
    assert maintenance.missing_rows(catalog, 1, None) == [(b"d/b", 5.0), (b"d/c", 5.0)]
    assert maintenance.missing_rows(catalog, 1, b"d/c") == [(b"d/c", 5.0)]
    assert maintenance.missing_rows(catalog, 1, b"e") == []
    assert maintenance.missing_rows(catalog, 2, None) == []
    files.forget(catalog, 1, b"d/b", undo=False, dry_run=False)
    assert maintenance.missing_rows(catalog, 1, b"d") == [(b"d/c", 5.0)], "forgotten rows are settled"
    # Stored with the sweep and read back, the ghost keeps its time and its fix.
    maintenance.store_findings(catalog, 9, [Finding("ghost", b"/srv/r/d/c", "missing since …", 5.0)])
    (back,) = maintenance.load_findings(catalog, 9)
    assert back.missing_since == 5.0 and back.suggestion == "restore the file, or importctl forget /srv/r/d/c"


def test_a_ghost_probes_the_live_path_index_once(catalog: Connection) -> None:
    """One seek per missing row: with the root's index instead, a sweep would read the whole root
    once per ghost."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: object, cursor: object, statement: str, params: Any, *_: object) -> None:
        seen.append((statement, params))

    event.listen(catalog.engine, "before_cursor_execute", capture)
    try:
        maintenance.missing_rows(catalog, 1, None)
    finally:
        event.remove(catalog.engine, "before_cursor_execute", capture)
    statement, params = seen[-1]
    plan = str(catalog.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).fetchall())
    assert "SEARCH live USING INDEX uq_files_live_path" in plan
