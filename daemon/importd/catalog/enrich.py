"""Enrichment's catalog side: which entities to ask the provider about, what each answer does
to an entity (one short transaction of the single writer per entity), the pending list, and
`unapply`.

A match's values are merged like any other source's (`_Batch.merge`, kind `provider`, the
provider and its id as the source, the run as `run_id`): they fill empty attributes, and a
differing value becomes an open conflict, never an overwrite. Each value applied is kept in
`enrich_applied` with what the entity held before and where that came from, so `unapply`
restores exactly that. The gap events come back to the caller for the live report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, select, update
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.catalog.entities import _Batch, _Entity, _source_upsert, dumps, safe_text
from importd.catalog.tables import attribute_sources, conflicts, entities, run_log
from importd.enrich.provider import Kind, fingerprint, query_of
from importd.entities import AttributeSet, EntityRef, GapEvent

ID_ATTRIBUTE = "tmdb_id"  # the attribute a provider id lives in (as NFO files spell it)
# The run's lines belong to no root: `_Batch` logs them under this pseudo root.
_NO_ROOT = 0


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


enrichments = _table("enrichments")
enrich_applied = _table("enrich_applied")


@dataclass(frozen=True, slots=True)
class EntityToAsk:
    id: int
    type: str
    key: str
    name: str
    attributes: dict[str, Any]
    state: str | None  # its enrichment state, None: never asked
    fingerprint: str | None


_ORDER = {
    "newest": (entities.c.first_seen.desc(), entities.c.id.desc()),
    "oldest": (entities.c.first_seen, entities.c.id),
    "name": (entities.c.name, entities.c.id),
}


def entities_to_ask(
    conn: Connection, types: Sequence[str], order: str, entity_ids: Sequence[int] | None = None
) -> list[EntityToAsk]:
    """Live entities of these types with where they stand, in `order` (the caller leaves out
    those whose query is unchanged since they were settled)."""
    stmt = (
        select(
            entities.c.id,
            entities.c.type,
            entities.c.key,
            entities.c.name,
            entities.c.attributes,
            enrichments.c.state,
            enrichments.c.fingerprint,
        )
        .outerjoin(enrichments, enrichments.c.entity_id == entities.c.id)
        .where(entities.c.merged_into.is_(None), entities.c.type.in_(list(types)))
        .order_by(*_ORDER[order])
    )
    if entity_ids is not None:
        stmt = stmt.where(entities.c.id.in_(list(entity_ids)))
    return [
        EntityToAsk(eid, etype, key, name, json.loads(attrs), state, fp)
        for eid, etype, key, name, attrs, state, fp in conn.execute(stmt)
    ]


@dataclass(frozen=True)
class Settlement:
    """What asking the provider came to for one entity."""

    entity_id: int
    state: str  # matched | pending | none | skipped
    provider: str
    kind: Kind
    provider_id: int | None = None
    confidence: float | None = None
    candidates: Sequence[Mapping[str, Any]] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    notes: Sequence[str] = ()  # failed tries, for the run's log
    how: str = "matched"  # matched | picked | by id (how a match was settled)


@dataclass
class Settled:
    name: str | None  # None: the entity is gone (merged meanwhile)
    applied: list[str] = field(default_factory=list)
    conflicts: int = 0
    events: list[GapEvent] = field(default_factory=list)


def match_source(provider: str, kind: str, provider_id: int) -> str:
    return f"{provider} {kind}/{provider_id}"


def settle(conn: Connection, s: Settlement, now: float, run_id: int | None) -> Settled:
    """Record one entity's outcome (applying a match's values) in one transaction."""
    batch = _Batch(conn, now, {_NO_ROOT: run_id})
    entity = batch.by_id(s.entity_id)
    if entity is None:
        return Settled(None)
    out = Settled(entity.name)
    for note in s.notes:
        batch._log(_NO_ROOT, "retried", entity, note)
    attempts = 0
    if s.state == "matched":
        assert s.provider_id is not None
        out.applied, out.conflicts = _apply(batch, entity, s, now, run_id)
        shown = ", ".join(out.applied) or "nothing new"
        confidence = f", confidence {s.confidence:.3f}" if s.confidence is not None else ""
        batch._log(
            _NO_ROOT,
            "enriched",
            entity,
            f"{s.how} {match_source(s.provider, s.kind, s.provider_id)}{confidence}: applied {shown}"
            + (f"; {out.conflicts} conflict(s)" if out.conflicts else ""),
        )
    elif s.state == "pending":
        batch._log(
            _NO_ROOT,
            "pending",
            entity,
            f"{s.reason}: {len(s.candidates)} candidate(s); importctl pending, importctl validate",
        )
    elif s.state == "none":
        batch._log(_NO_ROOT, "no match", entity, s.reason)
    else:
        previous = conn.execute(
            select(enrichments.c.attempts).where(enrichments.c.entity_id == entity.id)
        ).scalar()
        attempts = int(previous or 0) + 1
        batch._log(_NO_ROOT, "skipped", entity, f"{s.reason}; left for the next run")
    batch.flush_entities()
    out.events = batch.out.events
    _upsert_state(
        conn,
        entity,
        state=s.state,
        provider=s.provider,
        kind=s.kind,
        provider_id=s.provider_id,
        confidence=s.confidence,
        candidates=list(s.candidates),
        reason=s.reason,
        attempts=attempts,
        run_id=run_id,
        now=now,
    )
    return out


def _apply(
    batch: _Batch, entity: _Entity, s: Settlement, now: float, run_id: int | None
) -> tuple[list[str], int]:
    assert s.provider_id is not None
    conn = batch.conn
    before = dict(entity.attributes)
    conflicts_before = batch.out.conflicts
    source = match_source(s.provider, s.kind, s.provider_id)
    batch.merge(entity, s.values, _NO_ROOT, source, "provider")
    changed = sorted(a for a in entity.attributes if before.get(a) != entity.attributes[a] or a not in before)
    if changed:
        sources = {
            row.attribute: {"kind": row.kind, "source": row.source, "run_id": row.run_id, "at": row.at}
            for row in conn.execute(
                select(attribute_sources).where(
                    attribute_sources.c.entity_id == entity.id, attribute_sources.c.attribute.in_(changed)
                )
            )
        }
        conn.execute(
            enrich_applied.insert(),
            [
                {
                    "entity_id": entity.id,
                    "run_id": run_id,
                    "provider": s.provider,
                    "provider_id": s.provider_id,
                    "attribute": a,
                    "before": dumps(before[a]) if a in before else None,
                    "before_source": dumps(sources[a]) if a in sources else None,
                    "after": dumps(entity.attributes[a]),
                    "at": now,
                }
                for a in changed
            ],
        )
    return changed, batch.out.conflicts - conflicts_before


def _upsert_state(
    conn: Connection,
    entity: _Entity,
    *,
    state: str,
    provider: str,
    kind: Kind,
    provider_id: int | None,
    confidence: float | None,
    candidates: list[Mapping[str, Any]],
    reason: str,
    attempts: int,
    run_id: int | None,
    now: float,
) -> None:
    """The entity's state, with the query it would ask with now (after what was applied)."""
    values = {
        "state": state,
        "provider": provider,
        "kind": kind,
        "provider_id": provider_id,
        "confidence": confidence,
        "candidates": dumps(candidates),
        "reason": safe_text(reason)[:2000] or None,
        "fingerprint": fingerprint(query_of(kind, entity.name, entity.attributes, ID_ATTRIBUTE)),
        "attempts": attempts,
        "run_id": run_id,
        "at": now,
    }
    done = conn.execute(update(enrichments).where(enrichments.c.entity_id == entity.id).values(**values))
    if not done.rowcount:
        conn.execute(enrichments.insert().values(entity_id=entity.id, **values))


