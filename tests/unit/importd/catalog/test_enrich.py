"""Enrichment's catalog side on a real catalog: a match fills gaps (a differing value is a
conflict), keeps what each attribute held before, and `unapply` restores exactly that; the
entities to ask and the pending list."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from importd.catalog.enrich import Settlement, entities_to_ask, pending_rows, settle, state_of, unapply
from importd.catalog.entities import _Batch
from importd.catalog.tables import attribute_sources, conflicts, entities
from importd.entities import AttributeSet

KINDS: dict[str, Any] = {"film": "movie"}


def seed(conn: Connection) -> int:
    batch = _Batch(conn, 1.0, {})
    film = batch.ensure("film", "name:amélie (2001)", "Amélie (2001)", 0, "seed")
    batch.merge(film, {"year": 2001, "title": "Le Fabuleux Destin"}, 0, "Films/Amélie (2001)", "folder_rule")
    batch.ensure("film", "name:playtime", "Playtime", 0, "seed")
    batch.ensure("character", "name:zoé", "Zoé", 0, "seed")
    batch.flush_entities()
    return film.id


def state(conn: Connection, entity_id: int) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    attrs = conn.execute(select(entities.c.attributes).where(entities.c.id == entity_id)).scalar_one()
    sources = conn.execute(
        select(attribute_sources)
        .where(attribute_sources.c.entity_id == entity_id)
        .order_by(attribute_sources.c.attribute)
    ).all()
    return json.loads(attrs), [tuple(s) for s in sources]


def match(entity_id: int, **values: Any) -> Settlement:
    return Settlement(entity_id, "matched", "tmdb", "movie", provider_id=194, confidence=1.0, values=values)


def test_a_match_fills_gaps_and_unapply_restores_exactly(catalog: Connection) -> None:
    eid = seed(catalog)
    before = state(catalog, eid)
    done = settle(catalog, match(eid, title="Amélie", year=2001, plot="A waitress.", tmdb_id=194), 5.0, None)
    assert done.applied == ["plot", "tmdb_id"] and done.conflicts == 1
    assert {e.attribute for e in done.events if isinstance(e, AttributeSet)} == {"plot", "tmdb_id"}
    attrs, sources = state(catalog, eid)
    assert attrs["title"] == "Le Fabuleux Destin" and attrs["plot"] == "A waitress."
    assert ("plot", "provider", "tmdb movie/194") in {(s[1], s[2], s[3]) for s in sources}
    assert state_of(catalog, eid) == "matched"
    undone = unapply(catalog, entity_id=eid, run_id=None, kinds=KINDS, now=6.0)
    assert sorted(r.attribute for r in undone.restored if r.restored) == ["plot", "tmdb_id"]
    assert undone.conflicts_withdrawn == 1
    assert {(e.attribute, e.value) for e in undone.events if isinstance(e, AttributeSet)} == {
        ("plot", None),
        ("tmdb_id", None),
    }
    assert state(catalog, eid) == before
    assert catalog.execute(select(conflicts.c.status)).scalars().all() == ["kept"]
    assert state_of(catalog, eid) == "unapplied"
    assert unapply(catalog, entity_id=eid, run_id=None, kinds=KINDS, now=7.0).restored == []


def test_a_value_changed_since_is_left(catalog: Connection) -> None:
    eid = seed(catalog)
    settle(catalog, match(eid, plot="A waitress."), 5.0, None)
    batch = _Batch(catalog, 6.0, {})
    entity = batch.by_id(eid)
    assert entity is not None
    entity.attributes["plot"] = "Rewritten by hand."
    entity.dirty = True
    batch.flush_entities()
    undone = unapply(catalog, entity_id=eid, run_id=None, kinds=KINDS, now=7.0)
    (left,) = undone.restored
    assert not left.restored and "changed since" in left.why
    assert state(catalog, eid)[0]["plot"] == "Rewritten by hand."


def test_entities_to_ask_pending_and_skipped(catalog: Connection) -> None:
    eid = seed(catalog)
    names = [e.name for e in entities_to_ask(catalog, ["film"], "name")]
    assert names == ["Amélie (2001)", "Playtime"]
    candidates = [{"provider_id": 1, "title": "A", "confidence": 0.9}, {"provider_id": 2, "title": "B"}]
    settle(
        catalog, Settlement(eid, "pending", "tmdb", "movie", candidates=candidates, reason="alike"), 5.0, None
    )
    (pending,) = pending_rows(catalog)
    assert pending.name == "Amélie (2001)" and [c["provider_id"] for c in pending.candidates] == [1, 2]
    (row,) = [e for e in entities_to_ask(catalog, ["film"], "newest") if e.id == eid]
    assert row.state == "pending" and row.fingerprint
    skip = Settlement(eid, "skipped", "tmdb", "movie", reason="HTTP 500 after 3 tries", notes=("try 2",))
    settle(catalog, skip, 6.0, None)
    settle(catalog, skip, 7.0, None)
    assert pending_rows(catalog) == []
    assert state_of(catalog, eid) == "skipped"
