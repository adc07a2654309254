"""Entity reads and the conflict transaction, on a real catalog mapped by `apply_mapping` (the
mapping itself against the live gap report: tests/unit/importd/pipeline/test_mapper.py)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from importd.catalog.entities import (
    MappedFile,
    ResolveError,
    apply_mapping,
    conflict_rows,
    links_of_files,
    live_files_of_root,
    load_states,
    resolve_conflict_tx,
    unmatched_by_folder,
    unmatched_rows,
)
from importd.catalog.files import forget
from importd.catalog.tables import entities, run_log
from importd.catalog.writer import FileChange, apply_ops
from importd.entities import FileLinked, load_rule_set
from importd.items import FileRef, Vanished
from importd.paths import wire
from tests.unit.importd.catalog.conftest import read, register

RULES = load_rule_set("characters")


def _map(conn: Connection, contents: dict[bytes, bytes], now: float) -> None:
    digests = {rel: f"{abs(hash(data)):064x}" for rel, data in contents.items()}
    register(conn, digests, now=now)
    changes = live_files_of_root(conn, 1)
    items = []
    for change in changes:
        mapping = RULES.map_path(wire(change.relpath))
        items.append(MappedFile(change, mapping, contents.get(change.relpath), None))
    apply_mapping(conn, items, now, {1: None})


def test_links_unmatched_and_states(catalog: Connection) -> None:
    _map(catalog, {b"Alice/intro.mp4": b"i", b"Alice/source.jpg": b"s", b"README.txt": b"?"}, 5.0)
    by_path = {c.relpath: c.file_id for c in live_files_of_root(catalog, 1)}
    links = read(catalog, links_of_files, list(by_path.values()))
    assert links[by_path[b"Alice/intro.mp4"]]["name"] == "Alice"
    assert by_path[b"README.txt"] not in links, "an unmatched file has no entity"
    assert read(catalog, unmatched_rows, None, 10) == ([(1, b"README.txt")], 1)
    assert read(catalog, unmatched_rows, 2, 10) == ([], 0)
    assert read(catalog, unmatched_by_folder, 1) == [(1, b"README.txt")]
    (state,) = load_states(catalog)
    assert (state.type, state.name) == ("character", "Alice") and len(state.links) == 2


def test_a_conflict_is_kept_or_taken_once(catalog: Connection) -> None:
    _map(catalog, {b"Bob/metadata.json": json.dumps({"age": 20}).encode()}, 5.0)
    _map(catalog, {b"Bob/metadata.json": json.dumps({"age": 21}).encode()}, 6.0)
    (conflict,) = read(catalog, conflict_rows, "open")
    assert (conflict["entity_name"], conflict["attribute"], conflict["proposed"]) == ("Bob", "age", "21")
    done = resolve_conflict_tx(catalog, conflict["id"], "take", 7.0)
    assert (done.attribute, done.value, done.applied) == ("age", 21, True)
    (attrs,) = catalog.execute(select(entities.c.attributes)).one()
    assert json.loads(attrs)["age"] == 21
    assert read(catalog, conflict_rows, "open") == [] and len(read(catalog, conflict_rows, "taken")) == 1
    last = catalog.execute(select(run_log.c.detail).order_by(run_log.c.id.desc()).limit(1)).scalar_one()
    assert last.startswith("age set to the value from")
    with pytest.raises(ResolveError) as again:
        resolve_conflict_tx(catalog, conflict["id"], "keep", 8.0)
    assert again.value.code == "invalid"
    with pytest.raises(ResolveError) as missing:
        resolve_conflict_tx(catalog, 999, "keep", 8.0)
    assert missing.value.code == "not_found"


def test_vanished_files_are_not_linked_again(catalog: Connection) -> None:
    _map(catalog, {b"Carol/intro.mp4": b"i"}, 5.0)
    (change,) = live_files_of_root(catalog, 1)
    gone = FileChange(change.file_id, 1, change.relpath, "vanished", change.blake3)
    outcome = apply_mapping(catalog, [MappedFile(gone, None)], 6.0, {})
    assert [type(e).__name__ for e in outcome.events] == ["FileMissing"]


def test_a_forgotten_file_is_not_there_for_the_gap_report_and_undo_links_it_again(
    catalog: Connection,
) -> None:
    _map(catalog, {b"Dan/intro.mp4": b"i", b"Dan/source.jpg": b"s"}, 5.0)
    by_path = {c.relpath: c for c in live_files_of_root(catalog, 1)}
    intro = by_path[b"Dan/intro.mp4"]
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"Dan/intro.mp4"))], 6.0)
    (state,) = load_states(catalog)
    assert state.links[intro.file_id].present is False, "missing: linked, not present"

    forget(catalog, 1, b"Dan/intro.mp4", undo=False, dry_run=False)
    gone = FileChange(intro.file_id, 1, intro.relpath, "forgotten")
    outcome = apply_mapping(catalog, [MappedFile(gone, None)], 7.0, {})
    assert [type(e).__name__ for e in outcome.events] == ["FileUnlinked"]
    (state,) = load_states(catalog)
    assert intro.file_id not in state.links and len(state.links) == 1, "the recomputation agrees"
    assert read(catalog, links_of_files, [intro.file_id]), "the link row stays, for the undo"

    forget(catalog, 1, b"Dan/intro.mp4", undo=True, dry_run=False)
    back = FileChange(intro.file_id, 1, intro.relpath, "unforgotten")
    (event,) = apply_mapping(catalog, [MappedFile(back, None)], 8.0, {}).events
    assert isinstance(event, FileLinked)
    assert (event.entity.name, event.link.role, event.link.present) == ("Dan", "scene_video", False)
    (state,) = load_states(catalog)
    assert state.links[intro.file_id] == event.link
