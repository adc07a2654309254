"""Entity reads and the conflict transaction, on a real catalog mapped by `apply_mapping` (the
mapping itself against the live gap report: tests/unit/importd/pipeline/test_mapper.py)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from importd.catalog.entities import (
    MappedFile,
    ResolveError,
    apply_mapping,
    conflict_rows,
    described_file,
    links_of_files,
    live_files_of_root,
    load_states,
    resolve_conflict_tx,
    unmatched_by_folder,
    unmatched_rows,
)
from importd.catalog.files import forget
from importd.catalog.tables import attribute_sources, entities, run_log
from importd.catalog.tags import tag_counts, tags_of_files
from importd.catalog.writer import FileChange, apply_ops
from importd.entities import EntityRemoved, EntityRenamed, FileLinked, load_rule_set
from importd.items import FileRef, FileStat, MovedFile, Vanished
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
    done = resolve_conflict_tx(catalog, conflict["id"], "take_new", 7.0)
    assert (done.attribute, done.value, done.status) == ("age", 21, "taken")
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
    assert [type(e).__name__ for e in outcome.events] == ["FileForgotten"]
    (state,) = load_states(catalog)
    assert state.links[intro.file_id].forgotten, "the recomputation agrees"
    assert [link.forgotten for link in state.links.values()].count(False) == 1
    assert read(catalog, links_of_files, [intro.file_id]), "the link row stays, for the undo"

    forget(catalog, 1, b"Dan/intro.mp4", undo=True, dry_run=False)
    back = FileChange(intro.file_id, 1, intro.relpath, "unforgotten")
    (event,) = apply_mapping(catalog, [MappedFile(back, None)], 8.0, {}).events
    assert isinstance(event, FileLinked)
    assert (event.entity.name, event.link.role, event.link.present) == ("Dan", "scene_video", False)
    (state,) = load_states(catalog)
    assert state.links[intro.file_id] == event.link


def _move(conn: Connection, moves: dict[bytes, bytes], now: float) -> list[MappedFile]:
    """Rename rows (old relpath -> new relpath) as identify does, and map the changes."""
    rows = {c.relpath: c for c in live_files_of_root(conn, 1)}
    ops = [
        MovedFile(
            FileRef(1, "r", new), FileStat(99, i, 1000, 1, 7), rows[old].file_id, rows[old].blake3 or ""
        )
        for i, (old, new) in enumerate(moves.items())
    ]
    apply_ops(conn, ops, now)
    return [
        MappedFile(
            FileChange(rows[old].file_id, 1, new, "moved", rows[old].blake3), RULES.map_path(wire(new))
        )
        for old, new in moves.items()
    ]


def _entity(conn: Connection, name: str) -> dict[str, object]:
    row = conn.execute(select(entities).where(entities.c.name == name)).one()
    return dict(row._mapping)


BOB = {b"Bob/intro.mp4": b"i", b"Bob/source.jpg": b"s", b"Bob/metadata.json": b'{"age": 30}'}


def test_an_entity_whose_every_file_moves_to_a_free_key_is_renamed(catalog: Connection) -> None:
    _map(catalog, BOB, 5.0)
    bob = _entity(catalog, "Bob")
    items = _move(catalog, {rel: b"Bobby/" + rel.split(b"/")[1] for rel in BOB}, 6.0)
    outcome = apply_mapping(catalog, items, 6.0, {1: None}, frozenset({int(str(bob["id"]))}))
    assert isinstance(outcome.events[0], EntityRenamed)
    assert (outcome.events[0].old_key, outcome.events[0].entity.name) == ("name:bob", "Bobby")
    bobby = _entity(catalog, "Bobby")
    assert bobby["id"] == bob["id"] and bobby["key"] == "name:bobby"
    assert json.loads(str(bobby["attributes"])) == {"age": 30}, "its attributes came along"
    assert catalog.execute(select(func.count()).select_from(entities)).scalar_one() == 1
    logged = catalog.execute(
        select(run_log.c.action, run_log.c.detail).where(run_log.c.action == "renamed")
    ).all()
    assert [(a, d) for a, d in logged] == [("renamed", "Bob → Bobby: its files moved to Bobby")]
    (state,) = load_states(catalog)
    assert (state.key, state.name, len(state.links)) == ("name:bobby", "Bobby", 3)


def test_a_partial_move_leaves_the_entity_and_makes_a_new_one(catalog: Connection) -> None:
    _map(catalog, BOB, 5.0)
    items = _move(catalog, {b"Bob/intro.mp4": b"Bobby/intro.mp4"}, 6.0)
    outcome = apply_mapping(catalog, items, 6.0, {1: None}, frozenset())
    assert not any(isinstance(e, EntityRenamed) for e in outcome.events)
    assert {s.name for s in load_states(catalog)} == {"Bob", "Bobby"}


def test_moving_onto_another_entity_proposes_a_merge_then_merges(catalog: Connection) -> None:
    _map(
        catalog, {**BOB, b"Alice/intro.mp4": b"a", b"Alice/metadata.json": b'{"notes": "n", "age": 31}'}, 5.0
    )
    bob, alice = _entity(catalog, "Bob"), _entity(catalog, "Alice")
    moves = {b"Bob/source.jpg": b"Alice/source.jpg", b"Bob/metadata.json": b"Alice/bob.json.old"}
    moves[b"Bob/intro.mp4"] = b"Alice/dance.mp4"
    items = _move(catalog, moves, 6.0)
    outcome = apply_mapping(catalog, items, 6.0, {1: None}, frozenset({int(str(bob["id"]))}))
    assert outcome.conflicts == 1
    (proposal,) = read(catalog, conflict_rows, "open")
    assert (proposal["kind"], proposal["entity_name"], proposal["other_name"]) == ("merge", "Bob", "Alice")
    states = {s.name: s for s in load_states(catalog)}
    assert len(states["Bob"].links) == 2, "while the proposal is open, the moved files stay with Bob"
    with pytest.raises(ResolveError, match="--merge or --keep-apart"):
        resolve_conflict_tx(catalog, proposal["id"], "keep", 7.0)

    done = resolve_conflict_tx(catalog, proposal["id"], "merge", 7.0)
    assert (done.status, done.value) == ("merged", "Alice")
    assert isinstance(done.events[0], EntityRemoved)
    states = {s.name: s for s in load_states(catalog)}
    assert set(states) == {"Alice"}, "a merged entity leaves the report; its row stays"
    assert len(states["Alice"].links) == 4, "bob.json.old matches no rule"
    assert _entity(catalog, "Bob")["merged_into"] == alice["id"]
    (age,) = read(catalog, conflict_rows, "open")
    assert (age["attribute"], age["current"], age["proposed"]) == ("age", "31", "30"), "never silently"
    with pytest.raises(ResolveError, match="already resolved"):
        resolve_conflict_tx(catalog, proposal["id"], "merge", 8.0)


def test_kept_apart_the_moved_files_stay_with_their_entity(catalog: Connection) -> None:
    _map(catalog, {**BOB, b"Alice/intro.mp4": b"a"}, 5.0)
    bob = _entity(catalog, "Bob")
    items = _move(catalog, {rel: b"Alice/" + rel.split(b"/")[1] for rel in BOB if b"intro" not in rel}, 6.0)
    items += _move(catalog, {b"Bob/intro.mp4": b"Alice/dance.mp4"}, 6.0)
    apply_mapping(catalog, items, 6.0, {1: None}, frozenset({int(str(bob["id"]))}))
    (proposal,) = read(catalog, conflict_rows, "open")
    done = resolve_conflict_tx(catalog, proposal["id"], "keep_apart", 7.0)
    assert (done.status, done.events) == ("kept_apart", ())
    # Mapped again (a rule reload), the files still belong to Bob.
    again = [MappedFile(c, RULES.map_path(wire(c.relpath))) for c in live_files_of_root(catalog, 1)]
    apply_mapping(catalog, again, 8.0, {1: None})
    states = {s.name: s for s in load_states(catalog)}
    assert (len(states["Bob"].links), len(states["Alice"].links)) == (3, 1)


def test_a_tags_sidecar_tags_the_video_it_names_and_its_entity(catalog: Connection) -> None:
    tags_json = b'{"tags": ["night"], "entity_tags": [{"name": "Lead", "color": "#ff0000"}]}'
    _map(
        catalog,
        {
            b"Ada/intro.mp4": b"i",
            b"Ada/intro.tags.json": tags_json,
            b"Ada/intro.json": b'{"height": 170, "tags": ["4k"]}',
            b"Ada/dance.tags.json": b'["lonely"]',  # no dance video (yet): tags nothing
            b"Ada/.artifacts/scenes.json": b'[{"type": "intro", "start": 0, "end": 12}]',
        },
        5.0,
    )
    by_path = {c.relpath: c.file_id for c in live_files_of_root(catalog, 1)}
    assert described_file(catalog, 1, b"Ada/intro.tags.json") == by_path[b"Ada/intro.mp4"]
    assert described_file(catalog, 1, b"Ada/intro.mp4.tags.json") == by_path[b"Ada/intro.mp4"]
    assert described_file(catalog, 1, b"Ada/dance.tags.json") is None
    assert described_file(catalog, 1, b"Ada/intro.txt") is None
    assert [
        t.name for t in tags_of_files(catalog, [by_path[b"Ada/intro.mp4"]])[by_path[b"Ada/intro.mp4"]]
    ] == [
        "4k",
        "night",
    ]
    assert [(c.tag.name, c.tag.color, c.files, c.entities) for c in tag_counts(catalog)] == [
        ("4k", None, 1, 0),
        ("Lead", "#ff0000", 0, 1),
        ("night", None, 1, 0),
    ]
    ada = _entity(catalog, "Ada")
    assert json.loads(str(ada["attributes"])) == {
        "height": 170,
        "scenes": [{"type": "intro", "start": 0.0, "end": 12.0}],
    }
    kinds = dict(catalog.execute(select(attribute_sources.c.attribute, attribute_sources.c.kind)).all())
    assert kinds == {"height": "sidecar", "scenes": "sidecar"}


def test_a_broken_sidecar_is_a_failed_line_and_the_rest_of_the_batch_maps(catalog: Connection) -> None:
    _map(
        catalog,
        {b"Ada/intro.mp4": b"i", b"Ada/intro.tags.json": b"[1", b"Ada/metadata.json": b'{"a": 1}'},
        5.0,
    )
    failed = catalog.execute(select(run_log.c.detail).where(run_log.c.action == "failed")).scalars().all()
    assert [line.split(": ", 2)[:2] for line in failed] == [["Ada/intro.tags.json", "invalid JSON"]]
    assert json.loads(str(_entity(catalog, "Ada")["attributes"])) == {"a": 1}


def test_a_sidecar_describes_the_file_its_stem_names_not_one_whose_name_goes_on(catalog: Connection) -> None:
    _map(catalog, {b"Ada/intro.mp4": b"i", b"Ada/intro 2.mp4": b"j", b"Ada/intro-cut.mp4": b"k"}, 5.0)
    by_path = {c.relpath: c.file_id for c in live_files_of_root(catalog, 1)}
    assert described_file(catalog, 1, b"Ada/intro.tags.json") == by_path[b"Ada/intro.mp4"]
    assert described_file(catalog, 1, b"Ada/intro 2.json") == by_path[b"Ada/intro 2.mp4"]
    assert described_file(catalog, 1, b"Ada/intro-cut.mp4.tags.json") == by_path[b"Ada/intro-cut.mp4"]
    assert described_file(catalog, 1, b"Ada/intro-.json") is None


def test_a_file_mapped_twice_in_one_batch_and_again_later_keeps_its_last_link(catalog: Connection) -> None:
    register(catalog, {b"Alice/intro.mp4": "1" * 64, b"notes.txt": "2" * 64}, now=1.0)
    changes = {c.relpath: c for c in live_files_of_root(catalog, 1)}
    video, notes = changes[b"Alice/intro.mp4"], changes[b"notes.txt"]
    scene = RULES.map_path("Alice/intro.mp4")
    assert scene is not None
    # The same file twice in one batch: first unmapped, then mapped; the last word wins.
    apply_mapping(
        catalog, [MappedFile(video, None, None, None), MappedFile(video, scene, None, None)], 2.0, {1: None}
    )
    apply_mapping(catalog, [MappedFile(notes, None, None, None)], 2.0, {1: None})
    rows = {
        r.file_id: r
        for r in catalog.exec_driver_sql(
            "SELECT file_id, entity_id, role, rule_index, mapped_at FROM entity_files"
        )
    }
    assert rows[video.file_id].role == scene.role and rows[video.file_id].entity_id is not None
    assert rows[notes.file_id].entity_id is None and rows[notes.file_id].role is None
    # Mapped again later (the rules changed): the row is updated in place, not added.
    apply_mapping(catalog, [MappedFile(video, None, None, None)], 3.0, {1: None})
    rows = {
        r.file_id: r
        for r in catalog.exec_driver_sql("SELECT file_id, entity_id, role, mapped_at FROM entity_files")
    }
    assert len(rows) == 2
    assert (rows[video.file_id].entity_id, rows[video.file_id].role, rows[video.file_id].mapped_at) == (
        None,
        None,
        3.0,
    )
