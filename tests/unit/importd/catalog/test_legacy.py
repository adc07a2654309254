"""A legacy migration's statements on a real catalog: what the catalog knows of old rows' files,
linking values and tags (idempotent), the backlog's rows and counts, and its paused state."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from importd.catalog import legacy
from importd.catalog.runs import start_run
from importd.catalog.tags import tags_of_files
from importd.imports.legacy import Known
from tests.unit.importd.catalog.conftest import register

A, B = "a" * 64, "b" * 64


def test_files_are_known_by_hash_and_by_live_path(catalog: Connection) -> None:
    register(catalog, {b"x/a.jpg": A, b"x/copy.jpg": A, b"b.jpg": B, b"broken.jpg": ""})
    assert legacy.known_by_hash(catalog, [A, B, "c" * 64]) == {
        A: [Known(1, A), Known(2, A)],
        B: [Known(3, B)],
    }
    at = legacy.known_at_paths(catalog, [(1, b"b.jpg"), (1, b"broken.jpg"), (1, b"none.jpg")])
    assert at == {(1, b"b.jpg"): Known(3, B), (1, b"broken.jpg"): Known(4, None)}


def test_linking_keeps_values_per_file_and_tags_once(catalog: Connection) -> None:
    register(catalog, {b"a.jpg": A})
    run = start_run(catalog, "h", "legacy", "manual", None, "/old.db", 1.0)
    record = {
        "values": {"name": "Portrait", "rating": 5},
        "entity_values": {"rating": 5},
        "tags": [["Red", "#f00"], ["blue", None]],
    }
    link = legacy.Link((1,), "7", record)
    assert legacy.link(catalog, [link], "legacy:old.db", run, 2.0) == [], "no entity: no gap event"
    legacy.link(catalog, [link], "legacy:old.db", run, 3.0)
    values = legacy.attributes_at(catalog, "r", b"a.jpg")
    assert {k: v[0] for k, v in values.items()} == {"name": "Portrait", "rating": 5}
    assert values["rating"][1:] == ("legacy", "legacy:old.db row 7", 3.0)
    assert [(t.name, t.color) for t in tags_of_files(catalog, [1])[1]] == [("blue", None), ("Red", "#f00")]
    assert legacy.attributes_at(catalog, "r", b"none.jpg") == {}


def test_the_backlog_counts_and_its_paused_state(catalog: Connection) -> None:
    run = start_run(catalog, "h", "legacy", "manual", None, "/old.db", 1.0)
    legacy.add_backlog(catalog, [(1, b"n1", "1", {"values": {}}), (1, b"n2", "2", {})], run, 1.0)
    legacy.add_backlog(catalog, [(1, b"gone", "3", {})], run, 1.0, state="missing")
    assert legacy.backlog_counts(catalog, "h") == {"pending": 2, "done": 0, "missing": 1, "failed": 0}
    first, second = legacy.pending(catalog, "h", 10)
    assert (first.relpath, first.legacy_id, first.record) == (b"n1", "1", {"values": {}})
    assert legacy.pending(catalog, "h", 10, after=first.id) == [second]
    legacy.settle(catalog, [(first.id, "done", None), (second.id, "failed", "denied")], 2.0)
    assert legacy.backlog_counts(catalog, "h") == {"pending": 0, "done": 1, "missing": 1, "failed": 1}
    assert legacy.is_paused(catalog) is False
    legacy.set_paused(catalog, True, 3.0)
    assert legacy.is_paused(catalog) is True
    legacy.set_paused(catalog, False, 4.0)
    assert legacy.is_paused(catalog) is False