@dataclass(frozen=True, slots=True)
class PendingRow:
    entity_id: int
    type: str
    name: str
    kind: str
    reason: str | None
    candidates: list[dict[str, Any]]
    at: float


def pending_rows(conn: Connection, entity_id: int | None = None) -> list[PendingRow]:
    stmt = (
        select(
            entities.c.id,
            entities.c.type,
            entities.c.name,
            enrichments.c.kind,
            enrichments.c.reason,
            enrichments.c.candidates,
            enrichments.c.at,
        )
        .join(enrichments, enrichments.c.entity_id == entities.c.id)
        .where(enrichments.c.state == "pending", entities.c.merged_into.is_(None))
        .order_by(enrichments.c.at, entities.c.id)
    )
    if entity_id is not None:
        stmt = stmt.where(entities.c.id == entity_id)
    return [
        PendingRow(eid, etype, name, kind, reason, json.loads(cands), at)
        for eid, etype, name, kind, reason, cands, at in conn.execute(stmt)
    ]


def state_of(conn: Connection, entity_id: int) -> str | None:
    return conn.execute(select(enrichments.c.state).where(enrichments.c.entity_id == entity_id)).scalar()


@dataclass(frozen=True, slots=True)
class Restored:
    entity: str
    attribute: str
    value: Any  # the value restored (None: the attribute is gone again)
    restored: bool  # False: left as it is (`why`)
    why: str = ""


@dataclass
class Unapplied:
    restored: list[Restored] = field(default_factory=list)
    conflicts_withdrawn: int = 0
    events: list[GapEvent] = field(default_factory=list)


def unapply(
    conn: Connection, *, entity_id: int | None, run_id: int | None, kinds: Mapping[str, Kind], now: float
) -> Unapplied:
    """Take back every value a match (of this entity, or of this run) applied: each attribute gets
    back the exact value it held before and that value's source, unless it changed since (then
    it is left, and said so). Conflicts the match opened are withdrawn (kept)."""
    stmt = (
        select(enrich_applied).where(enrich_applied.c.undone.is_(None)).order_by(enrich_applied.c.id.desc())
    )
    if entity_id is not None:
        stmt = stmt.where(enrich_applied.c.entity_id == entity_id)
    if run_id is not None:
        stmt = stmt.where(enrich_applied.c.run_id == run_id)
    rows = conn.execute(stmt).all()
    out = Unapplied()
    touched: dict[int, tuple[Any, dict[str, Any]]] = {}
    sources_of: dict[int, set[str]] = {}
    if entity_id is not None:
        # A match whose every value differed applied nothing, but opened conflicts.
        row = conn.execute(
            select(enrichments.c.provider, enrichments.c.kind, enrichments.c.provider_id).where(
                enrichments.c.entity_id == entity_id, enrichments.c.state == "matched"
            )
        ).first()
        if row is not None and row.provider_id is not None:
            ent = conn.execute(
                select(entities.c.type, entities.c.key, entities.c.name, entities.c.attributes).where(
                    entities.c.id == entity_id
                )
            ).one()
            touched[entity_id] = (ent, json.loads(ent.attributes))
            sources_of[entity_id] = {match_source(row.provider, row.kind, row.provider_id)}
    for row in rows:
        if row.entity_id not in touched:
            ent = conn.execute(
                select(entities.c.type, entities.c.key, entities.c.name, entities.c.attributes).where(
                    entities.c.id == row.entity_id
                )
            ).one()
            touched[row.entity_id] = (ent, json.loads(ent.attributes))
        ent, attrs = touched[row.entity_id]
        sources_of.setdefault(row.entity_id, set()).add(match_source(row.provider, "movie", row.provider_id))
        sources_of[row.entity_id].add(match_source(row.provider, "tv", row.provider_id))
        after = json.loads(row.after)
        if attrs.get(row.attribute) != after:
            out.restored.append(
                Restored(ent.name, row.attribute, attrs.get(row.attribute), False, "its value changed since")
            )
            continue
        before = json.loads(row.before) if row.before is not None else None
        if row.before is None:
            attrs.pop(row.attribute, None)
        else:
            attrs[row.attribute] = before
        where = (attribute_sources.c.entity_id == row.entity_id) & (
            attribute_sources.c.attribute == row.attribute
        )
        if row.before_source is None:
            conn.execute(delete(attribute_sources).where(where))
        else:
            src = json.loads(row.before_source)
            conn.execute(
                _source_upsert(conn),
                [{"entity_id": row.entity_id, "attribute": row.attribute, **src}],
            )
        conn.execute(update(enrich_applied).where(enrich_applied.c.id == row.id).values(undone=now))
        ref = EntityRef(ent.type, ent.key, ent.name)
        out.events.append(AttributeSet(ref, row.attribute, before))
        out.restored.append(Restored(ent.name, row.attribute, before, True))
        _log(
            conn,
            row.entity_id,
            ent.name,
            f"{row.attribute} back to {_shown(before)} (was {_shown(after)} from "
            f"{row.provider} {row.provider_id})",
            now,
        )
    for eid, (ent, attrs) in touched.items():
        conn.execute(
            update(entities).where(entities.c.id == eid).values(attributes=dumps(attrs), updated=now)
        )
        withdrawn = conn.execute(
            update(conflicts)
            .where(
                conflicts.c.entity_id == eid,
                conflicts.c.status == "open",
                conflicts.c.source.in_(sorted(sources_of[eid])),
            )
            .values(status="kept", resolved=now)
        )
        out.conflicts_withdrawn += withdrawn.rowcount or 0
        kind = kinds.get(ent.type)
        if kind is not None:
            conn.execute(
                update(enrichments)
                .where(enrichments.c.entity_id == eid)
                .values(
                    state="unapplied",
                    fingerprint=fingerprint(query_of(kind, ent.name, attrs, ID_ATTRIBUTE)),
                    at=now,
                )
            )
    return out


def _shown(value: Any) -> str:
    return "no value" if value is None else json.dumps(value, ensure_ascii=False)[:200]


def _log(conn: Connection, entity_id: int, name: str, detail: str, now: float) -> None:
    conn.execute(
        run_log.insert().values(
            run_id=None,
            entity_id=entity_id,
            entity=name,
            action="unapplied",
            detail=safe_text(detail)[:2000] + " (importctl unapply)",
            at=now,
        )
    )


__all__ = [
    "ID_ATTRIBUTE",
    "EntityToAsk",
    "PendingRow",
    "Restored",
    "Settled",
    "Settlement",
    "Unapplied",
    "entities_to_ask",
    "match_source",
    "pending_rows",
    "settle",
    "state_of",
    "unapply",
]
